"""The inbox queries: a user's in-app notifications, read from PostgreSQL.

The inbox is the user's ``notifications`` rows that have an ``inapp``
delivery row (suppressed and still-held ones excluded). "Read" means that
row is READ or has ``read_at`` set. Pages are keyset-paginated on
``(created_at DESC, id DESC)`` (index ``notifications_inbox``, migration
001) with an opaque cursor; ``q`` is a full-text search over title and body
(GIN index ``notifications_search``, migration 003).

One function per query, each taking an asyncpg connection or pool. The
views never write here: marking read goes through ``delivery-events``.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from app.errors import InvalidEvent
from schemas.parsing import check_text

if TYPE_CHECKING:
    import asyncpg

MAX_LIMIT = 200
#: read-all marks at most this many per call; the caller calls again for more.
READ_ALL_BATCH = 1000

#: Must be the expression of the GIN index in 003_inbox.sql, or the index is not used.
SEARCH_VECTOR = "to_tsvector('simple', coalesce(n.title, '') || ' ' || coalesce(n.body, ''))"
UNREAD = "d.status <> 'READ' AND d.read_at IS NULL"

_FROM = """
FROM notifications n
JOIN deliveries d ON d.notification_id = n.id AND d.channel = 'inapp'
WHERE n.user_id = $1 AND d.status NOT IN ('SUPPRESSED', 'SCHEDULED')
"""


@dataclass(frozen=True)
class Page:
    """One page of a user's inbox, newest first, and the cursor of the next page."""

    items: list[dict[str, Any]]
    next_cursor: str | None


def encode_cursor(created_at: datetime, notification_id: str) -> str:
    """The opaque cursor after the row (``created_at``, ``notification_id``)."""
    raw = json.dumps([created_at.isoformat(), notification_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (created_at, id) a cursor stands for; ``ValueError`` if it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, notification_id = json.loads(raw)
        parsed = datetime.fromisoformat(created_at)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise ValueError("cursor: not a cursor this API returned") from exc
    if parsed.tzinfo is None or not isinstance(notification_id, str):
        raise ValueError("cursor: not a cursor this API returned")
    try:
        # Forged cursors reach PostgreSQL as parameters: text it can hold only.
        check_text("cursor", notification_id, identifier=True)
    except InvalidEvent as exc:
        raise ValueError("cursor: not a cursor this API returned") from exc
    return parsed, notification_id


def _item(row: Any) -> dict[str, Any]:
    read_at = row["read_at"]
    return {
        "id": row["id"], "category": row["category"], "priority": row["priority"],
        "title": row["title"], "body": row["body"], "data": json.loads(row["data"]),
        "created_at": row["created_at"].isoformat(), "status": row["status"],
        "read": row["status"] == "READ" or read_at is not None,
        "read_at": read_at.isoformat() if read_at else None,
    }


async def list_inbox(db: "asyncpg.Pool", user_id: str, *, unread_only: bool = False,
                     limit: int = 50, cursor: str | None = None,
                     query: str | None = None) -> Page:
    """A page of ``user_id``'s inbox, newest first, after ``cursor``, matching ``query``."""
    conditions: list[str] = []
    args: list[Any] = [user_id]
    if unread_only:
        conditions.append(UNREAD)
    if cursor:
        created_at, last_id = decode_cursor(cursor)
        args += [created_at, last_id]
        conditions.append(f"(n.created_at, n.id) < (${len(args) - 1}, ${len(args)})")
    if query:
        args.append(query)
        conditions.append(f"{SEARCH_VECTOR} @@ plainto_tsquery('simple', ${len(args)})")
    # One row more than asked says whether there is a next page.
    args.append(limit + 1)
    sql = (
        "SELECT n.id, n.category, n.priority, n.title, n.body, n.data::text AS data,"
        " n.created_at, d.status, d.read_at" + _FROM
        + "".join(f" AND {condition}" for condition in conditions)
        + f" ORDER BY n.created_at DESC, n.id DESC LIMIT ${len(args)}"
    )
    rows = await db.fetch(sql, *args)
    more, rows = len(rows) > limit, rows[:limit]
    last = rows[-1] if rows else None
    next_cursor = encode_cursor(last["created_at"], last["id"]) if more and last else None
    return Page([_item(row) for row in rows], next_cursor)


async def unread_count(db: "asyncpg.Pool", user_id: str) -> int:
    """How many of ``user_id``'s inbox notifications are unread."""
    return int(await db.fetchval(f"SELECT count(*) {_FROM} AND {UNREAD}", user_id))


async def in_inbox(db: "asyncpg.Pool", user_id: str, notification_id: str) -> bool:
    """Whether ``notification_id`` is in ``user_id``'s inbox (so they may mark it read)."""
    return bool(await db.fetchval(f"SELECT true {_FROM} AND n.id = $2", user_id,
                                  notification_id))


async def unread_ids(db: "asyncpg.Pool", user_id: str, limit: int = READ_ALL_BATCH) -> list[str]:
    """The ids of ``user_id``'s unread inbox notifications, oldest first, at most ``limit``."""
    rows = await db.fetch(
        f"SELECT n.id {_FROM} AND {UNREAD} ORDER BY n.created_at, n.id LIMIT $2", user_id, limit)
    return [row["id"] for row in rows]


async def position(db: "asyncpg.Pool", user_id: str, notification_id: str) -> datetime | None:
    """When ``notification_id`` of ``user_id``'s inbox was created (a resume point), if it is there."""
    value = await db.fetchval(f"SELECT n.created_at {_FROM} AND n.id = $2", user_id,
                              notification_id)
    return value if isinstance(value, datetime) else None


async def after(db: "asyncpg.Pool", user_id: str, created_at: datetime, notification_id: str,
                limit: int = MAX_LIMIT) -> list[dict[str, Any]]:
    """The inbox items after (``created_at``, ``notification_id``), oldest first: what a
    reconnecting client missed."""
    rows = await db.fetch(
        "SELECT n.id, n.category, n.priority, n.title, n.body, n.data::text AS data,"
        " n.created_at, d.status, d.read_at" + _FROM
        + " AND (n.created_at, n.id) > ($2, $3) ORDER BY n.created_at, n.id LIMIT $4",
        user_id, created_at, notification_id, limit)
    return [_item(row) for row in rows]
