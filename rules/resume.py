"""What a reconnecting gateway client missed, in order and without duplicates.

A client resumes with the id of the last notification it saw. What it
missed is in two places: PostgreSQL (everything the recorder has written)
and the worker's recent frames (what was published in the last minutes and
may not be recorded yet). Both are merged here by (created_at, id), the
inbox order, each id once, the recorded copy winning.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

Frame = Mapping[str, Any]


def moment(created_at: str | datetime) -> datetime:
    """``created_at`` as an aware datetime (naive values are taken as UTC)."""
    when = created_at if isinstance(created_at, datetime) else datetime.fromisoformat(created_at)
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def order_key(frame: Frame) -> tuple[datetime, str]:
    """The inbox order of a frame: creation time, then id."""
    return moment(frame["created_at"]), str(frame["id"])


def missed(stored: Iterable[Frame], recent: Iterable[Frame],
           after: tuple[datetime, str]) -> list[Frame]:
    """The frames after ``after`` from both sources, oldest first, each id once."""
    chosen: dict[str, Frame] = {}
    for frame in recent:
        if order_key(frame) > after:
            chosen[str(frame["id"])] = frame
    for frame in stored:  # the recorded copy knows the status (e.g. READ)
        if order_key(frame) > after:
            chosen[str(frame["id"])] = frame
    return sorted(chosen.values(), key=order_key)
