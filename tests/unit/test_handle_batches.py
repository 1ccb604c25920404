"""handle_batches: a batch is what already waits in the stream; acks come after it is handled."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

import pytest

from agents.emitters import handle_batches


class Stream:
    """The part of a Faust agent stream handle_batches uses: events read from the
    channel's queue, acked on request when the stream's own acks are off."""

    prefix = "deliver-email-bulk"

    def __init__(self) -> None:
        self.channel = type("Channel", (), {"queue": asyncio.Queue()})()
        self.enable_acks = True
        self.acked: list[str] = []
        self.log: list[str] = []

    async def events(self) -> AsyncIterator[str]:
        while True:
            event = await self.channel.queue.get()
            if event is None:
                return
            yield event
            if self.enable_acks:  # Faust acks the previous event as it hands out the next
                self.acked.append(event)

    async def ack(self, event: str) -> None:
        self.acked.append(event)
        self.log.append(f"ack {event}")


def run(stream: Stream, size: int, feed) -> list[list[str]]:
    batches: list[list[str]] = []

    async def handle(agent: str, events: list[str]) -> None:
        assert agent == "deliver-email-bulk"
        batches.append(list(events))
        stream.log.append(f"handle {','.join(events)}")
        await feed(len(batches))

    async def scenario() -> None:
        await asyncio.wait_for(handle_batches(None, stream, handle, size=size), timeout=5)

    asyncio.run(scenario())
    return batches


def test_a_lone_event_is_handled_at_once_without_waiting_for_company() -> None:
    stream = Stream()
    stream.channel.queue.put_nowait("d1")

    async def feed(handled: int) -> None:
        # the first batch was handed over while nothing else had arrived
        stream.channel.queue.put_nowait("d2" if handled == 1 else None)

    assert run(stream, 200, feed) == [["d1"], ["d2"]]


def test_waiting_events_go_together_up_to_the_batch_size() -> None:
    stream = Stream()
    for i in range(5):
        stream.channel.queue.put_nowait(f"d{i}")

    async def feed(handled: int) -> None:
        if handled == 2:
            stream.channel.queue.put_nowait(None)

    assert run(stream, 3, feed) == [["d0", "d1", "d2"], ["d3", "d4"]]


def test_events_are_acked_only_once_their_batch_is_handled() -> None:
    stream = Stream()
    for event in ("d0", "d1"):
        stream.channel.queue.put_nowait(event)

    async def feed(handled: int) -> None:
        assert stream.acked == []
        stream.channel.queue.put_nowait(None)

    run(stream, 200, feed)
    assert stream.enable_acks is False
    assert stream.log == ["handle d0,d1", "ack d0", "ack d1"]


def test_a_batch_that_fails_is_still_acked_and_the_failure_surfaces() -> None:
    stream = Stream()
    stream.channel.queue.put_nowait("d0")

    async def feed(handled: int) -> None:
        raise RuntimeError("handler bug")

    with pytest.raises(RuntimeError, match="handler bug"):
        run(stream, 200, feed)
    assert stream.acked == ["d0"]
