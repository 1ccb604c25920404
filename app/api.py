"""The REST API on the worker's web server: ingest, inbox, preferences, contacts.

Routes come from :data:`app.openapi.ROUTES` (served as OpenAPI 3.1 at
``/v1/openapi.json``); who may call what is decided in :mod:`app.auth`.
The views only move data: a notification or a user update is produced to
its topic as the public JSON, marking read emits READ ``delivery-events``
for the recorder (which never moves a status backwards), and the inbox is
read from PostgreSQL (:mod:`app.inbox`). Every 4xx body is
``{"error": "..."}``.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Awaitable, Callable

import asyncpg
from aiohttp import web
from faust.web import Request, Response, View
from faust.web.exceptions import ServiceUnavailable

from agents.emitters import emit_status
from app import inbox
from app.auth import AuthError, Principal, authorize
from app.context import Herald
from app.errors import InvalidEvent
from app.openapi import ROUTES, build_document
from rules.ingest import IngestLimiter, retry_after_header
from schemas.parsing import (
    check_id,
    check_text,
    decode_object,
    parse_notification,
    parse_user_update,
)

logger = logging.getLogger("herald.api")

#: The user-updates fields each PUT accepts; the other kind is refused, so a
#: client cannot replace contacts through the preferences endpoint by mistake.
PREFERENCE_FIELDS = ("preferences", "timezone", "locale", "topics")
CONTACT_FIELDS = ("email", "phone", "push_tokens", "remove_push_tokens")


class TooLarge(Exception):
    """The request body is over the configured limit."""


def with_id(raw: bytes, notification_id: str) -> bytes:
    """``raw`` (a valid notification) with ``id`` filled in when the sender gave none.

    The sender's bytes are kept as they are where possible (unknown fields,
    formatting), so what lands on the topic is what any Kafka client would
    have produced.
    """
    obj = json.loads(raw)
    if obj.get("id"):
        return raw
    try:
        text = raw.decode("utf-8").lstrip()
    except UnicodeDecodeError:
        text = ""
    if "id" not in obj and text.startswith("{"):
        return ('{"id": ' + json.dumps(notification_id) + ", " + text[1:]).encode()
    return json.dumps({**obj, "id": notification_id}).encode()


def user_update(raw: bytes, user_id: str, accepted: tuple[str, ...],
                elsewhere: str) -> bytes:
    """The ``user-updates`` record of a PUT body for ``user_id``; InvalidEvent says why not."""
    obj = decode_object(raw)
    if obj.get("user_id") not in (None, user_id):
        raise InvalidEvent(f"user_id: {obj['user_id']!r} does not match the path ({user_id!r})")
    refused = [name for name in (*PREFERENCE_FIELDS, *CONTACT_FIELDS)
               if name in obj and name not in accepted]
    if refused:
        raise InvalidEvent(f"{refused[0]}: not accepted here; use PUT {elsewhere}")
    if not any(name in obj for name in accepted):
        raise InvalidEvent(f"body: expected at least one of {', '.join(accepted)}")
    record = {**obj, "user_id": user_id}
    encoded = json.dumps(record).encode()
    parse_user_update(encoded)  # raises InvalidEvent naming the field
    return encoded


#: Longest full-text query accepted (``q=``).
MAX_QUERY_LENGTH = 500


def path_params(params: dict[str, str]) -> dict[str, str]:
    """``params`` (user and notification ids from the path) if they can be ids; else InvalidEvent.

    Checked before any query: PostgreSQL refuses a NUL in text, and that
    must be a 400 naming the parameter, not a failed query.
    """
    for name, value in params.items():
        check_id(name, value)
    return params


def inbox_query(query: Any) -> dict[str, Any]:
    """The list_inbox arguments from the query string; InvalidEvent naming the parameter."""
    status = query.get("status", "all")
    if status not in ("unread", "all"):
        raise InvalidEvent(f"status: must be unread or all (got {status!r})")
    raw_limit = query.get("limit", "50")
    try:
        limit = int(raw_limit)
    except ValueError:
        limit = 0
    if not 1 <= limit <= inbox.MAX_LIMIT:
        raise InvalidEvent(f"limit: must be an integer from 1 to {inbox.MAX_LIMIT} "
                           f"(got {raw_limit!r})")
    cursor = query.get("cursor") or None
    if cursor:
        try:
            inbox.decode_cursor(cursor)
        except ValueError as exc:
            raise InvalidEvent(str(exc)) from exc
    q = (query.get("q") or "").strip() or None
    if q is not None:
        if len(q) > MAX_QUERY_LENGTH:
            raise InvalidEvent(f"q: longer than {MAX_QUERY_LENGTH} characters")
        check_text("q", q, identifier=False)
    return {"unread_only": status == "unread", "limit": limit, "cursor": cursor, "query": q}


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or :class:`TooLarge` as soon as it passes ``limit`` bytes."""
    declared = request.content_length  # type: ignore[attr-defined]
    if declared is not None and declared > limit:
        raise TooLarge()
    chunks, size = [], 0
    # Chunked bodies have no Content-Length: count as they arrive.
    async for chunk in request.content.iter_chunked(16384):  # type: ignore[attr-defined]
        size += len(chunk)
        if size > limit:
            raise TooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer ``/v1/`` errors raised outside the views as ``{"error": "..."}``, too.

    aiohttp answers an unknown path, a method a view lacks or a body over
    its own limit in plain text, and an exception that escapes a view as a
    bare 500 with its traceback in the log only; every API answer is JSON.
    """
    if not request.path.startswith("/v1/"):
        return await handler(request)
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {name: value for name, value in exc.headers.items()
                   if name.lower() in ("allow", "retry-after")}
        return web.json_response({"error": f"{request.method} {request.path}: {exc.reason}"},
                                 status=exc.status, headers=headers)
    except Exception:  # noqa: BLE001 - answer JSON; the traceback goes to the log
        logger.exception("%s %s failed", request.method, request.path)
        return web.json_response({"error": "internal error"}, status=500)


def register(herald: Herald) -> None:
    """Declare the REST views on the app."""
    app, settings = herald.app, herald.settings
    config = settings.auth
    limit = settings.max_body_bytes
    limiter = IngestLimiter(settings.ingest_rates) if settings.ingest_rates else None
    document = build_document()
    app.web.web_app.middlewares.append(json_errors)

    def path(name: str) -> str:
        return ROUTES[name][0]

    def error(view: View, status: int, message: str, **headers: str) -> Response:
        return view.json({"error": message}, status=status, headers=headers)

    def allowed(view: View, request: Request, **need: str) -> Principal | Response:
        """The caller, or the 4xx answer when the request may not proceed."""
        try:
            principal = authorize(config, request.headers, **need)
            path_params(dict(request.match_info))  # type: ignore[attr-defined]
        except AuthError as exc:
            return error(view, exc.status, exc.message)
        except InvalidEvent as exc:
            return error(view, 400, str(exc))
        return principal

    def denied(view: View, request: Request, **need: str) -> Response | None:
        answer = allowed(view, request, **need)
        return None if isinstance(answer, Principal) else answer

    def throttled(view: View, principal: Principal) -> Response | None:
        wait = limiter.admit(principal.name, time.monotonic()) if limiter else 0.0
        if not wait:
            return None
        return error(view, 429, f"API key {principal.name!r} is over its ingest rate "
                                f"(HERALD_INGEST_RATE); retry in {wait:.1f}s",
                     **{"Retry-After": retry_after_header(wait)})

    too_large = f"body larger than {limit} bytes (HERALD_MAX_BODY_BYTES)"

    async def from_store(run: Any, /, *args: Any, **kwargs: Any) -> Any:
        try:
            # The store's pool (connected, schema migrated), shared with the recorder.
            pool = await herald.store.pool()
            return await run(pool, *args, **kwargs)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            logger.warning("inbox query failed: %r", exc)
            # Faust answers a WebError as {"error": detail} with its status.
            raise ServiceUnavailable(f"inbox store unavailable: {exc}") from exc

    @app.page(path("ingest"))
    class IngestNotification(View):
        """Accept a notification in the public JSON and produce it to ``notifications``."""

        async def post(self, request: Request) -> Response:
            principal = allowed(self, request, scope="ingest")
            if not isinstance(principal, Principal):
                return principal
            if (refusal := throttled(self, principal)) is not None:
                return refusal
            try:
                raw = await read_body(request, limit)
                notification = parse_notification(raw)
            except TooLarge:
                return error(self, 413, too_large)
            except InvalidEvent as exc:
                return error(self, 400, str(exc))
            key = notification.user_id or notification.audience
            # Waiting for the broker's ack: 202 means Kafka holds it (acks=all).
            await (await herald.topics.notifications.send(
                key=key, value=with_id(raw, notification.id)))
            return self.json({"id": notification.id}, status=202)

    @app.page(path("inbox"))
    class Inbox(View):
        """A page of the user's in-app notifications, newest first."""

        async def get(self, request: Request, user_id: str) -> Response:
            if (refusal := denied(self, request, user_id=user_id)) is not None:
                return refusal
            try:
                arguments = inbox_query(request.query)
            except InvalidEvent as exc:
                return error(self, 400, str(exc))
            page = await from_store(inbox.list_inbox, user_id, **arguments)
            return self.json({"items": page.items, "next_cursor": page.next_cursor})

    @app.page(path("unread_count"))
    class UnreadCount(View):
        """How many of the user's inbox notifications are unread."""

        async def get(self, request: Request, user_id: str) -> Response:
            if (refusal := denied(self, request, user_id=user_id)) is not None:
                return refusal
            return self.json({"unread": await from_store(inbox.unread_count, user_id)})

    def mark_view(name: str, status: str, how: str) -> None:
        class Mark(View):
            """Record one notification READ or DELIVERED: an event the recorder writes."""

            async def post(self, request: Request, user_id: str, notification_id: str) -> Response:
                if (refusal := denied(self, request, user_id=user_id)) is not None:
                    return refusal
                # The events are keyed by notification id only: check it is this user's.
                if not await from_store(inbox.in_inbox, user_id, notification_id):
                    return error(self, 404, f"notification {notification_id!r} is not in the "
                                            f"inbox of user {user_id!r}")
                await emit_status(herald, notification_id, "inapp", status, user_id=user_id,
                                  reason=f"{how} through the API")
                return self.json({"id": notification_id}, status=202)

        # Faust names views by class name: each must be unique.
        Mark.__name__ = Mark.__qualname__ = f"Mark_{name}"
        app.page(path(name))(Mark)

    mark_view("mark_read", "READ", "marked read")
    # For clients that cannot ACK on a socket (SSE): the notification was shown.
    mark_view("mark_delivered", "DELIVERED", "acknowledged")

    @app.page(path("read_all"))
    class ReadAll(View):
        """Mark every unread notification read (up to a batch per call)."""

        async def post(self, request: Request, user_id: str) -> Response:
            if (refusal := denied(self, request, user_id=user_id)) is not None:
                return refusal
            ids = await from_store(inbox.unread_ids, user_id)
            for notification_id in ids:
                await emit_status(herald, notification_id, "inapp", "READ", user_id=user_id,
                                  reason="marked read through the API (read-all)")
            return self.json({"marked": len(ids)}, status=202)

    def user_update_view(name: str, accepted: tuple[str, ...], other: str) -> None:
        class PutUserUpdate(View):
            """Replace some of the user's profile: produced to ``user-updates``."""

            async def put(self, request: Request, user_id: str) -> Response:
                if (refusal := denied(self, request, user_id=user_id)) is not None:
                    return refusal
                elsewhere = path(other).replace("{user_id}", user_id)
                try:
                    raw = await read_body(request, limit)
                    record = user_update(raw, user_id, accepted, elsewhere)
                except TooLarge:
                    return error(self, 413, too_large)
                except InvalidEvent as exc:
                    return error(self, 400, str(exc))
                await (await herald.topics.user_updates.send(key=user_id, value=record))
                return self.json({"user_id": user_id}, status=202)

        # Faust names views by class name: each must be unique.
        PutUserUpdate.__name__ = PutUserUpdate.__qualname__ = f"PutUser_{name}"
        app.page(path(name))(PutUserUpdate)

    user_update_view("preferences", PREFERENCE_FIELDS, "contacts")
    user_update_view("contacts", CONTACT_FIELDS, "preferences")

    @app.page(path("openapi"))
    class OpenApi(View):
        """The OpenAPI 3.1 document of this API."""

        async def get(self, request: Request) -> Response:
            return self.json(document)
