"""flush_durably: every table write is in Kafka before a provider hears of a delivery."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from agents.emitters import flush_durably


class GivingUpBuffer:
    """Faust's changelog buffer as seen under load: each flush drains one record, then gives up."""

    def __init__(self, pending: int, log: list[str]) -> None:
        self.pending, self.log = pending, log

    @property
    def size(self) -> int:
        return self.pending

    async def flush(self) -> None:
        self.pending -= 1
        self.log.append("buffer")


class Producer:
    def __init__(self, pending: int) -> None:
        self.log: list[str] = []
        self.buffer = GivingUpBuffer(pending, self.log)

    async def flush(self) -> None:
        self.log.append(f"kafka with {self.buffer.size} pending")


def test_the_changelog_buffer_is_drained_before_the_kafka_flush() -> None:
    producer = Producer(pending=3)
    asyncio.run(flush_durably(SimpleNamespace(app=SimpleNamespace(producer=producer))))
    assert producer.log == ["buffer", "buffer", "buffer", "kafka with 0 pending"]


def test_an_empty_buffer_goes_straight_to_the_kafka_flush() -> None:
    producer = Producer(pending=0)
    asyncio.run(flush_durably(SimpleNamespace(app=SimpleNamespace(producer=producer))))
    assert producer.log == ["kafka with 0 pending"]
