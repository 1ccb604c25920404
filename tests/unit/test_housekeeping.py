"""Housekeeping touches only the rows its tick's partition owns, and sweeps big tables in chunks."""

import pytest

from agents import housekeeping
from agents.housekeeping import Sweep, chunk_of, digest_notification, rows_of, sweep
from rules.digest import add_item, digest_id
from rules.partitioning import partition_for
from tables.keys import compose


def test_rows_of_a_partition_are_the_rows_its_users_own():
    # Given rows of many users in one table
    table = {compose(f"u-{i}", "k"): i for i in range(200)}
    # When each partition takes its rows
    taken = {p: dict(rows_of(table, p, 8)) for p in range(8)}
    # Then every row is taken exactly once, by its user's partition
    assert sum(len(rows) for rows in taken.values()) == 200
    for p, rows in taken.items():
        assert all(partition_for(key.split("\x1f")[0], 8) == p for key in rows)


def test_rows_of_may_delete_while_iterating():
    table = {compose("u-1", str(i)): i for i in range(10)}
    for key, _ in rows_of(table, partition_for("u-1", 8), 8):
        del table[key]
    assert table == {}


def test_a_digest_becomes_one_released_low_notification():
    batch = add_item(None, {"id": "n-1", "title": "A", "body": "a", "created_at": "t",
                            "data": {}}, now=100.0, window=60.0)
    digest = digest_notification(compose("u-1", "news"), batch)
    assert (digest.user_id, digest.category, digest.priority, digest.template) == (
        "u-1", "news", "low", "digest")
    assert digest.released and digest.digest
    assert digest.id == digest_id("u-1", "news", batch["window_end"])
    assert digest.data["count"] == 1


class SortedDb(dict):
    """A RocksDB database as far as a sweep reads it: items in key order, from a key on."""

    def items(self, from_key: bytes | None = None):  # noqa: ANN201 - rocksdict's signature
        return iter(sorted((k, v) for k, v in super().items()
                           if from_key is None or k >= from_key))


class PartitionedStore:
    """Faust's RocksDB store as housekeeping sees it: one database per partition."""

    offset_key = b"__faust\0offset__"

    def __init__(self, rows: dict[str, int], partitions: int) -> None:
        self.dbs: dict[int, SortedDb] = {p: SortedDb({self.offset_key: b"7"})
                                         for p in range(partitions)}
        for key, value in rows.items():
            owner = key.split("\x1f")[0]
            self.dbs[partition_for(owner, partitions)][key.encode()] = str(value).encode()
        self.opened: list[int] = []

    def _db_for_partition(self, partition: int) -> SortedDb:
        self.opened.append(partition)
        return self.dbs[partition]

    def _decode_key(self, key: bytes) -> str:
        return key.decode()

    def _decode_value(self, value: bytes) -> int:
        return int(value)


class Table(dict):
    def __init__(self, store: PartitionedStore) -> None:
        super().__init__()
        self.data = store

    def __delitem__(self, key: str) -> None:
        owner = key.split("\x1f")[0]
        del self.data.dbs[partition_for(owner, len(self.data.dbs))][key.encode()]

    def items(self):  # noqa: D102 - every partition's rows: what must not be read
        raise AssertionError("read the whole table")


def test_a_partitioned_store_is_read_only_in_the_ticks_partition():
    rows = {compose(f"u-{i}", "k"): i for i in range(200)}
    store = PartitionedStore(rows, 8)
    taken = dict(rows_of(Table(store), 3, 8))
    assert store.opened == [3]
    assert taken == {key: value for key, value in rows.items()
                     if partition_for(key.split("\x1f")[0], 8) == 3}


def test_a_chunk_is_read_in_key_order_from_the_cursor_and_names_the_next_start():
    rows = {compose(f"u-{i}", "k"): i for i in range(400)}
    store = PartitionedStore(rows, 8)
    mine = sorted(k for k in rows if partition_for(k.split("\x1f")[0], 8) == 5)
    first, following = chunk_of(Table(store), 5, 8, None, limit=10)
    assert [k for k, _ in first] == mine[:10]
    assert following == mine[10].encode()
    second, _ = chunk_of(Table(store), 5, 8, following, limit=10)
    assert [k for k, _ in second] == mine[10:20]
    assert set(store.opened) == {5}


def test_a_sweep_purges_a_big_partition_a_chunk_per_tick_then_rests(monkeypatch):
    monkeypatch.setattr(housekeeping, "SWEEP_ROWS", 7)
    # Even values are done, odd ones are not.
    rows = {compose("u-1", f"{i:03d}"): i for i in range(30)}
    store = PartitionedStore(rows, 8)
    table, partition, state = Table(store), partition_for("u-1", 8), Sweep()
    left = []
    for tick in range(6):
        sweep(table, partition, 8, state, now=1000.0 + tick, period=60.0,
              done=lambda value: value % 2 == 0)
        left.append(len(store.dbs[partition]) - 1)
    # 30 rows in chunks of 7: five ticks to sweep all, then the sweep rests.
    assert left == [26, 23, 19, 16, 15, 15]
    assert state.cursor is None
    store.dbs[partition][compose("u-1", "new").encode()] = b"2"
    sweep(table, partition, 8, state, now=1059.0, period=60.0, done=lambda value: value % 2 == 0)
    assert len(store.dbs[partition]) - 1 == 16          # before its period: not again
    for tick in range(3):                               # the next sweep finds it
        sweep(table, partition, 8, state, now=1060.0 + tick, period=60.0,
              done=lambda value: value % 2 == 0)
    assert len(store.dbs[partition]) - 1 == 15


def test_a_sweep_of_a_memory_table_takes_sorted_chunks_of_its_partition(monkeypatch):
    monkeypatch.setattr(housekeeping, "SWEEP_ROWS", 4)
    table = {compose(f"u-{i}", "k"): i for i in range(100)}
    partition = partition_for("u-1", 8)
    mine = {k for k in table if partition_for(k.split("\x1f")[0], 8) == partition}
    state = Sweep()
    for tick in range(len(mine) // 4 + 1):
        sweep(table, partition, 8, state, now=float(tick), period=60.0, done=lambda _: True)
    assert not mine & set(table)
    assert len(table) == 100 - len(mine)


@pytest.mark.parametrize(("entry", "settled"), [
    ({"state": "sent", "at": 1000.0}, True),
    ({"state": "dead", "at": 1000.0}, True),
    ({"state": "failed", "at": 1000.0}, True),
    ({"state": "unknown", "at": 1000.0}, True),
    ({"state": "sent", "at": 1000.5}, False),           # inside the retention
    ({"state": "sending", "at": 0.0}, False),           # an open intent stays, however old
])
def test_a_sends_row_goes_after_the_retention_unless_its_outcome_is_open(entry, settled):
    from tables.sends import is_settled

    assert is_settled(entry, now=1100.0, retention_seconds=100.0) is settled


def test_a_chunk_reads_faust_s_real_rocksdb_store_from_the_cursor(tmp_path):
    import faust

    app = faust.App("sweep-test", broker="kafka://127.0.0.1:1", store="rocksdb://",
                    tabledir=str(tmp_path))
    table = app.Table("dedup", key_type=str, value_type=None, partitions=8)
    table.key_serializer = "raw"
    store = table.data
    partition = partition_for("u-1", 8)
    db = store._db_for_partition(partition)  # noqa: SLF001
    db[store.offset_key] = b"41"
    for i in range(25):
        db[compose("u-1", f"{i:02d}").encode()] = store._encode_value({"n": i})  # noqa: SLF001
    chunks, cursor = [], None
    while True:
        rows, cursor = chunk_of(table, partition, 8, cursor, limit=10)
        chunks.append([value["n"] for _, value in rows])
        if cursor is None:
            break
    assert chunks == [list(range(10)), list(range(10, 20)), list(range(20, 25))]
