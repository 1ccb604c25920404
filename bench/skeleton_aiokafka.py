"""herald's hops with no decisions, off Faust: plain aiokafka loops and RocksDB (rocksdict).

The same work as ``bench/skeleton.py`` (dedup key read and written, a
delivery and a QUEUED event; the ``sends`` intent and outcome, a SENT event),
done the Kafka Streams way without Faust's per-record machinery: each hop
is a consumer loop over fetched batches, state is a RocksDB database per
hop, every state write also goes to a changelog topic on the partition of
the record that made it, and a batch's offsets are committed once all it
produced is acknowledged (at least once). It measures what herald's hops
could reach if the hot path left Faust's streams and tables.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from rocksdict import Rdict

from bench.skeleton import record_key

Handle = Callable[[ConsumerRecord], list[tuple[str, bytes, bytes, int | None]]]


async def _hop(bootstrap: str, source: str, group: str, producer: AIOKafkaProducer,
               handle: Handle, done: Callable[[], bool]) -> None:
    """Consume ``source`` in batches; produce what ``handle`` returns; commit when acked."""
    consumer = AIOKafkaConsumer(source, bootstrap_servers=bootstrap, group_id=group,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        while not done():
            batches = await consumer.getmany(timeout_ms=200)
            sends = [await producer.send(topic, key=key, value=value, partition=partition)
                     for part in batches.values() for record in part
                     for topic, key, value, partition in handle(record)]
            await asyncio.gather(*sends)
            if batches:
                await consumer.commit({tp: part[-1].offset + 1 for tp, part in batches.items()})
    finally:
        await consumer.stop()


async def run(bootstrap: str, topics: dict[str, str], expected: int, folder: Path,
              group: str) -> None:
    """Route ``topics["in"]`` to ``topics["mid"]``, deliver it, until ``expected`` events."""
    dedup, sends = Rdict(str(folder / "dedup")), Rdict(str(folder / "sends"))
    handled = 0

    def done() -> bool:
        return handled >= expected

    def route(record: ConsumerRecord) -> list[tuple[str, bytes, bytes, int | None]]:
        nonlocal handled
        claim = record_key(record)
        if dedup.get(claim) is not None:
            return []
        dedup[claim] = b"1"
        handled += 1
        return [(topics["dedup-changelog"], claim, b"1", record.partition),
                (topics["mid"], record.key, record.value, None),
                (topics["out"], record.key, b'"QUEUED"', None)]

    def deliver(record: ConsumerRecord) -> list[tuple[str, bytes, bytes, int | None]]:
        nonlocal handled
        key = record_key(record)
        sends[key] = b"intent"
        sends[key] = b"sent"
        handled += 1
        return [(topics["sends-changelog"], key, b"intent", record.partition),
                (topics["sends-changelog"], key, b"sent", record.partition),
                (topics["out"], record.key, b'"SENT"', None)]

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await asyncio.gather(
            _hop(bootstrap, topics["in"], f"{group}-route", producer, route, done),
            _hop(bootstrap, topics["mid"], f"{group}-deliver", producer, deliver, done))
    finally:
        await producer.stop()
        dedup.close()
        sends.close()
