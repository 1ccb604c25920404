"""HeraldTable: one store read per lookup; acknowledged changelog offsets saved in batches."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import faust
from faust.types import TP

from tables.table import HeraldTable


def declare() -> HeraldTable:
    app = faust.App("herald-table-test", broker="kafka://127.0.0.1:1", store="memory://")
    return app.tables.add(HeraldTable(app, name="rate", beacon=app.tables.beacon,
                                      key_type=str, value_type=None, partitions=2))


class CountingStore(dict):
    """A store that counts its reads and remembers the offsets written to it."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.offsets: list[tuple[TP, int]] = []

    def get(self, key, default=None):  # noqa: ANN001, ANN201 - dict's own signature
        self.reads += 1
        return super().get(key, default)

    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        self.offsets.append((tp, offset))


def acked(tp: TP, offset: int) -> SimpleNamespace:
    """A changelog batch's future as the outbox hands it to the table, acknowledged."""
    metadata = SimpleNamespace(topic=tp.topic, partition=tp.partition, offset=offset)
    return SimpleNamespace(done=lambda: True, cancelled=lambda: False, exception=lambda: None,
                           result=lambda: metadata)


def with_store(table: HeraldTable) -> CountingStore:
    store = CountingStore()
    table._data = store  # noqa: SLF001 - the store Faust builds lazily
    return store


def test_get_reads_the_store_once_and_falls_back_to_the_default() -> None:
    table = declare()
    store = with_store(table)
    store["u\x1frate\x1fpush"] = {"tokens": 3}
    assert table.get("u\x1frate\x1fpush") == {"tokens": 3}
    assert table.get("nobody") is None
    assert table.get("nobody", {}) == {}
    assert store.reads == 3


def test_offsets_are_kept_until_persisted_then_the_newest_per_partition_is_written() -> None:
    table = declare()
    store = with_store(table)
    first, second = TP("t-rate-changelog", 0), TP("t-rate-changelog", 1)
    # Batches at offsets 4, 5, 2 and 6, with the table's last write at these places in them.
    for tp, base, place in ((first, 4, 0), (first, 5, 2), (second, 2, 0), (first, 6, 3)):
        table.sent(tp.partition, acked(tp, base), place)
    assert store.offsets == []
    table.persist_offsets()
    assert sorted(store.offsets) == [(first, 9), (second, 2)]
    table.persist_offsets()
    assert len(store.offsets) == 2


def test_a_rebalance_persists_the_offsets_before_the_store_lets_partitions_go() -> None:
    table = declare()
    store = with_store(table)
    seen: list[list[tuple[TP, int]]] = []

    async def store_rebalance(*args: object) -> None:
        seen.append(list(store.offsets))

    store.on_rebalance = store_rebalance  # type: ignore[attr-defined]
    tp = TP("t-rate-changelog", 1)
    table.sent(tp.partition, acked(tp, 41), 0)
    asyncio.run(table.on_rebalance(set(), {tp}, set()))
    assert seen == [[(tp, 41)]]


class RecordingReader:
    """Stands in for the changelog reader: remembers what a rebalance asked it to restore."""

    def __init__(self) -> None:
        self.calls: list[tuple[set[TP], bool]] = []

    async def restore(self, table: HeraldTable, tps: set[TP], wanted) -> int:  # noqa: ANN001
        self.calls.append((set(tps), wanted()))
        return 0


def test_a_rebalance_hands_the_reader_only_the_active_partitions_of_its_changelog() -> None:
    from faust.assignor.client_assignment import ClientAssignment

    table = declare()
    reader = table.changelog_reader = RecordingReader()  # type: ignore[assignment]
    topic = table.changelog_topic.get_topic_name()
    active, standby, stream = TP(topic, 0), TP(topic, 1), TP("notifications", 0)
    table.app.assignor._assignment = ClientAssignment(  # noqa: SLF001 - as a rebalance leaves it
        actives={topic: [0], "notifications": [0]}, standbys={topic: [1]})
    table.app.consumer_generation_id = 3
    asyncio.run(table.on_rebalance({active, standby, stream}, set(), {active}, generation_id=3))
    assert reader.calls == [({active}, True)]
    table.app.consumer_generation_id = 4
    asyncio.run(table.on_rebalance({active, standby, stream}, set(), set(), generation_id=3))
    assert reader.calls[-1] == ({active}, False)
