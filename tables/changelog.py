"""Table writes handed to the Kafka producer by herald instead of Faust's changelog buffer.

Faust sends each table write with ``send_soon``: a future message, a codec
pass, a callback and a buffer that a task drains one write at a time; and
the value is encoded twice, once for the store and once for the changelog.
In the issue 7 profile that cost more than the RocksDB write itself. A
:class:`tables.table.HeraldTable` given a writer encodes the value once,
puts the bytes in the store and queues them here; the agents hand the queue
to the producer after each event or batch (:func:`agents.emitters.drain_changelog`).

The queue is sent in the order the writes were made, by one sender at a time
(:attr:`ChangelogWriter.lock`), so writes to one changelog partition keep
their order. A write that the producer refused stays first in the queue and
is sent again at the next hand-over.

Under ``exactly_once`` tables have no writer: Faust's send keeps each write
in the transaction of the record that caused it.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from typing import Any, Protocol

from app import metrics


class WrittenTable(Protocol):
    """What the writer needs of a table: its changelog topic and to hear of each send."""

    @property
    def changelog_topic_name(self) -> str: ...

    def sent(self, partition: int, acknowledged: "asyncio.Future[Any]") -> None: ...


class Producer(Protocol):
    """Faust's producer (``app.producer``): ``send`` returns the acknowledgement's future."""

    async def send(self, topic: str, key: bytes | None, value: bytes | None,
                   partition: int | None, timestamp: float | None,
                   headers: Any) -> "asyncio.Future[Any]": ...


class ChangelogWriter:
    """The table writes of one worker not yet handed to the Kafka producer, in order."""

    def __init__(self) -> None:
        self.pending: deque[tuple[WrittenTable, int, bytes, bytes | None]] = deque()
        self.lock = asyncio.Lock()

    def add(self, table: WrittenTable, partition: int, key: bytes, value: bytes | None) -> None:
        """Queue a write (``value`` ``None``: a deletion) for ``table``'s changelog partition."""
        self.pending.append((table, partition, key, value))

    async def hand_over(self, producer: Producer) -> None:
        """Send every queued write to ``producer``, oldest first.

        Returns once each write is in the producer's batches (not yet
        acknowledged: each table hears of its write's future through
        ``sent``). Raises what the producer raised; the write it refused,
        and every write after it, stay queued.
        """
        sent: Counter[str] = Counter()
        async with self.lock:
            pending = self.pending
            try:
                while pending:
                    table, partition, key, value = pending[0]
                    topic = table.changelog_topic_name
                    acknowledged = await producer.send(topic, key, value, partition, None, None)
                    pending.popleft()
                    table.sent(partition, acknowledged)
                    sent[topic] += 1
            finally:
                for topic, count in sent.items():
                    metrics.produced(topic, count)
