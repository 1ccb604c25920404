"""The ``faust.Table`` every herald table is: one store read per lookup, writes sent by herald.

Per-record costs of Faust's table that showed in the issue 7 profile:

- ``table.get(key)`` asks the store twice (``key in store``, then
  ``store[key]``: two RocksDB reads) and counts the read for Faust's
  sensors, which herald does not use. :meth:`HeraldTable.get` asks once.
- The store's codec builds a record value (``contacts``, ``preferences``)
  with Faust's per-field pass, about 8 us a read; a herald record's
  :meth:`~schemas.records.Model.decode` builds the same record in a fifth
  of that.
- A write went through Faust's changelog machinery: a future message, a
  codec pass, a callback and a buffer drained one write at a time, and the
  value encoded twice. A table given the worker's :attr:`HeraldTable.outbox`
  (:mod:`app.outbox`) encodes the value once, puts the bytes in the store
  and queues them for the changelog partition of the current event, as
  Faust does.
- Reads and writes in an event go straight to the event's partition
  database, as Faust's do, without the key index Faust keeps beside them
  (a locked LRU cache, only a shortcut for lookups made outside an event,
  which search every partition without it).
- Each changelog write, once Kafka acknowledged it, wrote its offset to the
  partition's RocksDB database (Faust's "persisted offset": where a restart
  resumes reading the changelog). Here the outbox hands each table the
  future of each batch with its writes (:meth:`HeraldTable.sent`); the newest per partition
  is kept, and its offset written once acknowledged, every
  :data:`PERSIST_SECONDS`, before a rebalance and at stop. A crash can leave the saved offset up to that long
  behind, so a restart re-reads a little more of the changelog: each record
  re-applied sets the value it already has, and the newest record of a key
  wins, so the table ends the same.

Under ``exactly_once`` (no outbox) Faust's own writes and bookkeeping are kept as they are.

After a rebalance, and before Faust's recovery, the table's active changelog
partitions are read straight into the store (:mod:`tables.restore`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust
from faust.stores.rocksdb import Store as RocksDBStore
from faust.streams import current_event
from faust.types import TP
from mode import Service

from app.outbox import Outbox
from schemas.records import Model
from tables.restore import ChangelogReader

#: How often the newest acknowledged changelog offsets are written to the store.
PERSIST_SECONDS = 1.0


class HeraldTable(faust.Table):
    """A ``faust.Table`` with a cheaper ``get``, batched persisted offsets and a bulk restore."""

    #: Reads assigned changelog partitions into the store before Faust's recovery; none in
    #: tests that build a table alone, which then restore the way Faust does.
    changelog_reader: ChangelogReader | None = None
    #: Queues this table's changelog writes; none under ``exactly_once`` (and in tests
    #: that build a table alone), where writes go through Faust's ``send_soon``.
    outbox: Outbox | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: The newest changelog batch per partition and this table's last write's place in
        #: it, until it is acknowledged and persisted.
        self._newest: dict[int, tuple[asyncio.Future[Any], int]] = {}
        value_type = self.value_type
        #: Builds a value read from RocksDB; ``None``: the store's codec does.
        self._decode_model = value_type.decode if (
            isinstance(value_type, type) and issubclass(value_type, Model)
            and self.value_serializer == "json") else None

    def get(self, key: Any, default: Any = None) -> Any:
        """The value of ``key``, or ``default``: one read of the store."""
        store = self.data
        event = current_event()
        if event is not None and isinstance(store, RocksDBStore):
            raw = store._db_for_partition(event.message.partition).get(  # noqa: SLF001
                self._key_bytes(store, key))
            if raw is None:
                value = None
            elif self._decode_model is not None:
                value = self._decode_model(raw)
            else:
                value = store._decode_value(raw)  # noqa: SLF001
        else:
            value = store.get(key)
        return default if value is None else value

    def _key_bytes(self, store: Any, key: Any) -> bytes:
        if type(key) is str and self.key_serializer == "raw":
            return key.encode()
        return bytes(store._encode_key(key))  # noqa: SLF001 - the store's own codec

    def __setitem__(self, key: Any, value: Any) -> None:
        if self.outbox is None:
            super().__setitem__(key, value)
        else:
            self._write(key, value)

    def __delitem__(self, key: Any) -> None:
        if self.outbox is None:
            super().__delitem__(key)
        else:
            self._write(key, None)

    def _write(self, key: Any, value: Any) -> None:
        """Store ``value`` (``None``: delete ``key``) and queue it for the changelog."""
        assert self.outbox is not None
        event = current_event()
        if event is None:
            raise TypeError("Cannot modify table key from outside of stream iteration")
        store = self.data
        partition = event.message.partition
        key_bytes = self._key_bytes(store, key)
        value_bytes = None if value is None else store._encode_value(value)  # noqa: SLF001
        if isinstance(store, RocksDBStore):  # the bytes just encoded
            if value_bytes is None:
                store._del(key_bytes)  # noqa: SLF001 - from whichever partition holds it
            else:
                store._db_for_partition(partition).put(key_bytes, value_bytes)  # noqa: SLF001
        elif value is None:
            store.pop(key, None)
        else:
            store[key] = value
        self.outbox.add(self.changelog_topic_name, partition, key_bytes, value_bytes, table=self)

    def sent(self, partition: int, acknowledged: asyncio.Future[Any], place: int) -> None:
        """A batch of ``partition`` of the changelog, with this table's last write at
        ``place`` in it, was handed to the producer."""
        self._newest[partition] = (acknowledged, place)

    def persist_offsets(self) -> None:
        """Write the newest acknowledged changelog offset of each partition to the store."""
        for partition, (acknowledged, place) in list(self._newest.items()):
            if not acknowledged.done():
                continue  # an older offset may be persisted later; behind is safe
            del self._newest[partition]
            if not acknowledged.cancelled() and acknowledged.exception() is None:
                sent = acknowledged.result()  # the batch's first offset
                self.data.set_persisted_offset(TP(sent.topic, sent.partition),
                                               sent.offset + place)

    @Service.timer(PERSIST_SECONDS)
    async def _persist_offsets_now_and_then(self) -> None:
        self.persist_offsets()

    async def on_rebalance(self, assigned: set[TP], revoked: set[TP],
                           newly_assigned: set[TP], generation_id: int = 0) -> None:
        # Before the store lets revoked partitions go and recovery reads the offsets.
        self.persist_offsets()
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)
        if self.changelog_reader is not None:
            await self.changelog_reader.restore(
                self, self.active_changelog_partitions(assigned),
                wanted=lambda: self.app.consumer_generation_id == generation_id
                and not self.should_stop)

    def active_changelog_partitions(self, assigned: set[TP]) -> set[TP]:
        """The partitions of this table's changelog in ``assigned`` that this worker serves
        (a standby partition is left to Faust, which reads it continuously)."""
        topics = self.changelog_topic.topics
        standbys = self.app.assignor.assigned_standbys()
        return {tp for tp in assigned if tp.topic in topics and tp not in standbys}

    async def on_stop(self) -> None:
        self.persist_offsets()
        await super().on_stop()
