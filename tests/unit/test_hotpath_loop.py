"""A hot path loop: batches handled in order, committed once acknowledged, never lost."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from agents import hotpath

TP = TopicPartition("notifications.bulk", 3)


def record(offset: int, value: bytes = b"ok") -> ConsumerRecord:
    return ConsumerRecord(topic=TP.topic, partition=TP.partition, offset=offset, timestamp=0,
                          timestamp_type=0, key=b"u-1", value=value, checksum=None,
                          serialized_key_size=3, serialized_value_size=len(value), headers=())


class Consumer:
    """Plays back a script of fetch results, then waits as an idle consumer does."""

    def __init__(self, script: list[dict[TopicPartition, list[ConsumerRecord]]],
                 log: list[str]) -> None:
        self.script, self.log = script, log
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.assigned: list[TopicPartition] = [TP]

    async def getmany(self, timeout_ms: int, max_records: int) -> dict:
        if not self.script:
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        return self.script.pop(0)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    def assign(self, tps: list[TopicPartition]) -> None:
        self.assigned = tps

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.log.append(f"commit {offsets[TP]}")


class Partition(Consumer):
    """Serves the records of one partition from its position, which a seek moves."""

    def __init__(self, records: list[ConsumerRecord], log: list[str]) -> None:
        super().__init__([], log)
        self.records, self.position = records, records[0].offset

    async def getmany(self, timeout_ms: int, max_records: int) -> dict:
        await asyncio.sleep(0.015)  # a fetch takes a moment
        start = self.position - self.records[0].offset
        batch = self.records[start:start + max_records]
        if not batch:
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        self.position = batch[-1].offset + 1
        return {TP: batch}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        super().seek(tp, offset)
        self.position = offset

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def highwater(self, tp: TopicPartition) -> int:
        return self.records[-1].offset + 1


class Outbox:
    """The worker's outbox as a loop sees it: hand-overs, and batches Kafka did not take."""

    def __init__(self) -> None:
        self.failures = 0

    async def hand_over(self) -> None:
        await asyncio.sleep(0)


class Producer:
    def __init__(self, log: list[str], outbox: Outbox, failing_flushes: int = 0) -> None:
        self.log, self.outbox, self.failing_flushes = log, outbox, failing_flushes
        self.buffer = SimpleNamespace(size=0)

    async def flush(self) -> None:
        await asyncio.sleep(0.02)  # Kafka takes a moment to acknowledge
        if self.failing_flushes:
            self.failing_flushes -= 1
            self.outbox.failures += 1  # a batch's future failed; its flush ends later
            await asyncio.sleep(0.02)
            self.log.append("a batch failed")
            return
        self.log.append("acknowledged")


def loop_with(script: list, handle: Any, log: list[str], failing_flushes: int = 0,
              batch: int = hotpath.FETCH_RECORDS) -> hotpath.Loop:
    outbox = Outbox()
    herald = SimpleNamespace(app=SimpleNamespace(producer=Producer(log, outbox, failing_flushes)),
                             tables=SimpleNamespace(outbox=outbox))
    loop = hotpath.Loop(herald, "router-bulk", TP.topic,  # type: ignore[arg-type]
                        decode=lambda value: value.decode(), handle=handle, batch=batch)
    loop.consumer = Consumer(script, log)  # type: ignore[assignment]
    loop.running.set()
    return loop


def handled_into(log: list[str]) -> Any:
    """A batch handler that logs the offsets it was given."""
    async def handle(agent: str, events: list) -> None:
        log.append(f"handled {[e.message.offset for e in events]}")
    return handle


def commits(log: list[str]) -> list[str]:
    return [line for line in log if line.startswith("commit")]


async def until(condition: Any, seconds: float = 2.0) -> None:
    """Poll ``condition`` until it holds; fail after ``seconds``."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def run_until(loop: hotpath.Loop, done: Any) -> None:
    stop = False
    task = asyncio.create_task(loop.run(lambda: stop))
    for _ in range(200):
        await asyncio.sleep(0.01)
        if done():
            break
    await loop.release()
    stop = True
    loop.running.set()
    await asyncio.wait_for(task, timeout=2)


async def test_batches_are_handled_in_order_and_committed_after_their_records_are_acknowledged():
    log: list[str] = []

    async def handle(agent: str, events: list) -> None:
        log.append(f"{agent} {[e.message.offset for e in events]} {[e.value for e in events]}")

    loop = loop_with([{TP: [record(10), record(11)]}, {TP: [record(12)]}], handle, log)
    await run_until(loop, lambda: "commit 13" in log)
    handled = [line for line in log if line.startswith("router-bulk")]
    assert handled == ["router-bulk [10, 11] ['ok', 'ok']", "router-bulk [12] ['ok']"]
    # each commit follows its batch and an acknowledgement of what was produced, in order
    assert commits(log) == ["commit 12", "commit 13"]
    assert log.index("commit 12") > log.index(handled[0])
    assert log.index("commit 13") > log.index(handled[1])
    assert log[log.index("commit 12") - 1] == log[log.index("commit 13") - 1] == "acknowledged"
    assert loop.consumer.assigned == []  # released


async def test_a_batch_that_fails_is_read_again_from_its_first_offset(monkeypatch):
    monkeypatch.setattr(hotpath.asyncio, "sleep", _no_wait(asyncio.sleep))
    log: list[str] = []
    calls = 0

    async def handle(agent: str, events: list) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("changelog write failed")
        log.append(f"handled {[e.message.offset for e in events]}")

    batch = {TP: [record(10), record(11)]}
    loop = loop_with([batch, batch], handle, log)
    await run_until(loop, lambda: "commit 12" in log)
    assert loop.consumer.seeks == [(TP, 10)]
    assert log == ["handled [10, 11]", "acknowledged", "commit 12"]


async def test_a_record_that_does_not_decode_is_dead_lettered_and_the_rest_handled(monkeypatch):
    log: list[str] = []
    letters: list[tuple[int, str]] = []

    async def dead_letter(herald: Any, message: Any, reason: str, **_: Any) -> None:
        letters.append((message.offset, reason))

    monkeypatch.setattr(hotpath, "dead_letter", dead_letter)

    handle = handled_into(log)

    loop = loop_with([{TP: [record(10), record(11, b"\xff"), record(12)]}], handle, log)
    await run_until(loop, lambda: "commit 13" in log)
    assert letters == [(11, "undecodable record")]
    assert log == ["handled [10, 12]", "acknowledged", "commit 13"]


async def test_release_waits_for_the_batch_in_hand_and_its_commit():
    log: list[str] = []
    go_on = asyncio.Event()

    async def handle(agent: str, events: list) -> None:
        log.append("started")
        await go_on.wait()
        log.append("handled")

    loop = loop_with([{TP: [record(10)]}], handle, log)
    task = asyncio.create_task(loop.run(lambda: False))
    while "started" not in log:
        await asyncio.sleep(0.01)
    releasing = asyncio.create_task(loop.release())
    await asyncio.sleep(0.05)
    assert not releasing.done()
    go_on.set()
    await asyncio.wait_for(releasing, timeout=2)
    # The partition is given up only once its last batch is committed
    assert log == ["started", "handled", "acknowledged", "commit 11"]
    assert loop.consumer.assigned == []
    task.cancel()


async def test_when_produced_records_may_be_lost_nothing_later_is_committed_and_all_is_read_again():
    log: list[str] = []

    handle = handled_into(log)

    loop = loop_with([], handle, log, failing_flushes=1, batch=1)
    loop.consumer = Partition([record(10), record(11), record(12)], log)  # type: ignore[assignment]
    loop.committed = {TP: 10}  # where take() found the partition
    await run_until(loop, lambda: "commit 13" in log)
    handled = [line for line in log if line.startswith("handled")]
    assert handled[:3] == ["handled [10]", "handled [11]", "handled [12]"]
    # Records produced for the first batch were not all acknowledged: no batch after it is
    # committed, even one that began after the failure; all is read again from 10.
    assert (TP, 10) in loop.consumer.seeks
    first_commit = commits(log)[0]
    assert log.index(first_commit) > log.index("a batch failed")
    assert log.index(first_commit) > log.index("handled [10]", 1)
    assert commits(log)[-1] == "commit 13"


def _no_wait(sleep: Any) -> Any:
    async def short(seconds: float) -> None:
        await sleep(min(seconds, 0.01))
    return short


async def test_while_records_keep_coming_commits_wait_for_the_interval_and_release_commits_the_rest(
        monkeypatch):
    monkeypatch.setattr(hotpath, "COMMIT_INTERVAL", 60.0)
    log: list[str] = []

    handle = handled_into(log)

    loop = loop_with([], handle, log, batch=1)
    records = [record(offset) for offset in range(10, 40)]  # more than the test reads
    loop.consumer = Partition(records, log)  # type: ignore[assignment]
    task = asyncio.create_task(loop.run(lambda: False))
    await until(lambda: log.count("acknowledged") >= 3)
    # The first batch commits at once; the next ones wait for the interval
    assert commits(log) == ["commit 11"]
    done = loop.acknowledged[TP]
    assert done >= 13
    assert loop.lag() == {TP: 40 - done}  # acknowledged records are not lag
    await loop.release()
    made = commits(log)
    assert len(made) == 2 and int(made[1].split()[1]) >= done
    assert loop.acknowledged == {} and loop.consumer.assigned == []
    task.cancel()


async def test_an_idle_loop_commits_what_is_acknowledged_without_waiting_for_the_interval(
        monkeypatch):
    monkeypatch.setattr(hotpath, "COMMIT_INTERVAL", 60.0)
    log: list[str] = []

    handle = handled_into(log)

    loop = loop_with([{TP: [record(10)]}, {TP: [record(11)]}], handle, log)
    task = asyncio.create_task(loop.run(lambda: False))
    # the script ends: the next fetch finds nothing, and the loop commits 12 at once
    await until(lambda: "commit 12" in log)
    assert commits(log) == ["commit 11", "commit 12"]
    assert loop.running.is_set()  # not released: the idle fetch committed it
    task.cancel()

