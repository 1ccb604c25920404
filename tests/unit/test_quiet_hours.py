"""Quiet hours on the user's wall clock, across midnight and DST, and send-at."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from tables.quiet_hours import hold_until, quiet_until


def utc(text: str) -> datetime:
    """An aware UTC instant from ``"2026-01-10 23:00"`` (seconds optional)."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


NIGHT = {"start": "22:00", "end": "07:00"}


# --- quiet_until ------------------------------------------------------------

@pytest.mark.parametrize(("now", "start", "end", "until"), [
    # crossing midnight: in the evening, the end is the next morning
    ("2026-01-10 23:00", "22:00", "07:00", "2026-01-11 07:00"),
    ("2026-01-10 22:00", "22:00", "07:00", "2026-01-11 07:00"),  # start included
    ("2026-01-10 23:59:59", "22:00", "07:00", "2026-01-11 07:00"),
    ("2026-01-11 00:00", "22:00", "07:00", "2026-01-11 07:00"),
    ("2026-01-11 06:59:59", "22:00", "07:00", "2026-01-11 07:00"),
    ("2026-01-11 07:00", "22:00", "07:00", None),                # end excluded
    ("2026-01-11 12:00", "22:00", "07:00", None),
    ("2026-01-10 21:59:59", "22:00", "07:00", None),
    # not crossing midnight
    ("2026-01-10 13:00", "13:00", "14:00", "2026-01-10 14:00"),
    ("2026-01-10 13:30", "13:00", "14:00", "2026-01-10 14:00"),
    ("2026-01-10 12:59", "13:00", "14:00", None),
    ("2026-01-10 14:00", "13:00", "14:00", None),
    ("2026-01-10 23:00", "13:00", "14:00", None),
    # ending at midnight
    ("2026-01-10 23:30", "23:00", "00:00", "2026-01-11 00:00"),
    ("2026-01-11 00:00", "23:00", "00:00", None),
    # start == end: no quiet hours at all
    ("2026-01-10 22:00", "22:00", "22:00", None),
    ("2026-01-10 03:00", "00:00", "00:00", None),
])
def test_quiet_until_in_utc(now, start, end, until):
    expected = utc(until) if until else None
    assert quiet_until(utc(now), None, start, end) == expected


@pytest.mark.parametrize(("zone", "now", "until"), [
    # 23:00 in New York (UTC-5 in winter), quiet until 07:00 there
    ("America/New_York", "2026-01-11 04:00", "2026-01-11 12:00"),
    # 17:00 in New York: not quiet, although it is 22:00 in UTC
    ("America/New_York", "2026-01-10 22:00", None),
    # a half-hour offset: 03:30 in Kolkata (UTC+5:30)
    ("Asia/Kolkata", "2026-01-10 22:00", "2026-01-11 01:30"),
    ("UTC", "2026-01-10 23:00", "2026-01-11 07:00"),
])
def test_quiet_hours_follow_the_users_time_zone(zone, now, until):
    expected = utc(until) if until else None
    assert quiet_until(utc(now), zone, "22:00", "07:00") == expected


def test_the_answer_is_in_utc_whatever_the_offset_of_now():
    # 23:00 UTC written as 08:00 the next day in Tokyo
    now = datetime(2026, 1, 11, 8, 0, tzinfo=timezone(timedelta(hours=9)))
    until = quiet_until(now, None, "22:00", "07:00")
    assert until == utc("2026-01-11 07:00")
    assert until.utcoffset() == timedelta(0)


# Europe/Paris, 2026: clocks spring forward on 29 March at 02:00 CET (01:00 UTC)
# to 03:00 CEST, and fall back on 25 October at 03:00 CEST (01:00 UTC) to 02:00 CET.
PARIS = "Europe/Paris"


@pytest.mark.parametrize(("now", "start", "end", "until"), [
    # the 22:00-07:00 night is one hour shorter: 07:00 CEST is 05:00 UTC
    ("2026-03-28 23:00", "22:00", "07:00", "2026-03-29 05:00"),
    # an end inside the skipped hour: quiet until the clocks jump past it
    ("2026-03-29 00:30", "22:00", "02:30", "2026-03-29 01:00"),
    ("2026-03-29 00:59:59", "22:00", "02:30", "2026-03-29 01:00"),
    ("2026-03-29 01:00", "22:00", "02:30", None),
    # a start inside the skipped hour: quiet from the jump on
    ("2026-03-29 00:59:59", "02:30", "06:00", None),
    ("2026-03-29 01:00", "02:30", "06:00", "2026-03-29 04:00"),
    # a window wholly inside the skipped hour never happens that night
    ("2026-03-29 00:59:59", "02:15", "02:45", None),
    ("2026-03-29 01:00", "02:15", "02:45", None),
])
def test_paris_spring_forward(now, start, end, until):
    expected = utc(until) if until else None
    assert quiet_until(utc(now), PARIS, start, end) == expected


@pytest.mark.parametrize(("now", "start", "end", "until"), [
    # the 22:00-07:00 night is one hour longer: 07:00 CET is 06:00 UTC
    ("2026-10-24 22:00", "22:00", "07:00", "2026-10-25 06:00"),
    # an end inside the repeated hour: the first 02:30 (CEST) when before it
    ("2026-10-25 00:10", "22:00", "02:30", "2026-10-25 00:30"),
    # after the first 02:30, the window is left...
    ("2026-10-25 00:40", "22:00", "02:30", None),
    # ...and re-entered when the clocks read 02:00 again, until the second 02:30 (CET)
    ("2026-10-25 01:10", "22:00", "02:30", "2026-10-25 01:30"),
    # the repeated hour inside a window that ends after it
    ("2026-10-25 00:30", "01:00", "04:00", "2026-10-25 03:00"),
    ("2026-10-25 01:30", "01:00", "04:00", "2026-10-25 03:00"),
])
def test_paris_fall_back(now, start, end, until):
    expected = utc(until) if until else None
    assert quiet_until(utc(now), PARIS, start, end) == expected


def test_every_minute_of_both_dst_nights_gives_an_end_after_now():
    # Given every minute of the Paris nights where the clocks change
    for night in ("2026-03-28 20:00", "2026-10-24 20:00"):
        for minute in range(12 * 60):
            now = utc(night) + timedelta(minutes=minute)
            for start, end in (("22:00", "07:00"), ("01:30", "02:30"), ("02:30", "03:30")):
                # When quiet hours are evaluated, they never crash
                until = quiet_until(now, PARIS, start, end)
                # Then an end, when there is one, is ahead of now and within a day
                assert until is None or now < until <= now + timedelta(hours=25)


@pytest.mark.parametrize(("start", "end", "name"), [
    ("7:00", "08:00", "start"), ("24:00", "08:00", "start"), ("22:00", "07:60", "end"),
    ("22:00", "0700", "end"), ("22:00", "", "end"), ("22:00:00", "07:00", "start"),
])
def test_a_malformed_bound_is_named(start, end, name):
    with pytest.raises(ValueError, match=f"quiet hours {name}: expected HH:MM"):
        quiet_until(utc("2026-01-10 23:00"), None, start, end)


def test_an_unknown_time_zone_is_named():
    with pytest.raises(ValueError, match="'Mars/Olympus_Mons'"):
        quiet_until(utc("2026-01-10 23:00"), "Mars/Olympus_Mons", "22:00", "07:00")


def test_a_naive_now_is_refused():
    with pytest.raises(ValueError, match="now must be an aware datetime"):
        quiet_until(datetime(2026, 1, 10, 23, 0), None, "22:00", "07:00")


# --- hold_until -------------------------------------------------------------

@pytest.mark.parametrize(("now", "priority", "send_at", "quiet", "held"), [
    # nothing to wait for
    ("2026-01-10 12:00", "normal", None, NIGHT, None),
    ("2026-01-10 12:00", "normal", None, None, None),
    # a send-at in the future holds until then
    ("2026-01-10 12:00", "normal", "2026-01-10 15:00", NIGHT, "2026-01-10 15:00"),
    # a send-at now or in the past is due
    ("2026-01-10 12:00", "normal", "2026-01-10 12:00", NIGHT, None),
    ("2026-01-10 12:00", "normal", "2026-01-09 12:00", NIGHT, None),
    # inside quiet hours: held until they end
    ("2026-01-10 23:00", "normal", None, NIGHT, "2026-01-11 07:00"),
    ("2026-01-10 23:00", "high", None, NIGHT, "2026-01-11 07:00"),
    ("2026-01-10 23:00", "low", None, NIGHT, "2026-01-11 07:00"),
    ("2026-01-10 23:00", "normal", "2026-01-09 12:00", NIGHT, "2026-01-11 07:00"),
    # a send-at inside quiet hours: held until they end after it
    ("2026-01-10 12:00", "normal", "2026-01-10 23:00", NIGHT, "2026-01-11 07:00"),
    # a send-at after the quiet hours now in force: the send-at wins
    ("2026-01-10 23:00", "normal", "2026-01-11 09:00", NIGHT, "2026-01-11 09:00"),
    # a send-at exactly at the end of quiet hours is not held further
    ("2026-01-10 23:00", "normal", "2026-01-11 07:00", NIGHT, "2026-01-11 07:00"),
    # critical ignores quiet hours...
    ("2026-01-10 23:00", "critical", None, NIGHT, None),
    # ...but not the sender's send-at, even one inside quiet hours
    ("2026-01-10 12:00", "critical", "2026-01-10 15:00", NIGHT, "2026-01-10 15:00"),
    ("2026-01-10 12:00", "critical", "2026-01-10 23:00", NIGHT, "2026-01-10 23:00"),
    # no quiet hours set, or empty ones
    ("2026-01-10 23:00", "normal", None, None, None),
    ("2026-01-10 23:00", "normal", None, {}, None),
    ("2026-01-10 23:00", "normal", None, {"start": "22:00", "end": "22:00"}, None),
])
def test_hold_until(now, priority, send_at, quiet, held):
    result = hold_until(utc(now), priority=priority, send_at=utc(send_at) if send_at else None,
                        timezone=None, quiet_hours=quiet)
    assert result == (utc(held) if held else None)


def test_quiet_hours_at_the_send_time_are_the_users_local_ones():
    # Given a user in New York and a send-at of 02:00 UTC, 21:00 in New York
    send_at = utc("2026-01-11 02:00")
    # When the notification is evaluated at noon UTC, it goes at its send-at
    held = hold_until(utc("2026-01-10 12:00"), priority="normal", send_at=send_at,
                      timezone="America/New_York", quiet_hours=NIGHT)
    assert held == send_at
    # Then an hour later the send-at (22:00 there) is inside the night: 07:00 there
    held = hold_until(utc("2026-01-10 12:00"), priority="normal",
                      send_at=send_at + timedelta(hours=1), timezone="America/New_York",
                      quiet_hours=NIGHT)
    assert held == utc("2026-01-11 12:00")


def test_a_send_at_with_another_offset_is_returned_in_utc():
    send_at = datetime(2026, 1, 10, 17, 0, tzinfo=timezone(timedelta(hours=2)))
    held = hold_until(utc("2026-01-10 12:00"), priority="normal", send_at=send_at,
                      timezone=None, quiet_hours=None)
    assert held == utc("2026-01-10 15:00")
    assert held.tzinfo == UTC


@pytest.mark.parametrize(("send_at", "quiet", "message"), [
    (datetime(2026, 1, 10, 15, 0), None, "send_at must be an aware datetime"),
    (None, {"start": "22:00"}, "quiet_hours: end missing"),
])
def test_hold_until_refuses_bad_input(send_at, quiet, message):
    with pytest.raises(ValueError, match=message):
        hold_until(utc("2026-01-10 12:00"), priority="normal", send_at=send_at, timezone=None,
                   quiet_hours=quiet)
