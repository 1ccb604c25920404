"""Never committing past an unhandled record (faust-streaming #606)."""

from __future__ import annotations

from collections import defaultdict

import pytest
from faust.transport.consumer import Consumer
from intervaltree import IntervalTree

from app.commit_guard import CommitGuard, blocked_partitions, install, missing_head


@pytest.mark.parametrize("acked, committed, gaps, missing", [
    ([3, 4], 2, [], True),          # record 2 skipped, 3 and 4 handled: Faust would commit 5
    ([2, 3], 2, [], False),         # the head is there
    ([3], 2, [(2, 3)], False),      # offset 2 does not exist (a gap): fine
    ([5], 2, [(2, 4)], True),       # the gap ends at 4, record 4 is missing
    ([], 2, [], False),             # nothing acked: nothing to commit anyway
    ([3], None, [], False),         # never committed: nothing to compare with
])
def test_missing_head(acked, committed, gaps, missing):
    assert missing_head(acked, committed, gaps) is missing


class Offsets:
    """The consumer state Faust's _new_offset reads."""

    def __init__(self, acked: list[int], committed: int | None) -> None:
        self._acked = defaultdict(list, {"tp": list(acked)})
        self._acked_index = defaultdict(set, {"tp": set(acked)})
        self._committed_offset = defaultdict(lambda: None, {"tp": committed})
        self._gap = defaultdict(IntervalTree)


def test_faust_no_longer_commits_past_a_skipped_record():
    install()
    install()  # idempotent
    assert Consumer._new_offset(Offsets([3, 4], 2), "tp") is None
    assert Consumer._new_offset(Offsets([2, 3, 4], 2), "tp") == 5
    gapped = Offsets([3], 2)
    gapped._gap["tp"].addi(2, 3)
    assert Consumer._new_offset(gapped, "tp") == 4


class FakeConsumer(Offsets):
    def __init__(self, acked: list[int], committed: int) -> None:
        super().__init__(acked, committed)
        self.seeks: list[tuple[str, int]] = []

    async def seek(self, tp: str, offset: int) -> None:
        self.seeks.append((tp, offset))


class FakeApp:
    def __init__(self, consumer: FakeConsumer) -> None:
        self.consumer, self.rebalancing = consumer, False


async def test_a_partition_blocked_twice_at_the_same_place_is_read_again():
    consumer = FakeConsumer([3, 4], 2)
    assert blocked_partitions(consumer) == {"tp": 2}
    guard = CommitGuard(FakeApp(consumer))
    await guard.check()
    assert consumer.seeks == []          # once may be a moment in a rebalance
    await guard.check()
    assert consumer.seeks == [("tp", 2)]  # twice: fetch record 2 again


async def test_no_seek_during_a_rebalance_or_when_the_head_arrives():
    consumer = FakeConsumer([3, 4], 2)
    app = FakeApp(consumer)
    guard = CommitGuard(app)
    await guard.check()
    consumer._acked["tp"].insert(0, 2)   # the head was handled meanwhile
    await guard.check()
    app.rebalancing = True
    await guard.check()
    await guard.check()
    assert consumer.seeks == []


class Committing(FakeConsumer):
    """A consumer in the middle of a commit: Faust took 2-4 out of acked, committed is still 2."""

    def __init__(self) -> None:
        super().__init__([2, 3, 4, 5], 2)
        self._commit_fut = object()
        install()
        assert Consumer._new_offset(self, "tp") == 6
        self._acked["tp"].append(6)


async def test_records_being_committed_are_not_taken_for_skipped_ones():
    consumer = Committing()
    assert consumer._acked["tp"] == [6]
    assert blocked_partitions(consumer) == {}
    guard = CommitGuard(FakeApp(consumer))
    await guard.check()
    await guard.check()
    assert consumer.seeks == []


async def test_an_offset_chosen_by_a_commit_that_is_over_no_longer_counts():
    # The commit failed (committed is still 2); a record after it was skipped
    consumer = Committing()
    consumer._commit_fut = None
    assert blocked_partitions(consumer) == {"tp": 2}
    consumer._commit_fut = object()  # a later commit is not the one that chose 6
    assert blocked_partitions(consumer) == {"tp": 2}
