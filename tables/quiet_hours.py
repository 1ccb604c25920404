"""Quiet hours and send-at: until when a notification is held back.

Quiet hours are a window of the user's wall clock, ``start`` included and
``end`` excluded, e.g. 22:00-07:00 (crossing midnight) or 13:00-14:00. The
window is evaluated in the user's time zone (UTC when unknown), so it follows
daylight saving time: on the night the clocks change, the quiet night is an
hour shorter or longer in real time, as it is on the user's clock.

Instants in and out are aware datetimes; what this module returns is in UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta
from typing import Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_HH_MM = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")


def quiet_until(now: datetime, timezone: str | None, start: str, end: str) -> datetime | None:
    """When the quiet hours around ``now`` end (UTC), or ``None`` when not inside them.

    ``start == end`` means no quiet hours. When the end's wall time does not
    exist that day (clocks spring forward over it), quiet hours end when the
    clocks jump past it; when it happens twice (clocks fall back), they end
    at the first time it comes after ``now``.
    """
    _require_aware(now, "now")
    begin, finish = _clock(start, "start"), _clock(end, "end")
    if begin == finish:
        return None
    zone = _zone(timezone)
    local = now.astimezone(zone)
    clock = local.time().replace(tzinfo=None)
    if begin < finish:
        inside, ends_on = begin <= clock < finish, local.date()
    elif clock >= begin:
        inside, ends_on = True, local.date() + timedelta(days=1)
    else:
        inside, ends_on = clock < finish, local.date()
    if not inside:
        return None
    return _first_reading(datetime.combine(ends_on, finish), zone, after=now)


def hold_until(now: datetime, *, priority: str, send_at: datetime | None, timezone: str | None,
               quiet_hours: Mapping[str, str] | None) -> datetime | None:
    """Until when (UTC) a notification waits before going out; ``None``: send now.

    ``send_at`` is the sender's explicit wish and holds any priority,
    critical included. Quiet hours are the recipient's and hold everything
    but critical. They are evaluated at the time the notification would go:
    a ``send_at`` that falls inside quiet hours is held until they end.
    A ``send_at`` at or before ``now`` is already due.
    """
    _require_aware(now, "now")
    due = now
    if send_at is not None:
        _require_aware(send_at, "send_at")
        due = max(now, send_at)
    if priority != "critical" and quiet_hours:
        missing = {"start", "end"} - quiet_hours.keys()
        if missing:
            raise ValueError(f"quiet_hours: {', '.join(sorted(missing))} missing")
        due = quiet_until(due, timezone, quiet_hours["start"], quiet_hours["end"]) or due
    return due.astimezone(UTC) if due > now else None


def _first_reading(wall: datetime, zone: ZoneInfo, *, after: datetime) -> datetime:
    """The first instant after ``after`` at which the clock of ``zone`` reads ``wall``.

    ``fold`` picks between the two readings of a time that happens twice;
    a time that never happens is reached when the clocks jump past it.
    """
    readings = sorted(
        instant for instant in (wall.replace(tzinfo=zone, fold=fold).astimezone(UTC)
                                for fold in (0, 1))
        if instant.astimezone(zone).replace(tzinfo=None) == wall and instant > after
    )
    return readings[0] if readings else _jump_past(wall, zone)


def _jump_past(wall: datetime, zone: ZoneInfo) -> datetime:
    """The instant the clocks spring forward over ``wall``, a time that never happens."""
    # In the gap, fold=1 reads ``wall`` with the offset after the jump, which
    # lands before it, and fold=0 with the offset before, which lands after.
    # zoneinfo does not expose the transition itself: bisect to the second.
    before = int(wall.replace(tzinfo=zone, fold=1).timestamp())
    after = int(wall.replace(tzinfo=zone, fold=0).timestamp())
    while after - before > 1:
        middle = (before + after) // 2
        if datetime.fromtimestamp(middle, zone).replace(tzinfo=None) >= wall:
            after = middle
        else:
            before = middle
    return datetime.fromtimestamp(after, UTC)


def _clock(value: str, name: str) -> time:
    match = _HH_MM.match(value)
    if match is None:
        raise ValueError(f"quiet hours {name}: expected HH:MM, got {value!r}")
    return time(int(match.group(1)), int(match.group(2)))


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def _require_aware(instant: datetime, name: str) -> None:
    # A naive datetime would be read as the server's local time: wrong anywhere else.
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime, got {instant.isoformat()}")
