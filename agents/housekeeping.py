"""Housekeeping: the timed work on each partition's tables (a punctuator).

The leader produces one tick per partition of ``herald.ticks`` every
``HERALD_TICK_SECONDS``; the worker owning partition p handles its tick and
only touches rows of partition p, so table writes go to the right changelog
partition and survive restarts. On each tick it releases held notifications
that are due (quiet hours, send_at, rate-limit deferrals), flushes digests
whose window ended, and purges dedup keys past their window (at most once
per ``DEDUP_PURGE_SECONDS`` per partition: the dedup table grows by a key per
notification, and scanning it every second cost 68 % of a worker's CPU in
the benchmark).
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any, Iterator

from faust.types import EventT, StreamT, TableT

from agents.emitters import handle_each
from app.context import Herald
from rules.digest import digest_id, is_due, summary
from rules.partitioning import partition_for
from schemas.parsing import now_iso
from schemas.records import Notification
from tables.dedup import is_expired
from tables.keys import owner_of


#: Expired dedup keys are purged this often per partition (the window is hours).
DEDUP_PURGE_SECONDS = 60.0


def register(herald: Herald) -> None:
    """Declare the tick timer and the housekeeping agent on the app."""
    app, settings = herald.app, herald.settings

    @app.timer(settings.tick_seconds, on_leader=True)
    async def tick() -> None:
        now = time.time()
        for partition in range(settings.partitions):
            await herald.topics.ticks.send(value=now, partition=partition)

    purged: dict[int, float] = {}

    @app.agent(herald.topics.ticks, name="housekeeping")
    async def housekeeping(stream: StreamT) -> None:
        await handle_each(herald, stream, lambda event: keep_house(herald, event, purged),
                          "housekeeping error")


@lru_cache(maxsize=1 << 16)
def _partition_of(owner: str, partitions: int) -> int:
    return partition_for(owner, partitions)


def rows_of(table: TableT, partition: int, partitions: int) -> Iterator[tuple[str, Any]]:
    """The rows of ``table`` owned by ``partition`` (snapshot: safe to delete while iterating).

    A RocksDB store keeps one database per partition, and a row lives in its
    owner's: only that one is read. Reading every partition's rows for each
    partition's tick made the dedup purge cost the whole table eight times a
    minute, and a long benchmark run slowed down as the table grew.
    """
    store = getattr(table, "data", None)
    if hasattr(store, "_db_for_partition"):
        raw = list(store._visible_items(store._db_for_partition(partition)))  # noqa: SLF001
        rows = [(store._decode_key(k), store._decode_value(v)) for k, v in raw]  # noqa: SLF001
    else:
        rows = list(table.items())
    for key, value in rows:
        if _partition_of(owner_of(key), partitions) == partition:
            yield key, value


async def keep_house(herald: Herald, event: EventT, purged: dict[int, float]) -> None:
    """Release, flush and purge what is due on the tick's partition.

    ``purged`` remembers when each partition's dedup keys were last purged.
    """
    partition, partitions = event.message.partition, herald.settings.partitions
    now = time.time()
    tables, lanes = herald.tables, herald.topics.lanes
    for key, held in rows_of(tables.scheduled, partition, partitions):
        if held["due"] <= now:
            notification = Notification(**held["notification"])
            await lanes[notification.lane].send(key=notification.user_id, value=notification)
            del tables.scheduled[key]
    for key, batch in rows_of(tables.digests, partition, partitions):
        if is_due(batch, now):
            await lanes["bulk"].send(key=owner_of(key), value=digest_notification(key, batch))
            del tables.digests[key]
    if not purge_due(purged, partition, now):
        return
    for key, claimed in rows_of(tables.dedup, partition, partitions):
        if is_expired(claimed, now):
            del tables.dedup[key]


def purge_due(purged: dict[int, float], partition: int, now: float) -> bool:
    """Whether ``partition``'s dedup keys are due a purge (and note that it is done now)."""
    if now - purged.get(partition, float("-inf")) < DEDUP_PURGE_SECONDS:
        return False
    purged[partition] = now
    return True


def digest_notification(key: str, batch: dict[str, Any]) -> Notification:
    """The one notification that summarises a user's batched category."""
    user_id, category = key.split("\x1f", 1)
    return Notification(
        id=digest_id(user_id, category, batch["window_end"]), user_id=user_id,
        category=category, priority="low", created_at=now_iso(), template="digest",
        data=summary(batch), released=True, digest=True)
