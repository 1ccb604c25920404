"""What a reconnecting client missed: merged from PostgreSQL and recent frames, in order."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from rules.resume import missed, moment, order_key


def frame(frame_id: str, second: int, **extra: object) -> dict[str, object]:
    return {"id": frame_id, "created_at": f"2026-11-21T10:00:{second:02d}+00:00", **extra}


AFTER = (datetime(2026, 11, 21, 10, 0, 10, tzinfo=timezone.utc), "n-10")


@pytest.mark.parametrize("stored, recent, expected", [
    # nothing missed
    ([], [], []),
    # only what comes after the resume point, oldest first
    ([frame("n-12", 12), frame("n-09", 9), frame("n-11", 11)], [], ["n-11", "n-12"]),
    # recent frames not yet recorded fill the gap, in order with the stored ones
    ([frame("n-11", 11)], [frame("n-13", 13), frame("n-12", 12)], ["n-11", "n-12", "n-13"]),
    # the same id from both sources once
    ([frame("n-11", 11)], [frame("n-11", 11)], ["n-11"]),
    # same second: the id decides, and the resume point itself is excluded
    ([frame("n-10", 10), frame("n-10b", 10), frame("n-0", 10)], [], ["n-10b"]),
])
def test_missed_is_ordered_and_unique(stored, recent, expected):
    assert [f["id"] for f in missed(stored, recent, AFTER)] == expected


def test_the_recorded_copy_wins_over_the_recent_one():
    stored = [frame("n-11", 11, status="READ")]
    recent = [frame("n-11", 11)]
    assert missed(stored, recent, AFTER)[0]["status"] == "READ"


def test_times_in_other_offsets_and_naive_times_compare_as_instants():
    assert moment("2026-11-21T11:00:00+01:00") == moment("2026-11-21T10:00:00+00:00")
    assert moment("2026-11-21T10:00:00") == moment("2026-11-21T10:00:00Z")
    paris = {"id": "n-x", "created_at": "2026-11-21T11:00:11+01:00"}
    assert order_key(paris) > AFTER
