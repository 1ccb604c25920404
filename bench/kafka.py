"""Plain aiokafka helpers the benchmark parts share: produce fast, watch offsets, read back."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

#: A consumer reading back in bulk.
BIG_FETCHES = {"max_partition_fetch_bytes": 4 * 1024 * 1024}

#: A producer tuned for bulk loading (batches, not latency).
BULK = {"acks": "all", "linger_ms": 20, "max_batch_size": 256 * 1024,
        "max_request_size": 4 * 1024 * 1024}


async def create_topics(bootstrap: str, names: Iterable[str], partitions: int) -> None:
    """Create ``names`` and wait until every partition has a leader."""
    names = list(names)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for name in names:
            try:
                await admin.create_topics([NewTopic(name, partitions, 1)])
            except TopicAlreadyExistsError:
                pass
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            described = await admin.describe_topics(names)
            if all(d["error_code"] == 0 and len(d["partitions"]) == partitions
                   and all(p["leader"] >= 0 for p in d["partitions"]) for d in described):
                return
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def produce_all(bootstrap: str, topic: str, records: Iterable[tuple[bytes, bytes]],
                      **config: object) -> float:
    """Produce every (key, value), acknowledged; return the seconds it took."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **{**BULK, **config})
    await producer.start()
    started = time.monotonic()
    try:
        pending = []
        for key, value in records:
            pending.append(await producer.send(topic, key=key, value=value))
            if len(pending) >= 20000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        return time.monotonic() - started
    finally:
        await producer.stop()


async def partitions_of(bootstrap: str, topics: Iterable[str]) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(list(topics))
        return [TopicPartition(d["topic"], p["partition"]) for d in described
                for p in sorted(d["partitions"], key=lambda p: p["partition"])]
    finally:
        await admin.close()


async def end_offsets(bootstrap: str, topics: Iterable[str]) -> dict[TopicPartition, int]:
    partitions = await partitions_of(bootstrap, topics)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()


class Stalled(RuntimeError):
    """A topic stopped growing before reaching the count waited for."""


async def wait_for_count(bootstrap: str, topics: list[str], target: int, *,
                         stall_seconds: float = 60.0, alive: Callable[[], bool] = lambda: True,
                         interval: float = 0.25) -> float:
    """Poll the end offsets of ``topics`` until they sum to ``target``; return when (monotonic).

    Cheap for the machine under test (one ListOffsets request per poll).
    Raises :class:`Stalled` when nothing was appended for ``stall_seconds``
    or ``alive()`` turns false.
    """
    partitions = await partitions_of(bootstrap, topics)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        last, last_change = -1, time.monotonic()
        while True:
            count = sum((await consumer.end_offsets(partitions)).values())
            now = time.monotonic()
            if count >= target:
                return now
            if count != last:
                last, last_change = count, now
            if now - last_change > stall_seconds or not alive():
                raise Stalled(f"{'+'.join(topics)} stalled at {count} of {target} records")
            await asyncio.sleep(interval)
    finally:
        await consumer.stop()


async def wait_for_keys(bootstrap: str, start: dict[TopicPartition, int], keys: Iterable[bytes],
                        *, stall_seconds: float = 60.0,
                        alive: Callable[[], bool] = lambda: True) -> float:
    """Read from ``start`` until every one of ``keys`` was written; return when (monotonic).

    A count of records is not enough where a rebalance makes a worker handle
    some input twice (at least once): the copies fill the count while other
    keys are still to come. Raises :class:`Stalled` when no new key came for
    ``stall_seconds`` or ``alive()`` turns false.
    """
    missing = set(keys)
    async with reading(bootstrap, start, **BIG_FETCHES) as consumer:
        last_change = time.monotonic()
        while missing:
            batches = await consumer.getmany(timeout_ms=250, max_records=20000)
            before = len(missing)
            missing.difference_update(record.key for part in batches.values() for record in part)
            now = time.monotonic()
            if len(missing) != before:
                last_change = now
            elif now - last_change > stall_seconds or not alive():
                raise Stalled(f"{len(missing)} keys not written yet")
        return time.monotonic()


@contextlib.asynccontextmanager
async def reading(bootstrap: str, start: dict[TopicPartition, int],
                  **options: Any) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer assigned the partitions of ``start``, each at its offset; stopped after."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **options)
    await consumer.start()
    try:
        consumer.assign(list(start))
        for tp, offset in start.items():
            consumer.seek(tp, offset)
        yield consumer
    finally:
        await consumer.stop()


@dataclass
class Tally:
    """What a topic range holds: records, first and last timestamps, per marker counts."""

    records: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    marked: dict[bytes, int] = field(default_factory=dict)
    last_marked_ms: dict[bytes, int] = field(default_factory=dict)
    seconds: float = 0.0

    def add(self, value: bytes, timestamp: int, markers: tuple[bytes, ...]) -> None:
        self.records += 1
        self.first_ms = timestamp if self.first_ms is None else min(self.first_ms, timestamp)
        self.last_ms = timestamp if self.last_ms is None else max(self.last_ms, timestamp)
        for marker in markers:
            if marker in value:
                self.marked[marker] = self.marked.get(marker, 0) + 1
                self.last_marked_ms[marker] = max(self.last_marked_ms.get(marker, 0), timestamp)


async def read_range(bootstrap: str, start: dict[TopicPartition, int],
                     stop: dict[TopicPartition, int], markers: tuple[bytes, ...] = (),
                     keep: Callable[[bytes], bool] | None = None) -> Tally:
    """Read ``start``..``stop`` of each partition raw and tally it (no JSON decoding)."""
    tally = Tally()
    wanted = {tp: end for tp, end in stop.items() if end > start.get(tp, 0)}
    if not wanted:
        return tally
    async with reading(bootstrap, {tp: start.get(tp, 0) for tp in wanted},
                       **BIG_FETCHES) as consumer:
        started = time.monotonic()
        while wanted:
            batches = await consumer.getmany(*wanted, timeout_ms=1000, max_records=20000)
            for tp, records in batches.items():
                for record in records:
                    if record.offset < wanted.get(tp, 0) and (keep is None or keep(record.value)):
                        tally.add(record.value, record.timestamp, markers)
                if records and records[-1].offset + 1 >= wanted.get(tp, 0):
                    wanted.pop(tp, None)
        tally.seconds = time.monotonic() - started
        return tally
