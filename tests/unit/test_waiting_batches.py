"""waiting_batches: a batch is what arrived while the last one was handled; acks come after.

The agent is a real Faust agent run by its test context (a real stream over
a channel, no broker), so the stream's background reading, processors and
acks are Faust's own.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator

import faust

from agents.emitters import waiting_batches

DEADLINE_SECONDS = 5.0


class Scenario:
    """A Faust agent that takes ``waiting_batches(stream, size)`` and logs handles and acks.

    A batch's handling waits at ``gate`` when the test closed it, so the test
    decides what arrives while a batch is being handled.
    """

    def __init__(self, size: int, fail_on: int | None = None) -> None:
        self.app = faust.App("test-waiting-batches", store="memory://")
        self.log: list[str] = []
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.handling = asyncio.Event()
        self.failures: list[Exception] = []
        self.stream: Any = None  # the agent's stream, and its processors before the batching
        self.processors_before: list[Any] = []

        @self.app.agent(self.app.topic("deliveries"))
        async def deliver(stream: Any) -> None:
            acking = stream.ack

            async def ack(event: Any) -> bool:
                self.log.append(f"ack {event.value}")
                return await acking(event)

            stream.ack = ack
            self.processors_before = list(stream._processors)  # noqa: SLF001
            self.stream = stream
            try:
                async for batch in waiting_batches(stream, size):
                    values = [event.value for event in batch]
                    self.batches.append(values)
                    self.log.append(f"handle {','.join(map(str, values))}")
                    self.handling.set()
                    await self.gate.wait()
                    if fail_on in values:
                        raise RuntimeError("handler bug")
            except RuntimeError as exc:
                self.failures.append(exc)

        self.agent = deliver

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Any]:
        """The agent, started by Faust's test context (and stopped after the block)."""
        try:
            async with self.agent.test_context() as agent:
                yield agent
        finally:
            # The stream made Faust's Kafka consumer, never started; its thread's loop stays open.
            self.app.consumer._thread.thread_loop.close()  # noqa: SLF001

    async def hold_first_batch(self, agent: Any) -> None:
        """Put 0 and keep its batch in the handler until the gate opens."""
        self.gate.clear()
        await agent.put(0)
        await until(self.handling.is_set)

    def handled(self) -> list[int]:
        return [value for batch in self.batches for value in batch]

    def acked(self) -> list[str]:
        return [line for line in self.log if line.startswith("ack")]


async def until(condition: Any) -> None:
    """Poll ``condition`` until it holds, failing after the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_SECONDS
    while not condition():
        assert loop.time() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.005)


async def test_a_lone_event_is_handled_without_company() -> None:
    scenario = Scenario(size=200)
    async with scenario.running() as agent:
        await agent.put(1)
        await until(lambda: scenario.acked() == ["ack 1"])
    assert scenario.batches == [[1]]


async def test_what_arrives_while_a_batch_is_handled_is_the_next_batch_up_to_the_size() -> None:
    scenario = Scenario(size=3)
    async with scenario.running() as agent:
        await scenario.hold_first_batch(agent)
        for value in range(1, 6):
            await agent.put(value, wait=False)
        # The stream reads 1-3, then waits until they are taken: 4 is not read.
        await until(lambda: agent.processed_offset == 4)
        scenario.gate.set()
        await until(lambda: len(scenario.acked()) == 6)
    assert scenario.batches[:2] == [[0], [1, 2, 3]]
    assert scenario.handled() == [0, 1, 2, 3, 4, 5]
    assert all(len(batch) <= 3 for batch in scenario.batches)


async def test_events_are_acked_once_their_batch_was_handled() -> None:
    scenario = Scenario(size=200)
    async with scenario.running() as agent:
        await scenario.hold_first_batch(agent)
        await agent.put(1)
        await agent.put(2)  # returns once the stream read it
        assert scenario.acked() == []
        scenario.gate.set()
        await until(lambda: len(scenario.acked()) == 3)
    assert scenario.log == ["handle 0", "ack 0", "handle 1,2", "ack 1", "ack 2"]


async def test_read_events_are_handed_over_when_the_stream_has_nothing_more() -> None:
    """As on a rebalance: Faust stops the flow, empties the agents' queues and waits,
    without a timeout, until every event read is acked. Events already read
    must then reach the handler although the stream gives nothing more."""
    scenario = Scenario(size=200)
    async with scenario.running() as agent:
        await scenario.hold_first_batch(agent)
        await agent.put(1)
        await agent.put(2)  # returns once the stream read it
        scenario.app.flow_control.suspend()
        scenario.app.flow_control.clear()
        scenario.gate.set()
        await until(lambda: len(scenario.acked()) == 3)
        scenario.app.flow_control.resume()
    assert scenario.batches == [[0], [1, 2]]


async def test_a_batch_that_raises_is_still_acked() -> None:
    scenario = Scenario(size=200, fail_on=7)
    async with scenario.running() as agent:
        await agent.put(7)
        await until(lambda: scenario.failures)
    assert scenario.acked() == ["ack 7"]
    assert [str(exc) for exc in scenario.failures] == ["handler bug"]
    # The stream is left as before: its own acks back on, the batching processor gone.
    assert scenario.stream.enable_acks is True
    assert scenario.stream._processors == scenario.processors_before  # noqa: SLF001
