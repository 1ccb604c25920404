"""The recorder's loop: Kafka errors and failed batches are retried; nothing is committed unrecorded."""

from __future__ import annotations

from types import SimpleNamespace

from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError, RequestTimedOutError

from agents import recorder as recording

TP = TopicPartition("delivery-events", 3)


def message(offset: int) -> SimpleNamespace:
    return SimpleNamespace(topic=TP.topic, partition=TP.partition, offset=offset)


class Consumer:
    """Plays back a script of fetch results; stops the recorder when it runs out."""

    def __init__(self, script: list, stop: object) -> None:
        self.script, self.stop = script, stop
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.commits: list[dict[TopicPartition, int]] = []
        self.fail_commit = True

    async def getmany(self, timeout_ms: int, max_records: int) -> dict:
        if not self.script:
            self.stop()
            return {}
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self.fail_commit:
            self.fail_commit = False
            raise RequestTimedOutError()
        self.commits.append(offsets)


async def test_fetch_errors_and_failed_batches_are_retried_and_commits_follow_writes(
        monkeypatch) -> None:
    monkeypatch.setattr(recording, "RETRY_SECONDS", 0.0)
    service = recording.Recorder(SimpleNamespace())
    batch = {TP: [message(10), message(11)]}
    service.consumer = Consumer([KafkaConnectionError(), batch, batch, {TP: [message(12)]}],
                               stop=service._stopped.set)
    handled: list[list[int]] = []

    async def handle(records) -> None:
        handled.append([r.offset for r in records])
        if len(handled) == 1:
            raise RuntimeError("a bug while recording")

    service._handle = handle
    await recording.Recorder._consume.fun(service)  # the task's body, run to the end
    consumer = service.consumer
    assert not consumer.script
    # the failed batch was read again from its first offset, then written
    assert handled == [[10, 11], [10, 11], [12]]
    assert consumer.seeks == [(TP, 10)]
    # the first commit failed (Kafka away) and the next one covered its offsets
    assert consumer.commits == [{TP: 13}]
