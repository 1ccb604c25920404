"""Table writes through herald's changelog writer: stored at once, sent in order, restorable."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust.types import TP, Message

from agents.emitters import faust_event
from schemas.records import Contacts
from tables.changelog import ChangelogWriter
from tables.confirmed import ConfirmedTable
from tables.table import HeraldTable


class Event:
    """The current event a table write takes its changelog partition from."""

    def __init__(self, partition: int) -> None:
        self.message = SimpleNamespace(topic="notifications", partition=partition)


class Producer:
    """Plays the Kafka producer: records each send and hands back its acknowledgement."""

    def __init__(self, refuse: int | None = None) -> None:
        self.sent: list[tuple[str, bytes, bytes | None, int]] = []
        self.acks: list[asyncio.Future[Any]] = []
        self.refuse = refuse

    async def send(self, topic: str, key: bytes, value: bytes | None, partition: int,
                   timestamp: Any, headers: Any) -> asyncio.Future[Any]:
        await asyncio.sleep(0)  # the producer may wait for room in its batch
        if self.refuse is not None and len(self.sent) == self.refuse:
            self.refuse = None
            raise OSError("producer closed")
        self.sent.append((topic, key, value, partition))
        ack: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.acks.append(ack)
        return ack

    def acknowledge(self) -> None:
        for offset, (ack, (topic, _, _, partition)) in enumerate(zip(self.acks, self.sent)):
            if not ack.done():
                ack.set_result(SimpleNamespace(topic=topic, partition=partition, offset=offset))


def declare(kind: type[HeraldTable] = HeraldTable, store: str = "memory://",
            datadir: Path | None = None, value_type: Any = None) -> HeraldTable:
    options = {"datadir": str(datadir)} if datadir else {}
    app = faust.App("writer-test", broker="kafka://127.0.0.1:1", store=store, **options)
    table = app.tables.add(kind(app, name="sends", beacon=app.tables.beacon, key_type=str,
                                value_type=value_type, partitions=4))
    table.key_serializer = "raw"  # as Tables.declare does
    table.changelog_topic = table._new_changelog_topic()  # noqa: SLF001
    table.writer = ChangelogWriter()
    return table


def write(table: HeraldTable, partition: int, key: str, value: Any) -> None:
    event = Event(partition)
    with faust_event(event):  # type: ignore[arg-type]
        if value is None:
            del table[key]
        else:
            table[key] = value


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_a_write_is_stored_at_once_and_queued_for_its_events_partition(store: str,
                                                                       tmp_path: Path) -> None:
    table = declare(store=store, datadir=tmp_path)
    write(table, 2, "u-1\x1fn-1\x1fpush", {"state": "sending"})
    write(table, 1, "u-2\x1fn-2\x1fpush", {"state": "sent"})
    write(table, 2, "u-1\x1fn-1\x1fpush", None)
    assert table.get("u-1\x1fn-1\x1fpush") is None
    assert table.get("u-2\x1fn-2\x1fpush") == {"state": "sent"}
    assert [(partition, key, value) for _, partition, key, value in table.writer.pending] == [
        (2, b"u-1\x1fn-1\x1fpush", b'{"state":"sending"}'),
        (1, b"u-2\x1fn-2\x1fpush", b'{"state":"sent"}'),
        (2, b"u-1\x1fn-1\x1fpush", None),
    ]


def test_a_write_outside_an_event_is_refused() -> None:
    table = declare()
    with pytest.raises(TypeError, match="outside of stream iteration"):
        table["k"] = {"state": "sent"}
    assert not table.writer.pending and table.get("k") is None


@pytest.mark.parametrize("value", [{"tokens": 2.5, "at": 1.0}, Contacts(email="a@example.com")])
def test_the_changelog_record_restores_to_the_value_written(value: Any) -> None:
    table = declare(value_type=type(value) if isinstance(value, Contacts) else None)
    write(table, 0, "u-42", value)
    (_, partition, key, data), = table.writer.pending
    message = Message(topic=table.changelog_topic_name, partition=partition, offset=0,
                      timestamp=0.0, timestamp_type=0, headers=[], key=key, value=data,
                      checksum=None)
    schema = table.changelog_topic.schema
    assert schema.loads_key(table.app, message) == "u-42"
    assert schema.loads_value(table.app, message) == value


def test_hand_over_sends_every_write_in_order_and_the_newest_offsets_are_persisted() -> None:
    async def scenario() -> tuple[Producer, list[tuple[TP, int]]]:
        table = declare()
        persisted: list[tuple[TP, int]] = []
        table.data.set_persisted_offset = lambda tp, offset: persisted.append((tp, offset))
        for n in range(3):
            write(table, n % 2, f"k{n}", {"n": n})
        producer = Producer()
        # Two agents hand over at once: the queue still leaves in the order written.
        await asyncio.gather(table.writer.hand_over(producer), table.writer.hand_over(producer))
        table.persist_offsets()
        assert persisted == []  # nothing acknowledged yet
        producer.acknowledge()
        table.persist_offsets()
        table.persist_offsets()
        return producer, persisted

    producer, persisted = asyncio.run(scenario())
    assert [key for _, key, _, _ in producer.sent] == [b"k0", b"k1", b"k2"]
    assert {topic for topic, _, _, _ in producer.sent} == {"writer-test-sends-changelog"}
    topic = "writer-test-sends-changelog"
    assert sorted(persisted) == [(TP(topic, 0), 2), (TP(topic, 1), 1)]


def test_a_refused_write_stays_queued_with_those_after_it() -> None:
    async def scenario() -> Producer:
        table = declare()
        for n in range(3):
            write(table, 0, f"k{n}", {"n": n})
        producer = Producer(refuse=1)
        with pytest.raises(OSError, match="producer closed"):
            await table.writer.hand_over(producer)
        assert [key for _, _, key, _ in table.writer.pending] == [b"k1", b"k2"]
        await table.writer.hand_over(producer)
        return producer

    producer = asyncio.run(scenario())
    assert [key for _, key, _, _ in producer.sent] == [b"k0", b"k1", b"k2"]


def test_confirmed_hands_queued_intents_over_and_waits_for_their_acknowledgement() -> None:
    async def scenario() -> list[str]:
        table = declare(ConfirmedTable)
        producer = Producer()
        table.app.producer = producer  # type: ignore[misc]
        write(table, 0, "u\x1fn-1\x1fpush", {"state": "sending"})
        log: list[str] = []

        async def batch() -> None:
            await table.confirmed()  # type: ignore[attr-defined]
            log.append(f"confirmed after {len(producer.sent)} sent")

        waiter = asyncio.create_task(batch())
        for _ in range(5):
            await asyncio.sleep(0)
        log.append(f"{len(producer.sent)} sent, none acknowledged")
        producer.acknowledge()
        await waiter
        return log

    assert asyncio.run(scenario()) == ["1 sent, none acknowledged", "confirmed after 1 sent"]


def test_reads_in_an_event_go_to_its_partition_and_outside_one_to_every_partition(
        tmp_path: Path) -> None:
    table = declare(store="rocksdb://", datadir=tmp_path)
    write(table, 1, "u-7", {"state": "sent"})
    assert table.get("u-7") == {"state": "sent"}  # no event: every partition searched
    with faust_event(Event(1)):  # type: ignore[arg-type]
        assert table.get("u-7") == {"state": "sent"}
    with faust_event(Event(2)):  # type: ignore[arg-type]
        assert table.get("u-7") is None


CRASH = """
import os, signal, sys
sys.path.insert(0, {root!r})
from pathlib import Path
from types import SimpleNamespace
from faust.types import TP
from tests.unit.test_changelog_writer import Event, declare, write
table = declare(store="rocksdb://", datadir=Path({datadir!r}))
write(table, 0, "u-1", {{"state": "sending"}})
table.data.set_persisted_offset(TP(table.changelog_topic_name, 0), 41)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_after_a_crash_the_persisted_offset_is_never_ahead_of_the_rows(tmp_path: Path) -> None:
    # Killed before RocksDB flushed: the row and the offset survive together (both in
    # its write-ahead log) or are lost together; an offset without its row would make
    # the restore skip the row. Writing rows without the log but the offset with it fails.
    import subprocess
    import sys

    root = str(Path(__file__).resolve().parents[2])
    killed = subprocess.run([sys.executable, "-c", CRASH.format(root=root, datadir=str(tmp_path))],
                            cwd=root, capture_output=True, check=False)
    assert killed.returncode == -9, killed.stderr.decode()
    table = declare(store="rocksdb://", datadir=tmp_path)
    offset = table.data.persisted_offset(TP(table.changelog_topic_name, 0))
    with faust_event(Event(0)):  # type: ignore[arg-type]
        row = table.get("u-1")
    assert (offset, row) in ((None, None), (41, {"state": "sending"}))
