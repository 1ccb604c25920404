"""The worker's outbox against a real broker: every record once, in order per partition,
and the offsets the tables are told are the offsets Kafka gave their writes."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from app import outbox as outbox_module
from app.factory import PRODUCER_BATCH_BYTES
from app.outbox import Outbox

PARTITIONS = 4
LOOPS = 3
RECORDS = 1500  # per loop


class Table:
    """Stands in for a table: hears of each batch holding its writes."""

    changelog_topic_name = ""

    def __init__(self) -> None:
        self.batches: list[tuple[int, asyncio.Future[Any], int]] = []

    def sent(self, partition: int, acknowledged: asyncio.Future[Any], place: int) -> None:
        self.batches.append((partition, acknowledged, place))


async def read_all(bootstrap: str, topic: str, count: int) -> dict[int, list[Any]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    found: dict[int, list[Any]] = defaultdict(list)
    try:
        deadline = asyncio.get_running_loop().time() + 60
        while sum(map(len, found.values())) < count:
            assert asyncio.get_running_loop().time() < deadline, "records missing"
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                found[tp.partition] += records
        return found
    finally:
        await consumer.stop()


async def test_records_from_concurrent_loops_and_sends_arrive_once_in_order(
        stack_env: dict[str, str], unique: str, monkeypatch: Any) -> None:
    joined: list[int] = []
    original = outbox_module.waiting_batch

    def waiting_batch(*args: Any) -> Any:
        batch = original(*args)
        if batch is not None:
            joined.append(batch.partition)
        return batch

    monkeypatch.setattr(outbox_module, "waiting_batch", waiting_batch)
    bootstrap = stack_env["HERALD_KAFKA_BOOTSTRAP"]
    topic = f"outbox-{unique}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                max_batch_size=PRODUCER_BATCH_BYTES)
    await producer.start()
    table = Table()
    table.changelog_topic_name = topic
    outbox = Outbox(lambda: producer)
    try:
        async def loop(n: int) -> None:
            # A loop: records queued in batches of 50, some as table writes to a given
            # partition, handed over after each batch while plain sends go on.
            for i in range(RECORDS):
                value = f"loop{n}-{i:05d}".encode()
                if i % 3 == 0:
                    outbox.add(topic, i % PARTITIONS, f"table-{n}".encode(), value, table=table)
                else:
                    outbox.add(topic, None, f"key-{n}-{i % 7}".encode(), value)
                if i % 50 == 49:
                    await outbox.hand_over()
            await outbox.hand_over()

        async def sends() -> None:
            for i in range(300):
                await producer.send(topic, f"send-{i:05d}".encode(), key=b"sender")
                await asyncio.sleep(0)

        await asyncio.gather(*(loop(n) for n in range(LOOPS)), sends())
        await producer.flush()
    finally:
        await producer.stop()

    found = await read_all(bootstrap, topic, LOOPS * RECORDS + 300)
    values = [record.value for records in found.values() for record in records]
    assert len(values) == len(set(values)) == LOOPS * RECORDS + 300  # each once
    for records in found.values():
        # Each key's records in the order they were queued (or sent).
        by_key: dict[bytes, list[bytes]] = defaultdict(list)
        for record in records:
            by_key[record.key].append(record.value)
        assert all(sequence == sorted(sequence) for sequence in by_key.values())
    # The offset a table is told is that of its last write in the batch.
    at = {(p, record.offset): record for p, records in found.items() for record in records}
    assert table.batches
    for partition, acknowledged, place in table.batches:
        record = at[partition, acknowledged.result().offset + place]
        assert record.key.startswith(b"table-")
    assert outbox.failures == 0 and not outbox.pending
    assert joined  # records went into batches the producer was holding (aiokafka's own)
