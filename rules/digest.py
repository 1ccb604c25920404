"""Digests: low-priority notifications of some categories, batched per user.

Each (user, category) has at most one open window, a plain JSON table value::

    {"window_end": 1700003600.0, "dropped": 0,
     "items": [{"id": ..., "title": ..., "body": ..., "created_at": ..., "data": {...}}]}

The window opens with its first item and closes ``window`` seconds later;
then one summary notification goes out in place of all the items. A window
keeps its newest ``max_items`` items and counts the older ones it let go in
``dropped``, so the table value stays small and the summary can still say
"and 12 more". The caller flushes a due window before adding to it; an item
added to a window that is already due joins it rather than being lost.

Categories and their windows come from a setting such as
``"marketing=3600,news=86400"`` (:func:`parse_digest_categories`).
"""

from __future__ import annotations

import copy
import math
import re
import uuid
from typing import Any, Mapping

#: Only this priority is ever batched; anything more urgent goes alone.
DIGEST_PRIORITY = "low"

#: Fixed forever: digest ids derive from it, and a replay must find the same ids.
DIGEST_NAMESPACE = uuid.UUID("0b6f4a1e-5d0c-4f3e-9a7b-2c8d1e6f9a30")

ITEM_FIELDS = ("id", "title", "body", "created_at", "data")

_NAME = re.compile(r"^[\w.-]+$")


def parse_digest_categories(spec: str) -> dict[str, float]:
    """Parse ``"category=seconds,..."`` into category → window seconds.

    Blank entries are ignored; errors name the entry at fault.
    """
    categories: dict[str, float] = {}
    for entry in (part.strip() for part in spec.split(",")):
        if not entry:
            continue
        name, equals, seconds = (part.strip() for part in entry.partition("="))
        if not equals:
            raise ValueError(f"digest category {entry!r}: expected CATEGORY=SECONDS")
        if not _NAME.match(name):
            raise ValueError(f"digest category {entry!r}: {name!r} is not a category name")
        if name in categories:
            raise ValueError(f"digest category {entry!r}: {name} is set twice")
        try:
            window = float(seconds)
        except ValueError:
            window = math.nan
        if not (math.isfinite(window) and window > 0):
            raise ValueError(f"digest category {entry!r}: {seconds!r} is not a positive "
                             "number of seconds")
        categories[name] = window
    return categories


def is_digested(category: str, priority: str, digest_categories: Mapping[str, float]) -> bool:
    """Whether a notification waits for its category's digest instead of going alone."""
    return priority == DIGEST_PRIORITY and category in digest_categories


def add_item(state: Mapping[str, Any] | None, item: Mapping[str, Any], now: float,
             window: float, max_items: int = 50) -> dict[str, Any]:
    """The window with ``item`` added; a new window, ending ``window`` seconds on, if none.

    Adding an item already in the window changes nothing: Kafka redelivers
    records after a crash, and a redelivery must not be listed twice. (An
    item already let go into ``dropped`` cannot be recognised, so there a
    redelivery is counted again.)
    """
    if not (math.isfinite(window) and window > 0):
        raise ValueError(f"window must be a positive number of seconds ({window!r})")
    if max_items < 1:
        raise ValueError(f"max_items must be at least 1 ({max_items!r})")
    if state is None:
        state = {"window_end": now + window, "items": [], "dropped": 0}
    added = _item(item)
    # Copied, not appended in place: the old value may be the table's cached object.
    items = copy.deepcopy(list(state["items"]))
    dropped = int(state.get("dropped", 0))
    if all(kept["id"] != added["id"] for kept in items):
        items.append(added)
    overflow = max(0, len(items) - max_items)
    return {"window_end": float(state["window_end"]), "items": items[overflow:],
            "dropped": dropped + overflow}


def due_at(state: Mapping[str, Any]) -> float:
    """When the window closes and its summary should go out."""
    return float(state["window_end"])


def is_due(state: Mapping[str, Any], now: float) -> bool:
    """Whether the window has closed and its summary should go out."""
    return now >= due_at(state)


def summary(state: Mapping[str, Any]) -> dict[str, Any]:
    """The data of the digest template: every item counted, the kept ones listed.

    ``count`` includes the items let go; ``dropped`` is how many are not listed.
    """
    items = copy.deepcopy(list(state["items"]))
    dropped = int(state.get("dropped", 0))
    return {"count": len(items) + dropped, "items": items, "dropped": dropped}


def digest_id(user_id: str, category: str, window_end: float) -> str:
    """The notification id of one digest, the same every time it is computed.

    Derived rather than random so that a digest re-sent after a crash is
    recognised downstream as the same notification.
    """
    # float(): a window end read back as 1700003600 and as 1700003600.0 is one window.
    name = "\x1f".join((user_id, category, repr(float(window_end))))
    return str(uuid.uuid5(DIGEST_NAMESPACE, name))


def _item(item: Mapping[str, Any]) -> dict[str, Any]:
    # Only what a digest shows is kept: the table value stays small.
    if not item.get("id"):
        raise ValueError("a digest item needs an id")
    kept = {field: item.get(field) for field in ITEM_FIELDS}
    kept["data"] = copy.deepcopy(dict(item.get("data") or {}))
    return kept
