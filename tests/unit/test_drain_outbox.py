"""drain_outbox: under exactly_once table writes leave Faust's buffer in order, and a failure stops no agent."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from agents.emitters import drain_outbox


class Buffer:
    """Faust's changelog buffer: a queue of pending writes and the coroutine that sends one."""

    def __init__(self, writes: list[str], fail_on: str | None = None) -> None:
        self.pending: asyncio.Queue[str] = asyncio.Queue()
        for write in writes:
            self.pending.put_nowait(write)
        self.sent: list[str] = []
        self.fail_on = fail_on

    @property
    def size(self) -> int:
        return self.pending.qsize()

    async def _send_pending(self, write: str) -> None:
        if write == self.fail_on:
            raise OSError("producer closed")
        await asyncio.sleep(0)
        self.sent.append(write)


def herald_with(buffer: Buffer) -> SimpleNamespace:
    return SimpleNamespace(app=SimpleNamespace(producer=SimpleNamespace(buffer=buffer)),
                           tables=SimpleNamespace(outbox=None))


def test_every_waiting_write_is_sent_in_order() -> None:
    async def scenario() -> Buffer:
        buffer = Buffer(["rate u-1", "dedup u-1", "sends u-1 sending"])
        await drain_outbox(herald_with(buffer))
        return buffer

    buffer = asyncio.run(scenario())
    assert buffer.sent == ["rate u-1", "dedup u-1", "sends u-1 sending"] and buffer.size == 0


def test_a_failed_send_is_logged_not_raised(caplog) -> None:
    async def scenario() -> Buffer:
        buffer = Buffer(["a", "b", "c"], fail_on="b")
        await drain_outbox(herald_with(buffer))
        return buffer

    buffer = asyncio.run(scenario())
    assert buffer.sent == ["a"]
    assert "could not be handed to the Kafka producer" in caplog.text
