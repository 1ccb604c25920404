"""The worker's outbox: records handed to the Kafka producer in one batch per partition.

Two kinds of records leave a worker on the hot path: those its agents
produce (lanes, deliveries, status events) and its table writes to their
changelogs. Sending them one at a time through the producer costs a future,
a Faust and an aiokafka call and a small batch per record; in the issue 7
profile that was the largest share of the worker's CPU. Here they queue,
and a hand-over adds everything queued for a partition to the producer's
batch of that partition not yet sent (:func:`waiting_batch`), or to a new
``BatchBuilder`` submitted with ``send_batch``: no future per record, and
batches as big as the records a loop batch made.

- The hot loops hand the queue over after each batch, and the delivery
  batch before it waits for its intents (:meth:`tables.confirmed.ConfirmedTable.confirmed`).
- A record queued when no hand-over is due (an API call, a Faust agent)
  schedules one, so nothing waits for the next batch.
- One hand-over at a time (:attr:`Outbox.lock`), in the order queued: the
  records of a partition keep their order. A batch the producer refused
  puts its records, and those of every new batch after it, back at the head
  of the queue.
- A table hears of the batch future holding its last write per partition
  (``sent``), with that write's place in the batch, to persist its offset.
- Every batch that Kafka did not acknowledge counts in :attr:`Outbox.failures`,
  so a loop can tell that the records of its batch may be lost and read it again.

Under ``exactly_once`` there is no outbox: Faust's sends keep each record in
the transaction of the record that caused it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from typing import Any, Callable, Protocol, Sequence

from aiokafka import TopicPartition
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.producer.message_accumulator import BatchBuilder

from app import metrics
from app.producing import partition_for

logger = logging.getLogger("herald.outbox")

#: The largest record queued: a batch is refused by the broker whole (its
#: ``message.max.bytes`` is 1 MiB by default), so a record over this fails alone, at once.
MAX_RECORD_BYTES = 1_000_000


class WrittenTable(Protocol):
    """What the outbox needs of a table: its changelog topic and to hear of each batch."""

    @property
    def changelog_topic_name(self) -> str: ...

    def sent(self, partition: int, acknowledged: "asyncio.Future[Any]", place: int) -> None: ...


class Kafka(Protocol):
    """What the outbox uses of ``aiokafka.AIOKafkaProducer``."""

    client: Any
    _message_accumulator: Any

    def create_batch(self) -> BatchBuilder: ...

    async def send_batch(self, batch: BatchBuilder, topic: str, *,
                         partition: int) -> "asyncio.Future[Any]": ...


#: topic, partition (``None``: by key), key, value (``None``: a deletion), timestamp in
#: ms (``None``: now), headers, the table whose changelog it is (``None``: not a table's).
Record = tuple[str, int | None, bytes | None, bytes | None, int | None,
               Sequence[tuple[str, bytes]] | None, WrittenTable | None]


class Batch:
    """Records of one partition in one ``BatchBuilder``, and the tables written in it."""

    __slots__ = ("topic", "partition", "builder", "waiting", "records", "tables")

    def __init__(self, topic: str, partition: int, builder: BatchBuilder,
                 waiting: Any = None) -> None:
        self.topic, self.partition, self.builder = topic, partition, builder
        #: The producer's batch this one adds to, not yet sent; ``None``: a new batch.
        self.waiting = waiting
        self.records: list[Record] = []
        #: Each table with a write here, and that write's place in the batch.
        self.tables: dict[WrittenTable, int] = {}

    def append(self, record: Record) -> bool:
        _, _, key, value, timestamp, headers, table = record
        written = self.builder.append(timestamp=timestamp, key=key, value=value,
                                      headers=headers or [])
        if written is None:
            return False  # full, or sent meanwhile
        if table is not None:
            self.tables[table] = written.offset
        self.records.append(record)
        return True


def waiting_batch(kafka: Kafka, topic: str, partition: int) -> Batch | None:
    """The producer's last batch of ``topic[partition]`` not yet sent, to add records to.

    ``send_batch`` waits until the partition's batches before it were sent,
    and the producer has one request in flight per broker: a hand-over
    waited for a request each time (6 of 20 s in the issue 7 benchmark).
    ``send`` appends to that batch instead; so do these. aiokafka keeps it
    open for that (``BatchBuilder.close``), but in its accumulator, not
    behind a public call.
    """
    waiting = kafka._message_accumulator._batches.get(TopicPartition(topic, partition))  # noqa: SLF001
    if not waiting:
        return None
    last = waiting[-1]
    return Batch(topic, partition, last._builder, last)  # noqa: SLF001


class Outbox:
    """The records of one worker not yet handed to the Kafka producer, in order."""

    def __init__(self, kafka: Callable[[], Kafka]) -> None:
        #: The worker's aiokafka producer, once it started.
        self.kafka = kafka
        self.pending: deque[Record] = deque()
        self.lock = asyncio.Lock()
        #: Batches Kafka did not acknowledge, since the worker started.
        self.failures = 0
        self._scheduled = False
        #: Records queued per (agent, topic) not yet counted on ``/metrics``.
        self._queued: Counter[tuple[str, str]] = Counter()

    def add(self, topic: str, partition: int | None, key: bytes | None, value: bytes | None, *,
            timestamp_ms: int | None = None, headers: Sequence[tuple[str, bytes]] | None = None,
            table: WrittenTable | None = None) -> None:
        """Queue a record; a hand-over is scheduled if none is.

        Raises ``MessageSizeTooLargeError`` for a record over :data:`MAX_RECORD_BYTES`.
        """
        size = len(key or b"") + len(value or b"")
        if size > MAX_RECORD_BYTES:
            raise MessageSizeTooLargeError(
                f"a {size}-byte record for {topic} is over the {MAX_RECORD_BYTES} bytes "
                "one record may take")
        self.pending.append((topic, partition, key, value, timestamp_ms, headers, table))
        self._queued[metrics.producing_agent(), topic] += 1
        if not self._scheduled:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # no loop: nothing could send it yet; the next hand-over will
            self._scheduled = True
            loop.create_task(self._hand_over_soon())

    async def _hand_over_soon(self) -> None:
        self._scheduled = False
        try:
            await self.hand_over()
        except Exception:  # noqa: BLE001 - the records stay queued for the next hand-over
            logger.exception("records could not be handed to the Kafka producer; kept queued")

    async def hand_over(self) -> None:
        """Submit every queued record to the producer, one batch per partition.

        Returns once the batches are the producer's (not yet acknowledged).
        Raises what the producer raised; the batch it refused, and every one
        after it, go back to the head of the queue.
        """
        async with self.lock:
            self._count_queued()
            if not self.pending:
                return
            kafka = self.kafka()
            records, self.pending = self.pending, deque()
            try:
                batches = await self._batches(kafka, records)
            except BaseException:
                self.pending.extendleft(reversed(records))
                raise
            try:
                for index, batch in enumerate(batches):
                    if batch.waiting is None:
                        acknowledged = await kafka.send_batch(batch.builder, batch.topic,
                                                              partition=batch.partition)
                    else:  # its records are in the producer's batch already
                        acknowledged = asyncio.shield(batch.waiting.future)
                    acknowledged.add_done_callback(self._count_failure)
                    for table, place in batch.tables.items():
                        table.sent(batch.partition, acknowledged, place)
            except BaseException:
                self.pending.extendleft(reversed([record for batch in batches[index:]
                                                  if batch.waiting is None
                                                  for record in batch.records]))
                raise

    def _count_queued(self) -> None:
        """Count the records queued since the last hand-over on ``/metrics``, by agent."""
        queued, self._queued = self._queued, Counter()
        for (agent, topic), count in queued.items():
            metrics.produced(topic, count, agent=agent)

    async def _batches(self, kafka: Kafka, records: deque[Record]) -> list[Batch]:
        """``records`` in batches, one open per partition, in the order they were queued."""
        partitions: dict[str, list[int]] = {}
        open_batches: dict[tuple[str, int], Batch] = {}
        batches: list[Batch] = []
        for record in records:
            topic, partition, key = record[0], record[1], record[2]
            if partition is None:
                if topic not in partitions:
                    partitions[topic] = sorted(await kafka.client._wait_on_metadata(topic))  # noqa: SLF001
                every = partitions[topic]
                partition = partition_for(key, every, every)
            batch = open_batches.get((topic, partition))
            if batch is None:
                batch = waiting_batch(kafka, topic, partition)
                if batch is not None and batch.append(record):
                    open_batches[topic, partition] = batch
                    batches.append(batch)
                    continue
            elif batch.append(record):
                continue
            batch = open_batches[topic, partition] = Batch(topic, partition,
                                                           kafka.create_batch())
            batches.append(batch)
            batch.append(record)  # the first record always fits
        return batches

    def _count_failure(self, acknowledged: "asyncio.Future[Any]") -> None:
        if acknowledged.cancelled() or acknowledged.exception() is not None:
            self.failures += 1
