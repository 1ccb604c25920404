"""Held rows are found through their due times: a tick reads only the rows that are due."""

import asyncio

import pytest

from agents.housekeeping import release_due
from rules.partitioning import partition_for
from tables.due import DueIndex
from tables.keys import compose

PARTITIONS = 8
USER = "u-1"
PARTITION = partition_for(USER, PARTITIONS)


def held(due: float) -> dict:
    return {"due": due, "notification": {"id": str(due)}}


def release_all(table: dict, index: DueIndex, now: float, generation: int = 1,
                fail: set[str] = frozenset()) -> list[str]:
    released: list[str] = []

    async def release(key: str, row: dict) -> None:
        if key in fail:
            raise RuntimeError("the lane topic refused it")
        released.append(key)

    asyncio.run(release_due(table, index, PARTITION, PARTITIONS, generation, now,
                            lambda row: row["due"], release))
    return released


def test_the_index_gives_the_due_entries_of_a_partition_earliest_first() -> None:
    index = DueIndex()
    index.add(3, 5.0, "before-build")  # not built yet: the build reads the table instead
    index.build(3, generation=7, rows=[("b", 20.0), ("a", 10.0), ("c", 30.0)])
    index.add(3, 15.0, "d")
    assert index.built(3, 7) and not index.built(3, 8) and not index.built(4, 7)
    assert [index.pop_due(3, 20.0) for _ in range(4)] == [(10.0, "a"), (15.0, "d"), (20.0, "b"),
                                                          None]
    assert index.pop_due(4, 99.0) is None
    assert len(index) == 1


def test_due_rows_are_released_in_due_order_and_deleted_the_rest_stay() -> None:
    # Given rows held until 10, 20 and 30
    table = {compose(USER, name, "*"): held(due) for name, due in
             (("late", 30.0), ("first", 10.0), ("second", 20.0))}
    # When the tick at 25 releases what is due
    released = release_all(table, DueIndex(), now=25.0)
    # Then the two due rows went, earliest first, and the other stays
    assert released == [compose(USER, "first", "*"), compose(USER, "second", "*")]
    assert list(table) == [compose(USER, "late", "*")]


def test_after_the_build_a_tick_reads_only_indexed_rows_until_the_next_generation() -> None:
    index = DueIndex()
    table = {compose(USER, "a", "*"): held(10.0)}
    assert release_all(table, index, now=5.0) == []
    # A row written behind the index's back (the router indexes what it holds)
    table[compose(USER, "unindexed", "*")] = held(1.0)
    assert release_all(table, index, now=50.0) == [compose(USER, "a", "*")]
    # A rebalance (a new generation) rebuilds the index from the rows
    assert release_all(table, index, now=50.0, generation=2) == [compose(USER, "unindexed", "*")]


def test_a_row_held_again_until_later_is_not_released_by_its_old_entry() -> None:
    index = DueIndex()
    key = compose(USER, "n", "*")
    table = {key: held(10.0)}
    release_all(table, index, now=1.0)
    table[key] = held(40.0)
    index.add(PARTITION, 40.0, key)
    assert release_all(table, index, now=20.0) == []
    assert release_all(table, index, now=40.0) == [key]
    assert table == {}


def test_a_row_whose_release_failed_stays_for_the_next_tick() -> None:
    index = DueIndex()
    key = compose(USER, "n", "*")
    table = {key: held(10.0)}
    with pytest.raises(RuntimeError):
        release_all(table, index, now=20.0, fail={key})
    assert key in table
    assert release_all(table, index, now=21.0) == [key]
    assert table == {}
