"""Housekeeping: the timed work on each partition's tables (a punctuator).

The leader produces one tick per partition of ``herald.ticks`` every
``HERALD_TICK_SECONDS``; the worker owning partition p handles its tick and
only touches rows of partition p, so table writes go to the right changelog
partition and survive restarts. On each tick it releases held notifications
that are due (quiet hours, send_at, rate-limit deferrals), flushes digests
whose window ended (both found through a :class:`~tables.due.DueIndex`, not
by reading the tables), and purges rows that have served their time: dedup keys
past their window, ``sends`` rows past ``HERALD_SENDS_RETENTION_SECONDS``.

Both of those tables grow by a row per notification, so they are swept, not
scanned: each tick reads at most :data:`SWEEP_ROWS` rows of a table's
partition from where the last one stopped, and a finished sweep starts again
only after its period. Scanning the dedup table every second once cost 68 %
of a worker's CPU in the benchmark; reading a whole partition at once blocks
the event loop for as long as the partition is large.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from itertools import islice
from typing import Any, Awaitable, Callable, Iterator

from faust.types import EventT, StreamT, TableT

from agents.emitters import handle_each
from app.context import Herald
from rules.digest import digest_id, due_at, summary
from rules.partitioning import partition_for
from schemas.parsing import now_iso
from schemas.records import Notification
from tables.dedup import is_expired
from tables.due import DueIndex
from tables.keys import owner_of
from tables.sends import is_settled

#: A sweep reads at most this many rows of one table's partition per tick.
SWEEP_ROWS = 1000
#: A finished sweep of the dedup table's partition starts again after this (the window is hours).
DEDUP_SWEEP_SECONDS = 60.0
#: The same for the ``sends`` table (its retention is days).
SENDS_SWEEP_SECONDS = 600.0


@dataclass
class Sweep:
    """Where the sweep of one table's partition stands."""

    #: Where the next chunk starts (a store key); ``None``: the sweep is finished.
    cursor: Any = None
    #: When the current (or last) sweep started.
    started: float = float("-inf")


def register(herald: Herald) -> None:
    """Declare the tick timer and the housekeeping agent on the app."""
    app, settings = herald.app, herald.settings

    @app.timer(settings.tick_seconds, on_leader=True)
    async def tick() -> None:
        now = time.time()
        for partition in range(settings.partitions):
            await herald.topics.ticks.send(value=now, partition=partition)

    sweeps: dict[tuple[str, int], Sweep] = defaultdict(Sweep)

    @app.agent(herald.topics.ticks, name="housekeeping")
    async def housekeeping(stream: StreamT) -> None:
        await handle_each(herald, stream, lambda event: keep_house(herald, event, sweeps),
                          "housekeeping error")


@lru_cache(maxsize=1 << 16)
def _partition_of(owner: str, partitions: int) -> int:
    return partition_for(owner, partitions)


def _rows_from(table: TableT, partition: int, partitions: int,
               cursor: Any = None) -> Iterator[tuple[Any, str, Any]]:
    """``(position, key, value)`` of the rows ``partition`` owns, in key order from ``cursor``.

    A RocksDB store keeps one database per partition, and a row lives in its
    owner's: only that one is read, from the cursor on (a position is the
    stored key). Reading every partition's rows for each partition's tick
    made the dedup purge cost the whole table eight times a minute. Another
    store (memory, in tests) is sorted, and its positions are its keys.
    """
    store = getattr(table, "data", None)
    if hasattr(store, "_db_for_partition"):
        db = store._db_for_partition(partition)  # noqa: SLF001
        rows = ((raw, store._decode_key(raw), value)  # noqa: SLF001
                for raw, value in db.items(from_key=cursor) if raw != store.offset_key)
        decode = store._decode_value  # noqa: SLF001
    else:
        rows = ((key, key, key) for key in sorted(table.keys()) if cursor is None or key >= cursor)
        decode = table.__getitem__
    return ((position, key, decode(value)) for position, key, value in rows
            if _partition_of(owner_of(key), partitions) == partition)


def rows_of(table: TableT, partition: int, partitions: int) -> Iterator[tuple[str, Any]]:
    """The rows of ``table`` owned by ``partition`` (snapshot: safe to delete while iterating)."""
    return iter([(key, value) for _, key, value in _rows_from(table, partition, partitions)])


def chunk_of(table: TableT, partition: int, partitions: int, cursor: Any,
             limit: int) -> tuple[list[tuple[str, Any]], Any]:
    """Up to ``limit`` rows of ``partition`` from ``cursor`` on, and where the next chunk starts.

    The next start is ``None`` once the partition's last row was read.
    """
    rows = list(islice(_rows_from(table, partition, partitions, cursor), limit + 1))
    following = rows[limit][0] if len(rows) > limit else None
    return [(key, value) for _, key, value in rows[:limit]], following


def sweep(table: TableT, partition: int, partitions: int, state: Sweep, now: float,
          period: float, done: Callable[[Any], bool]) -> None:
    """Delete the rows of the next chunk of ``partition`` that are ``done``.

    A finished sweep starts again once ``period`` has passed since it started.
    """
    if state.cursor is None:
        if now - state.started < period:
            return
        state.started = now
    rows, state.cursor = chunk_of(table, partition, partitions, state.cursor, SWEEP_ROWS)
    for key, value in rows:
        if done(value):
            del table[key]


async def keep_house(herald: Herald, event: EventT, sweeps: dict[tuple[str, int], Sweep]) -> None:
    """Release, flush and purge what is due on the tick's partition.

    ``sweeps`` remembers where the purge of each table's partition stands.
    """
    partition, partitions = event.message.partition, herald.settings.partitions
    now = time.time()
    tables, lanes = herald.tables, herald.topics.lanes
    generation = herald.app.consumer_generation_id

    async def release(key: str, held: dict[str, Any]) -> None:
        notification = Notification(**held["notification"])
        await lanes[notification.lane].send(key=notification.user_id, value=notification)

    async def flush(key: str, batch: dict[str, Any]) -> None:
        await lanes["bulk"].send(key=owner_of(key), value=digest_notification(key, batch))

    await release_due(tables.scheduled, herald.scheduled_due, partition, partitions, generation,
                      now, lambda held: held["due"], release)
    await release_due(tables.digests, herald.digests_due, partition, partitions, generation,
                      now, due_at, flush)
    sweep(tables.dedup, partition, partitions, sweeps["dedup", partition], now,
          DEDUP_SWEEP_SECONDS, lambda claimed: is_expired(claimed, now))
    retention = herald.settings.sends_retention_seconds
    sweep(tables.sends, partition, partitions, sweeps["sends", partition], now,
          SENDS_SWEEP_SECONDS, lambda sent: is_settled(sent, now, retention))


async def release_due(table: TableT, index: DueIndex, partition: int, partitions: int,
                      generation: int, now: float, due_of: Callable[[Any], float],
                      release: Callable[[str, Any], Awaitable[None]]) -> None:
    """Hand each row of ``partition`` that is due at ``now`` to ``release``, then delete it.

    The index is built from the partition's rows once per consumer
    ``generation``; after that only due rows are read. A row whose release
    fails stays indexed, for the next tick.
    """
    if not index.built(partition, generation):
        index.build(partition, generation, ((key, due_of(row)) for key, row
                                            in rows_of(table, partition, partitions)))
    while (entry := index.pop_due(partition, now)) is not None:
        key = entry[1]
        row = table.get(key)
        if row is None or due_of(row) > now:
            continue  # released already, or held again until later (indexed again then)
        try:
            await release(key, row)
        except BaseException:
            index.add(partition, *entry)
            raise
        del table[key]


def digest_notification(key: str, batch: dict[str, Any]) -> Notification:
    """The one notification that summarises a user's batched category."""
    user_id, category = key.split("\x1f", 1)
    return Notification(
        id=digest_id(user_id, category, batch["window_end"]), user_id=user_id,
        category=category, priority="low", created_at=now_iso(), template="digest",
        data=summary(batch), released=True, digest=True)
