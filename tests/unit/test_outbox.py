"""The worker's outbox: table writes stored at once, records sent in per-partition batches, in order."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from aiokafka import TopicPartition
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from faust.types import TP, Message

from agents.emitters import faust_event
from schemas.records import Contacts, PushToken
from app.outbox import MAX_RECORD_BYTES, Outbox
from app.producing import partition_for
from tables.confirmed import ConfirmedTable
from tables.table import HeraldTable


class Event:
    """The current event a table write takes its changelog partition from."""

    def __init__(self, partition: int) -> None:
        self.message = SimpleNamespace(topic="notifications", partition=partition)


class Producer:
    """Plays aiokafka's producer: takes batches of real ``BatchBuilder``s, acknowledges them
    with offsets counted per partition, and may refuse one batch."""

    def __init__(self, refuse: int | None = None, partitions: int = 4) -> None:
        self.batches: list[tuple[str, int, list[tuple[bytes | None, bytes | None]]]] = []
        self.acks: list[asyncio.Future[Any]] = []
        self.refuse = refuse
        self.client = SimpleNamespace(_wait_on_metadata=self._wait_on_metadata)
        #: The producer's batches not yet sent, per partition (aiokafka's accumulator).
        self._message_accumulator = SimpleNamespace(_batches={})
        self.partitions = partitions
        self.offsets: dict[tuple[str, int], int] = {}

    async def _wait_on_metadata(self, topic: str) -> set[int]:
        return set(range(self.partitions))

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(16384, 0)

    async def send_batch(self, batch: BatchBuilder, topic: str, *,
                         partition: int) -> asyncio.Future[Any]:
        await asyncio.sleep(0)  # the producer may wait for the partition's last batch
        if self.refuse is not None and len(self.batches) == self.refuse:
            self.refuse = None
            raise OSError("producer closed")
        built = MemoryRecords(bytes(batch._build())).next_batch()  # noqa: SLF001
        records = [(record.key, record.value) for record in built]
        self.batches.append((topic, partition, records))
        ack: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.acks.append(ack)
        return ack

    @property
    def sent(self) -> list[tuple[str, int, bytes | None, bytes | None]]:
        return [(topic, partition, key, value)
                for topic, partition, records in self.batches for key, value in records]

    def acknowledge(self, fail: bool = False) -> None:
        for ack, (topic, partition, records) in zip(self.acks, self.batches):
            if ack.done():
                continue
            if fail:
                ack.set_exception(OSError("request timed out"))
                continue
            base = self.offsets.get((topic, partition), 0)
            self.offsets[topic, partition] = base + len(records)
            ack.set_result(SimpleNamespace(topic=topic, partition=partition, offset=base))


def declare(kind: type[HeraldTable] = HeraldTable, store: str = "memory://",
            datadir: Path | None = None, value_type: Any = None,
            producer: Producer | None = None) -> HeraldTable:
    options = {"datadir": str(datadir)} if datadir else {}
    app = faust.App("writer-test", broker="kafka://127.0.0.1:1", store=store, **options)
    table = app.tables.add(kind(app, name="sends", beacon=app.tables.beacon, key_type=str,
                                value_type=value_type, partitions=4))
    table.key_serializer = "raw"  # as Tables.declare does
    table.changelog_topic = table._new_changelog_topic()  # noqa: SLF001
    table.outbox = Outbox(lambda: producer)
    return table


def write(table: HeraldTable, partition: int, key: str, value: Any) -> None:
    event = Event(partition)
    with faust_event(event):  # type: ignore[arg-type]
        if value is None:
            del table[key]
        else:
            table[key] = value


CHANGELOG = "writer-test-sends-changelog"


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_a_write_is_stored_at_once_and_queued_for_its_events_partition(store: str,
                                                                       tmp_path: Path) -> None:
    table = declare(store=store, datadir=tmp_path)
    write(table, 2, "u-1\x1fn-1\x1fpush", {"state": "sending"})
    write(table, 1, "u-2\x1fn-2\x1fpush", {"state": "sent"})
    write(table, 2, "u-1\x1fn-1\x1fpush", None)
    assert table.get("u-1\x1fn-1\x1fpush") is None
    assert table.get("u-2\x1fn-2\x1fpush") == {"state": "sent"}
    assert [record[:4] + record[6:] for record in table.outbox.pending] == [
        (CHANGELOG, 2, b"u-1\x1fn-1\x1fpush", b'{"state":"sending"}', table),
        (CHANGELOG, 1, b"u-2\x1fn-2\x1fpush", b'{"state":"sent"}', table),
        (CHANGELOG, 2, b"u-1\x1fn-1\x1fpush", None, table),
    ]


def test_a_write_outside_an_event_is_refused() -> None:
    table = declare()
    with pytest.raises(TypeError, match="outside of stream iteration"):
        table["k"] = {"state": "sent"}
    assert not table.outbox.pending and table.get("k") is None


def test_a_record_value_read_from_rocksdb_is_the_record_the_stores_codec_builds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[bytes] = []
    decode = Contacts.decode.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(Contacts, "decode", classmethod(
        lambda cls, raw: decoded.append(raw) or decode(cls, raw)))
    table = declare(store="rocksdb://", datadir=tmp_path, value_type=Contacts)
    value = Contacts(email="a@example.com", phone=None,
                     push_tokens=[PushToken(token="t-1", platform="fcm")])
    write(table, 1, "u-42", value)
    with faust_event(Event(1)):  # type: ignore[arg-type]
        read = table.get("u-42")
        raw = table.data._db_for_partition(1).get(b"u-42")  # noqa: SLF001
    assert decoded == [raw]  # built by the record's own decode, not the codec's field pass
    expected = table.data._decode_value(raw)  # noqa: SLF001 - Faust's codec
    assert type(read) is Contacts and read == expected == value
    assert read.phone is None and read.timezone is None
    assert isinstance(read.push_tokens[0], PushToken) and read.push_tokens[0].token == "t-1"


@pytest.mark.parametrize("value", [{"tokens": 2.5, "at": 1.0}, Contacts(email="a@example.com")])
def test_the_changelog_record_restores_to_the_value_written(value: Any) -> None:
    table = declare(value_type=type(value) if isinstance(value, Contacts) else None)
    write(table, 0, "u-42", value)
    (topic, partition, key, data, *_), = table.outbox.pending
    message = Message(topic=topic, partition=partition, offset=0,
                      timestamp=0.0, timestamp_type=0, headers=[], key=key, value=data,
                      checksum=None)
    schema = table.changelog_topic.schema
    assert schema.loads_key(table.app, message) == "u-42"
    assert schema.loads_value(table.app, message) == value


def test_one_batch_per_partition_in_the_order_queued_and_the_newest_offsets_persisted() -> None:
    async def scenario() -> tuple[Producer, list[tuple[TP, int]]]:
        producer = Producer()
        table = declare(producer=producer)
        persisted: list[tuple[TP, int]] = []
        table.data.set_persisted_offset = lambda tp, offset: persisted.append((tp, offset))
        for n in range(5):
            write(table, n % 2, f"k{n}", {"n": n})
        # Produced records share the queue, keyed ones partitioned as Kafka does.
        table.outbox.add("delivery-events", None, b"n-1", b"QUEUED")
        table.outbox.add("delivery-events", None, b"n-1", b"SENT")
        # Two agents hand over at once: the queue still leaves in the order written.
        await asyncio.gather(table.outbox.hand_over(), table.outbox.hand_over())
        table.persist_offsets()
        assert persisted == []  # nothing acknowledged yet
        producer.acknowledge()
        table.persist_offsets()
        table.persist_offsets()
        return producer, persisted

    producer, persisted = asyncio.run(scenario())
    events = partition_for(b"n-1", [0, 1, 2, 3], [0, 1, 2, 3])
    assert [(topic, partition, [key for key, _ in records])
            for topic, partition, records in producer.batches] == [
        (CHANGELOG, 0, [b"k0", b"k2", b"k4"]),
        (CHANGELOG, 1, [b"k1", b"k3"]),
        ("delivery-events", events, [b"n-1", b"n-1"]),
    ]
    assert [value for *_, value in producer.sent][-2:] == [b"QUEUED", b"SENT"]
    # The last write of each partition: third in its batch at offset 0, second in its.
    assert sorted(persisted) == [(TP(CHANGELOG, 0), 2), (TP(CHANGELOG, 1), 1)]


def test_a_full_batch_goes_on_in_the_next_one_of_its_partition() -> None:
    async def scenario() -> Producer:
        producer = Producer()
        outbox = Outbox(lambda: producer)
        for n in range(100):
            outbox.add("t", 3, f"k{n}".encode(), b"x" * 400)
        await outbox.hand_over()
        return producer

    producer = asyncio.run(scenario())
    assert len(producer.batches) > 1 and {p for _, p, _ in producer.batches} == {3}
    assert [key for *_, key, _ in producer.sent] == [f"k{n}".encode() for n in range(100)]


def test_records_join_the_producers_batch_of_their_partition_not_yet_sent() -> None:
    async def scenario() -> tuple[Producer, Any, list[tuple[TP, int]]]:
        producer = Producer()
        table = declare(producer=producer)
        persisted: list[tuple[TP, int]] = []
        table.data.set_persisted_offset = lambda tp, offset: persisted.append((tp, offset))
        # The producer holds a batch of the changelog's partition 1, with one record
        # (a send) and waiting for the request in flight.
        builder = BatchBuilder(16384, 0)
        builder.append(timestamp=None, key=b"sent-before", value=b"{}", headers=[])
        waiting = SimpleNamespace(_builder=builder,
                                  future=asyncio.get_running_loop().create_future())
        producer._message_accumulator._batches[TopicPartition(CHANGELOG, 1)] = [waiting]
        write(table, 1, "k1", {"n": 1})
        write(table, 0, "k0", {"n": 0})
        write(table, 1, "k2", {"n": 2})
        await table.outbox.hand_over()
        waiting.future.set_result(SimpleNamespace(topic=CHANGELOG, partition=1, offset=40))
        producer.acknowledge()
        await asyncio.sleep(0)
        table.persist_offsets()
        return producer, builder, persisted

    producer, builder, persisted = asyncio.run(scenario())
    # Partition 1's writes went into the waiting batch, after its record; partition 0's
    # in a new one.
    built = MemoryRecords(bytes(builder._build())).next_batch()  # noqa: SLF001
    assert [record.key for record in built] == [b"sent-before", b"k1", b"k2"]
    assert producer.batches == [(CHANGELOG, 0, [(b"k0", b'{"n":0}')])]
    # k2 is third in the batch at offset 40
    assert sorted(persisted) == [(TP(CHANGELOG, 0), 0), (TP(CHANGELOG, 1), 42)]


def test_a_waiting_batch_already_closed_is_left_alone() -> None:
    async def scenario() -> Producer:
        producer = Producer()
        outbox = Outbox(lambda: producer)
        builder = BatchBuilder(16384, 0)
        builder.close()  # full, or being sent
        producer._message_accumulator._batches[TopicPartition("t", 0)] = [
            SimpleNamespace(_builder=builder, future=None)]
        outbox.add("t", 0, b"k", b"v")
        await outbox.hand_over()
        return producer

    assert asyncio.run(scenario()).batches == [("t", 0, [(b"k", b"v")])]


def test_a_refused_batch_stays_queued_with_those_after_it() -> None:
    async def scenario() -> tuple[Producer, Outbox]:
        producer = Producer(refuse=1)
        outbox = Outbox(lambda: producer)
        for n in range(3):
            outbox.add(f"t{n}", 0, f"k{n}".encode(), b"v")
        with pytest.raises(OSError, match="producer closed"):
            await outbox.hand_over()
        assert [record[2] for record in outbox.pending] == [b"k1", b"k2"]
        outbox.add("t1", 0, b"k3", b"v")
        await outbox.hand_over()
        return producer, outbox

    producer, outbox = asyncio.run(scenario())
    assert [key for *_, key, _ in producer.sent] == [b"k0", b"k1", b"k3", b"k2"]
    assert [(topic, [key for key, _ in records]) for topic, _, records in producer.batches] == [
        ("t0", [b"k0"]), ("t1", [b"k1", b"k3"]), ("t2", [b"k2"])]
    assert not outbox.pending


def test_a_record_queued_outside_a_hand_over_leaves_by_itself() -> None:
    async def scenario() -> Producer:
        producer = Producer()
        outbox = Outbox(lambda: producer)
        outbox.add("delivery-events", 0, b"n-1", b"READ")  # as an API call does
        for _ in range(10):
            if producer.batches:
                break
            await asyncio.sleep(0)
        return producer

    assert asyncio.run(scenario()).sent == [("delivery-events", 0, b"n-1", b"READ")]


def test_an_unacknowledged_batch_is_counted_as_a_failure() -> None:
    async def scenario() -> int:
        producer = Producer()
        outbox = Outbox(lambda: producer)
        outbox.add("t", 0, b"k", b"v")
        await outbox.hand_over()
        assert outbox.failures == 0
        producer.acknowledge(fail=True)
        await asyncio.sleep(0)
        return outbox.failures

    assert asyncio.run(scenario()) == 1


def test_a_record_too_big_for_a_batch_is_refused_at_once() -> None:
    outbox = Outbox(lambda: Producer())
    with pytest.raises(MessageSizeTooLargeError, match="over the 1000000 bytes"):
        outbox.add("deliveries.email", None, b"u-1", b"x" * (MAX_RECORD_BYTES + 1))
    assert not outbox.pending


def test_confirmed_hands_queued_intents_over_and_waits_for_their_acknowledgement() -> None:
    async def scenario() -> list[str]:
        producer = Producer()
        table = declare(ConfirmedTable, producer=producer)
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
from tests.unit.test_outbox import Event, declare, write
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


def test_records_are_counted_for_the_agent_that_produced_them() -> None:
    from app import logs, metrics

    def counted() -> float:
        return metrics.EVENTS_OUT.labels("router-bulk", "deliveries.email")._value.get()

    async def scenario() -> None:
        outbox = Outbox(lambda: Producer())
        with logs.event_context(agent="router-bulk"):
            outbox.add("deliveries.email", 0, b"u-1", b"{}")
            outbox.add("deliveries.email", 0, b"u-2", b"{}")
        await outbox.hand_over()  # outside the agent's event, as a loop hands over

    before = counted()
    asyncio.run(scenario())
    assert counted() - before == 2
