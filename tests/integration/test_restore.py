"""Changelog partitions read straight into a table's RocksDB store, against a real broker."""

from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator

import faust
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from faust.types import TP

from tables.restore import ChangelogReader
from tables.table import HeraldTable


@pytest.fixture
async def reader(stack_env: dict[str, str]) -> AsyncIterator[ChangelogReader]:
    shared = ChangelogReader(stack_env["HERALD_KAFKA_BOOTSTRAP"])
    yield shared
    await shared.stop()


def rocksdb_table(app_id: str, datadir: Path) -> HeraldTable:
    app = faust.App(app_id, broker="kafka://127.0.0.1:1", store="rocksdb://",
                    datadir=str(datadir))
    table = app.tables.add(HeraldTable(app, name="contacts", beacon=app.tables.beacon,
                                       key_type=str, value_type=None, partitions=2))
    table.key_serializer = "raw"
    return table


@pytest.fixture
async def table(stack_env: dict[str, str], tmp_path: Path, unique: str) -> HeraldTable:
    """A table on RocksDB whose two-partition changelog exists and is empty."""
    declared = rocksdb_table(f"restore-{unique}", tmp_path)
    admin = AIOKafkaAdminClient(bootstrap_servers=stack_env["HERALD_KAFKA_BOOTSTRAP"])
    await admin.start()
    try:
        await admin.create_topics([NewTopic(declared.changelog_topic.get_topic_name(), 2, 1,
                                            topic_configs={"cleanup.policy": "compact"})])
    finally:
        await admin.close()
    return declared


async def write(producer: AIOKafkaProducer, topic: str,
                records: list[tuple[int, bytes, bytes | None]]) -> None:
    for partition, key, value in records:
        await producer.send_and_wait(topic, value, key=key, partition=partition)


async def test_a_changelog_is_read_into_the_partitions_of_the_store(
        producer: AIOKafkaProducer, reader: ChangelogReader, table: HeraldTable) -> None:
    # Given a changelog where a key was overwritten and another deleted
    topic = table.changelog_topic.get_topic_name()
    await write(producer, topic, [
        (0, b"u-1", b'{"email": "old@example.org"}'), (0, b"u-2", b'{"email": "b@example.org"}'),
        (0, b"u-1", b'{"email": "new@example.org"}'), (0, b"u-2", None),
        (1, b"u-3", b'{"sms": "+15005550006"}')])
    tps = {TP(topic, 0), TP(topic, 1)}

    # When the reader restores both partitions
    written = await reader.restore(table, tps, wanted=lambda: True)

    # Then each partition holds the newest value of each key, and the offset it reached
    store = table.data
    first, second = store._db_for_partition(0), store._db_for_partition(1)  # noqa: SLF001
    assert written == 5
    assert first[b"u-1"] == b'{"email": "new@example.org"}'
    assert first.get(b"u-2") is None
    assert second[b"u-3"] == b'{"sms": "+15005550006"}'
    assert store.persisted_offset(TP(topic, 0)) == 3
    assert store.persisted_offset(TP(topic, 1)) == 0
    assert table.get("u-1") == {"email": "new@example.org"}

    # And a later restore reads only what came after
    await write(producer, topic, [(1, b"u-4", b'{"email": "d@example.org"}')])
    assert await reader.restore(table, tps, wanted=lambda: True) == 1
    assert store.persisted_offset(TP(topic, 1)) == 1
    assert await reader.restore(table, tps, wanted=lambda: True) == 0


async def test_a_read_no_longer_wanted_stops_and_keeps_the_saved_offset(
        producer: AIOKafkaProducer, reader: ChangelogReader, table: HeraldTable) -> None:
    # Given a changelog with a record the store has not read
    topic = table.changelog_topic.get_topic_name()
    await write(producer, topic, [(0, b"u-1", b'{"email": "a@example.org"}')])

    # When a newer rebalance has made the read pointless before it starts
    written = await reader.restore(table, {TP(topic, 0)}, wanted=lambda: False)

    # Then nothing is written and Faust's recovery will read from the start
    assert written == 0
    assert table.data.persisted_offset(TP(topic, 0)) is None
    assert table.data._db_for_partition(0).get(b"u-1") is None  # noqa: SLF001


async def test_a_memory_store_is_left_to_faust(reader: ChangelogReader, unique: str) -> None:
    app = faust.App(f"restore-{unique}", broker="kafka://127.0.0.1:1", store="memory://")
    table = app.tables.add(HeraldTable(app, name="contacts", beacon=app.tables.beacon,
                                       key_type=str, value_type=None, partitions=2))
    topic = table.changelog_topic.get_topic_name()
    assert await reader.restore(table, {TP(topic, 0)}, wanted=lambda: True) == 0
