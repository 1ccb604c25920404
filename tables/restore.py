"""Reading a table's changelog straight into its RocksDB partitions, before Faust's recovery.

Faust restores a table by passing each changelog record through its consumer,
a channel, a queue and its recovery loop, one record at a time (about 7,200
records/s on the issue 7 machine: 229 s for a million users). The stored
form of a row is the changelog record's own key and value bytes, so a
partition can be restored without decoding anything: read it with a plain
consumer, write each fetched batch to the partition's database in one
RocksDB write batch together with the offset it reached.

:meth:`ChangelogReader.restore` runs when a rebalance hands the table its
partitions, before Faust's recovery reads where each partition's saved offset
says to start. That recovery then finds nothing or little left, and still
finishes the job as it always did: records written after the read, standby
partitions, and every table whose store is not RocksDB (the memory store in
agent tests).

What makes this safe:

- a batch and the offset it reached are one atomic write, so a read cut off
  by a crash or a new rebalance resumes where it stopped;
- the read is ``read_committed``, so under ``exactly_once`` an aborted
  transaction's writes are skipped as Faust's consumer skips them;
- Faust's recovery takes its starting offsets from the store after this, and
  ignores any record at or below them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Iterable, Protocol

import rocksdict
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from faust.stores.rocksdb import Store as RocksDBStore
from faust.types import TP
from mode import Service

logger = logging.getLogger("herald.restore")

#: The longest one fetch may wait for records before the read checks it is still wanted.
FETCH_WAIT_MS = 500


class RestorableTable(Protocol):
    """What :meth:`ChangelogReader.restore` needs of a table."""

    name: str
    data: Any


def store_rows(records: Iterable[ConsumerRecord[bytes, bytes]], batch: Any) -> None:
    """Add changelog ``records`` to a RocksDB ``batch`` as Faust's store keeps them."""
    for record in records:
        if record.value is None:
            batch.delete(record.key)
        else:
            batch.put(record.key, record.value)


def next_offset(persisted: int | None) -> int:
    """Where reading a partition resumes after the ``persisted`` offset (none: the start)."""
    return 0 if persisted is None else persisted + 1


def restorable(table: RestorableTable) -> bool:
    """Whether ``table`` keeps its rows in RocksDB, the store this reader writes."""
    store = table.data
    return isinstance(store, RocksDBStore) and bool(store.use_rocksdict)


class ChangelogReader(Service):
    """One plain consumer, shared by the tables, that restores changelog partitions."""

    def __init__(self, bootstrap: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bootstrap = bootstrap
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    async def _consumer_started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                auto_offset_reset="earliest", isolation_level="read_committed")
            await consumer.start()
            self._consumer = consumer
        return self._consumer

    async def on_stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def restore(self, table: RestorableTable, tps: Iterable[TP],
                      wanted: Callable[[], bool]) -> int:
        """Bring changelog partitions ``tps`` of ``table`` up to their ends; the records written.

        ``wanted`` is asked before each fetch: a newer rebalance or a stop ends
        the read early, keeping what it wrote. Never raises: whatever is left,
        Faust's recovery reads as it always does.
        """
        ordered = sorted(tps)
        if not ordered or not restorable(table):
            return 0
        async with self._lock:
            started = time.monotonic()
            try:
                count = await self._read(table.data, ordered, wanted)
            except Exception as exc:  # noqa: BLE001 - Faust's recovery reads what is left
                logger.warning("table %s: reading the changelog directly failed (%r); "
                               "Faust's recovery reads the rest", table.name, exc)
                return 0
            finally:
                if self._consumer is not None:
                    # Not unsubscribe(): aiokafka's fetch task fails on a missing subscription.
                    self._consumer.assign([])
            if count:
                logger.info("table %s: %d changelog records restored in %.1fs",
                            table.name, count, time.monotonic() - started)
            return count

    async def _read(self, store: RocksDBStore, tps: list[TP], wanted: Callable[[], bool]) -> int:
        consumer = await self._consumer_started()
        partitions = [TopicPartition(tp.topic, tp.partition) for tp in tps]
        ends = await consumer.end_offsets(partitions)
        starts = {tp: next_offset(store.persisted_offset(tp)) for tp in partitions}
        left = {tp: ends[tp] for tp in partitions if ends[tp] > starts[tp]}
        if not left:
            return 0
        consumer.assign(list(left))
        for tp in left:
            consumer.seek(tp, starts[tp])
        count = 0
        while left and wanted():
            fetched = await consumer.getmany(timeout_ms=FETCH_WAIT_MS)
            for tp, records in fetched.items():
                count += self._write(store, tp, records, await consumer.position(tp))
            for tp in list(left):
                if await consumer.position(tp) >= left[tp]:
                    del left[tp]
        return count

    @staticmethod
    def _write(store: RocksDBStore, tp: TopicPartition,
               records: list[ConsumerRecord[bytes, bytes]], position: int) -> int:
        batch = rocksdict.WriteBatch(raw_mode=True)
        store_rows(records, batch)
        # The position, not the last record: transaction markers take offsets too.
        batch.put(store.offset_key, str(position - 1).encode())
        store._db_for_partition(tp.partition).write(batch)  # noqa: SLF001
        return len(records)
