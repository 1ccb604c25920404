"""The worker's partitioner: Kafka's default partitioning, with recent keys remembered."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner

from app.producing import _index, partition_for


def test_every_key_goes_where_kafkas_default_partitioner_sends_it() -> None:
    keys = [f"n-{n:08d}".encode() for n in range(500)] + [b"", b"u-42", "ü-7".encode()]
    for count in (1, 3, 8, 96):
        partitions = list(range(count))
        for key in keys:
            expected = DefaultPartitioner()(key, partitions, partitions)
            assert partition_for(key, partitions, partitions) == expected
            assert partition_for(key, partitions, partitions) == expected  # remembered


def test_a_remembered_key_is_not_hashed_again_and_the_count_is_part_of_what_is_remembered(
) -> None:
    _index.cache_clear()
    partition_for(b"n-1", [0, 1, 2, 3], [0, 1])
    partition_for(b"n-1", [0, 1, 2, 3], [0, 1])
    partition_for(b"n-1", list(range(8)), [])
    info = _index.cache_info()
    assert (info.hits, info.misses) == (1, 2)


def test_a_record_without_a_key_goes_to_an_available_partition() -> None:
    assert {partition_for(None, [0, 1, 2, 3], [2]) for _ in range(20)} == {2}
