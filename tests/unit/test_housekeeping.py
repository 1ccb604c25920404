"""Housekeeping touches only the rows its tick's partition owns."""

from agents.housekeeping import digest_notification, rows_of
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


def test_dedup_keys_are_purged_at_most_once_a_minute_per_partition():
    from agents.housekeeping import DEDUP_PURGE_SECONDS, purge_due

    purged: dict[int, float] = {}
    assert purge_due(purged, 3, now=1000.0)            # first tick: purge
    assert not purge_due(purged, 3, now=1001.0)        # next second: not again
    assert purge_due(purged, 4, now=1001.0)            # another partition: its own clock
    assert purge_due(purged, 3, now=1000.0 + DEDUP_PURGE_SECONDS)


class PartitionedStore:
    """Faust's RocksDB store as housekeeping sees it: one database per partition."""

    offset_key = b"__faust\0offset__"

    def __init__(self, rows: dict[str, int], partitions: int) -> None:
        self.dbs: dict[int, dict[bytes, bytes]] = {p: {self.offset_key: b"7"}
                                                   for p in range(partitions)}
        for key, value in rows.items():
            owner = key.split("\x1f")[0]
            self.dbs[partition_for(owner, partitions)][key.encode()] = str(value).encode()
        self.opened: list[int] = []

    def _db_for_partition(self, partition: int) -> dict[bytes, bytes]:
        self.opened.append(partition)
        return self.dbs[partition]

    def _visible_items(self, db: dict[bytes, bytes]):
        return ((k, v) for k, v in db.items() if k != self.offset_key)

    def _decode_key(self, key: bytes) -> str:
        return key.decode()

    def _decode_value(self, value: bytes) -> int:
        return int(value)


class Table(dict):
    def __init__(self, store: PartitionedStore) -> None:
        super().__init__()
        self.data = store

    def items(self):  # noqa: D102 - every partition's rows: what must not be read
        raise AssertionError("read the whole table")


def test_a_partitioned_store_is_read_only_in_the_ticks_partition():
    rows = {compose(f"u-{i}", "k"): i for i in range(200)}
    store = PartitionedStore(rows, 8)
    taken = dict(rows_of(Table(store), 3, 8))
    assert store.opened == [3]
    assert taken == {key: value for key, value in rows.items()
                     if partition_for(key.split("\x1f")[0], 8) == 3}
