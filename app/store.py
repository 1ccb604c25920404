"""herald's PostgreSQL store: migrations and the recorder's batched writes."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from importlib import resources
from typing import Any, Iterable, Sequence

import asyncpg

from rules.statuses import DeliveryRow

logger = logging.getLogger("herald.store")

#: Any number: every herald process takes the same lock while migrating.
MIGRATION_LOCK = 0x6865726C


def migrations() -> list[tuple[int, str, str]]:
    """The packaged migrations as (version, name, sql), in order."""
    found = []
    for entry in resources.files("app.migrations").iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply the migrations not yet applied; safe to run twice or concurrently."""
    applied_now = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version int PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, name, sql in migrations():
            if version in done:
                continue
            await conn.execute(sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
            )
            applied_now.append(name)
    return applied_now


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


# One statement, so one round trip per batch: the notification rows, the
# audit trail and the deliveries are written together or not at all.
RECORD_BATCH = """
WITH new_notifications AS (
    INSERT INTO notifications (id, user_id, category, priority, title, body, data, created_at)
    SELECT id, user_id, category, priority, title, body, data::jsonb, created_at
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                $7::text[], $8::timestamptz[])
        AS n(id, user_id, category, priority, title, body, data, created_at)
    ON CONFLICT (id) DO NOTHING
), audit AS (
    INSERT INTO delivery_events
        (notification_id, channel, status, attempts, at, reason, error, provider_message_id)
    SELECT * FROM unnest($9::text[], $10::text[], $11::text[], $12::int[], $13::timestamptz[],
                         $14::text[], $15::text[], $16::text[])
    ON CONFLICT (notification_id, channel, status, attempts) DO NOTHING
)
INSERT INTO deliveries AS d
    (notification_id, channel, status, attempts, updated_at, reason, last_error,
     provider_message_id, queued_at, sent_at, delivered_at, read_at)
SELECT * FROM unnest($17::text[], $18::text[], $19::text[], $20::int[], $21::timestamptz[],
                     $22::text[], $23::text[], $24::text[], $25::timestamptz[],
                     $26::timestamptz[], $27::timestamptz[], $28::timestamptz[])
ON CONFLICT (notification_id, channel) DO UPDATE SET
    queued_at = coalesce(d.queued_at, excluded.queued_at),
    sent_at = coalesce(d.sent_at, excluded.sent_at),
    delivered_at = coalesce(d.delivered_at, excluded.delivered_at),
    read_at = coalesce(d.read_at, excluded.read_at),
    status = CASE WHEN NOT (excluded.attempts > 0 AND excluded.attempts < d.attempts) AND (
                       herald_status_rank(excluded.status) > herald_status_rank(d.status)
                    OR (excluded.status = d.status AND excluded.attempts > d.attempts)
                    OR (d.status IN ('DEAD', 'FAILED') AND excluded.attempts > d.attempts))
                  THEN excluded.status ELSE d.status END,
    attempts = greatest(d.attempts, excluded.attempts),
    reason = coalesce(excluded.reason, d.reason),
    last_error = coalesce(excluded.last_error, d.last_error),
    provider_message_id = coalesce(d.provider_message_id, excluded.provider_message_id),
    updated_at = greatest(d.updated_at, excluded.updated_at)
"""


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    return [list(column) for column in zip(*rows)] if rows else [[] for _ in range(width)]


def batch_arguments(events: Sequence[Any], rows: Iterable[DeliveryRow]) -> list[list[Any]]:
    """The 28 array arguments of :data:`RECORD_BATCH` for a batch of events."""
    notifications = {}
    for event in events:
        note = event.notification
        if note and note["id"] not in notifications:
            notifications[note["id"]] = (
                note["id"], note["user_id"], note["category"], note["priority"],
                note.get("title"), note.get("body"), json.dumps(note.get("data") or {}),
                _time(note["created_at"]),
            )
    audit = [
        (e.notification_id, e.channel, e.status, e.attempts, _time(e.at), e.reason, e.error,
         e.provider_message_id)
        for e in events
    ]
    # Attribute by attribute: dataclasses.astuple deep-copies every field (2.8 % of the
    # worker's CPU in the issue 7 profile).
    deliveries = [
        (row.notification_id, row.channel, row.status, row.attempts, _time(row.at), row.reason,
         row.last_error, row.provider_message_id, _time(row.queued_at), _time(row.sent_at),
         _time(row.delivered_at), _time(row.read_at))
        for row in rows
    ]
    return (
        _columns(list(notifications.values()), 8) + _columns(audit, 8) + _columns(deliveries, 12)
    )


class Store:
    """The asyncpg pool and the statements herald runs on it."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._pool: asyncpg.Pool | None = None
        self._migrated = False

    async def _ready_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                self.database_url, min_size=0, max_size=4, command_timeout=30
            )
        if not self._migrated:
            async with self._pool.acquire() as conn:
                applied = await migrate(conn)
            if applied:
                logger.info("applied migrations: %s", ", ".join(applied))
            self._migrated = True
        return self._pool

    async def pool(self) -> asyncpg.Pool:
        """The connection pool, connected and migrated, for read queries (the inbox)."""
        return await self._ready_pool()

    async def start(self) -> None:
        """Connect and bring the schema up to date."""
        await self._ready_pool()

    async def record(self, events: Sequence[Any], rows: Iterable[DeliveryRow]) -> None:
        """Write a batch of status events and their folded rows in one round trip."""
        pool = await self._ready_pool()
        async with pool.acquire() as conn:
            await conn.execute(RECORD_BATCH, *batch_arguments(events, rows))

    async def aclose(self) -> None:
        """Close the pool."""
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


async def migrate_url(database_url: str) -> list[str]:
    """Connect to ``database_url`` and apply pending migrations."""
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        return await migrate(conn)
    finally:
        await conn.close()
