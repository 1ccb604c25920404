"""Re-feeding a range of a topic: ``herald replay``.

Faust has no replay-from-offset; this reads the range with a plain aiokafka
consumer (no group, nothing committed) and produces every record again, key
and headers kept, to the same topic or another. Replaying ``notifications``
is safe by default: records keep their ids and idempotency keys, so dedup
suppresses what was already handled; ``force_new_ids`` strips both for a
deliberate resend.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable, Mapping

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app.admin import partitions_of


@dataclass(frozen=True)
class Bounds:
    """Where a replay starts and stops on one partition (stop is exclusive)."""

    start: int
    stop: int

    @property
    def size(self) -> int:
        return max(0, self.stop - self.start)


def bounds(first: int, end: int, start: int | None, stop: int | None) -> Bounds:
    """The offsets to replay on a partition holding [first, end), clamped to what exists.

    ``start`` / ``stop`` are the requested offsets (``None``: from the first,
    up to the end as it is now, so records arriving during the replay, the
    replayed ones among them, are never replayed again).
    """
    lower = max(first, start if start is not None else first)
    upper = min(end, stop if stop is not None else end)
    return Bounds(lower, max(lower, upper))


def for_resend(value: bytes | None) -> bytes | None:
    """``value`` with its ``id`` and ``idempotency_key`` removed, when it is a JSON object."""
    if value is None:
        return None
    try:
        record = json.loads(value)
    except ValueError:
        return value
    if not isinstance(record, dict):
        return value
    record.pop("id", None)
    record.pop("idempotency_key", None)
    return json.dumps(record).encode()


async def plan(bootstrap: str, topic: str, partitions: list[int], *,
               from_offset: int | None = None, from_time: float | None = None,
               to_offset: int | None = None, to_time: float | None = None
               ) -> dict[int, Bounds]:
    """The bounds of the replay on each partition (times are epoch seconds)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False)
    try:
        await consumer.start()
        tps = [TopicPartition(topic, p) for p in partitions]
        firsts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)

        async def at(moment: float | None, default: int | None) -> Mapping[TopicPartition, int | None]:
            if moment is None:
                return {tp: default for tp in tps}
            found = await consumer.offsets_for_times({tp: int(moment * 1000) for tp in tps})
            return {tp: (found[tp].offset if found[tp] else ends[tp]) for tp in tps}

        starts = await at(from_time, from_offset)
        stops = await at(to_time, to_offset)
        return {tp.partition: bounds(firsts[tp], ends[tp], starts[tp], stops[tp]) for tp in tps}
    finally:
        await consumer.stop()


async def replay(bootstrap: str, topic: str, ranges: Mapping[int, Bounds], *,
                 into: str | None = None, force_new_ids: bool = False,
                 progress: Callable[[], None] = lambda: None) -> dict[int, int]:
    """Produce the records of ``ranges`` again; return how many per partition.

    ``progress`` is called once per record produced (the CLI's progress bar).
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    counts = {partition: 0 for partition in ranges}
    try:
        await consumer.start()
        await producer.start()
        for partition, span in ranges.items():
            if not span.size:
                continue
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            consumer.seek(tp, span.start)
            done = False
            while not done:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                if not batch and await consumer.position(tp) >= span.stop:
                    break  # the range ended on offsets that hold no record (markers, gaps)
                for record in batch.get(tp, []):
                    if record.offset >= span.stop:
                        done = True
                        break
                    value = for_resend(record.value) if force_new_ids else record.value
                    headers = [*record.headers, ("herald-replayed-from",
                                                 f"{topic}:{partition}:{record.offset}".encode())]
                    await producer.send_and_wait(into or topic, key=record.key, value=value,
                                                 headers=headers)
                    counts[partition] += 1
                    progress()
                    done = record.offset + 1 >= span.stop
                    if done:
                        break
    finally:
        await producer.stop()
        await consumer.stop()
    return counts
