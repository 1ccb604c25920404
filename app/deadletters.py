"""Operating the dead-letter queue: list, show and replay what herald gave up on.

Selecting and re-targeting letters are pure functions; reading and producing
use plain aiokafka, so the commands work while workers run. A replayed
delivery gets an attempt number above the one that died, which is what lets
the delivery agent send it again even when the first outcome was unknown.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app.admin import partitions_of, rewind
from app.topics import DLQ, delivery_topic_name


@dataclass(frozen=True)
class Letter:
    """One record of ``deliveries.dlq`` and where it sits."""

    partition: int
    offset: int
    value: dict[str, Any]

    @property
    def channel(self) -> str | None:
        return (self.value.get("delivery") or {}).get("channel")


@dataclass(frozen=True)
class Selection:
    """Which letters a command applies to."""

    reason: str | None = None
    channel: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def matches(self, letter: Letter) -> bool:
        """Whether ``letter`` passes every filter that is set."""
        at = datetime.fromisoformat(letter.value["at"])
        return ((self.reason is None or self.reason in letter.value.get("reason", ""))
                and (self.channel is None or self.channel == letter.channel)
                and (self.since is None or at >= self.since)
                and (self.until is None or at < self.until))


def replay_target(letter: Letter) -> tuple[str, str | None, bytes]:
    """Where a letter goes back to: (topic, key, value).

    A dead delivery goes back to its channel (and lane) with the next attempt
    number; any other record (an invalid event fixed upstream, say) goes back
    to the topic it came from, unchanged.
    """
    delivery = letter.value.get("delivery")
    if delivery:
        again = {**delivery, "attempt": int(letter.value.get("attempts") or 1) + 1,
                 "not_before": None, "last_error": letter.value.get("error")}
        topic = delivery_topic_name(delivery["channel"], delivery.get("lane", "bulk"))
        return topic, delivery["user_id"], json.dumps(again).encode()
    payload = (letter.value.get("payload") or "").encode()
    return letter.value["topic"], letter.value.get("key"), payload


async def read_letters(bootstrap: str, selection: Selection) -> list[Letter]:
    """Every letter currently in the DLQ that ``selection`` matches, oldest first per partition."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                group_id=None, request_timeout_ms=15000)
    try:
        await consumer.start()
        partitions = [TopicPartition(DLQ, p) for p in await partitions_of(bootstrap, DLQ)]
        consumer.assign(partitions)
        starts = await rewind(consumer, partitions)
        ends = await consumer.end_offsets(partitions)
        letters: list[Letter] = []
        # Retention may have removed the oldest letters: empty is start == end.
        pending = {tp for tp in partitions if ends[tp] > starts[tp]}
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=1000)
            for tp, records in batches.items():
                for record in records:
                    if record.offset >= ends[tp]:
                        break
                    letter = Letter(tp.partition, record.offset, json.loads(record.value))
                    if selection.matches(letter):
                        letters.append(letter)
            # Done with a partition once its position reached the end seen at the
            # start: the last offset may be a marker that never comes as a record.
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
                    # Letters arriving meanwhile must not hold up the other partitions.
                    consumer.pause(tp)
        return letters
    finally:
        await consumer.stop()


async def replay(bootstrap: str, letters: Iterable[Letter],
                 progress: Callable[[], None] = lambda: None) -> int:
    """Produce each letter back to its target; return how many were replayed.

    ``progress`` is called once per letter produced (the CLI's progress bar).
    """
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    count = 0
    try:
        await producer.start()
        for letter in letters:
            topic, key, value = replay_target(letter)
            await producer.send_and_wait(topic, key=key.encode() if key else None, value=value,
                                         headers=[("herald-replayed-from",
                                                   f"{DLQ}:{letter.partition}:{letter.offset}"
                                                   .encode())])
            count += 1
            progress()
    finally:
        await producer.stop()
    return count
