"""Reading one key of a worker's table from outside, through its web server.

Any worker answers ``GET /v1/tables/{table}/{key}``: Faust's table routing
forwards the request to the worker owning the key's partition. The outcome
is reduced to one of three answers (the value, no such key, no answer), so
the command prints a value or a one-line reason.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


class LookupFailed(RuntimeError):
    """The table could not be read; the message says why in one line."""


class KeyAbsent(LookupFailed):
    """The worker answered: the key is not in the table (or there is no such table)."""


def table_key_url(base_url: str, table: str, key: str) -> str:
    """The lookup URL; the key fully percent-encoded (composite keys hold ``\\x1f``, ``/``)."""
    return (f"{base_url.rstrip('/')}/v1/tables/{urllib.parse.quote(table, safe='')}/"
            f"{urllib.parse.quote(key, safe='')}")


def read_answer(status: int, body: bytes, *, table: str, key: str, url: str) -> Any:
    """The value from a worker's answer, or :class:`LookupFailed` saying what went wrong."""
    try:
        document = json.loads(body) if body else None
    except ValueError:
        document = None
    if status == 200 and isinstance(document, dict) and "value" in document:
        return document["value"]
    if status == 404:
        if isinstance(document, dict) and "error" in document:
            raise KeyAbsent(f"no key {key!r} in table {table!r}")
        raise KeyAbsent(f"no table {table!r} at {url}")
    text = body.decode("utf-8", "replace").strip().splitlines()
    raise LookupFailed(f"the worker at {url} answered {status}: {text[0][:200] if text else ''}")


def get_table_key(base_url: str, table: str, key: str, *, timeout: float = 10.0,
                  api_key: str | None = None) -> Any:
    """The value of ``key`` in ``table``, asked of the worker at ``base_url``."""
    url = table_key_url(base_url, table, key)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=timeout) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise LookupFailed(f"no worker answers at {base_url}: {reason}") from exc
    return read_answer(status, body, table=table, key=key, url=base_url)
