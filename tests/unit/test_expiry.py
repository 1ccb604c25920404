"""Expiry of notifications that come too late, and the reason recorded."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from rules.expiry import expiry_reason, is_expired

NOW = datetime(2026, 1, 1, 10, 0, 42, tzinfo=UTC)


@pytest.mark.parametrize(("expires_at", "expired"), [
    (None, False),                                   # no expiry: never
    ("2026-01-01T10:00:00+00:00", True),
    ("2026-01-01T10:00:42+00:00", True),             # exactly now: too late
    ("2026-01-01T10:00:42.000001+00:00", False),
    ("2026-01-01T10:00:41.999999+00:00", True),
    ("2026-01-02T00:00:00+00:00", False),
    # the same instants written with other offsets
    ("2026-01-01T11:00:00+01:00", True),
    ("2026-01-01T05:01:00-05:00", False),
    ("2026-01-01T10:00:00Z", True),
])
def test_is_expired(expires_at, expired):
    assert is_expired(expires_at, NOW) is expired


def test_now_with_another_offset_is_the_same_instant():
    tokyo_now = NOW.astimezone(timezone(timedelta(hours=9)))
    assert is_expired("2026-01-01T10:00:00+00:00", tokyo_now)
    assert not is_expired("2026-01-01T10:01:00+00:00", tokyo_now)


@pytest.mark.parametrize(("expires_at", "reason"), [
    ("2026-01-01T10:00:00+00:00", "expired at 2026-01-01T10:00:00+00:00, 42s before routing"),
    ("2026-01-01T10:00:42+00:00", "expired at 2026-01-01T10:00:42+00:00, 0s before routing"),
    ("2026-01-01T10:00:41.5+00:00",
     "expired at 2026-01-01T10:00:41.500000+00:00, 0s before routing"),
    ("2026-01-01T09:57:37+00:00", "expired at 2026-01-01T09:57:37+00:00, 3m 5s before routing"),
    ("2026-01-01T09:00:42+00:00", "expired at 2026-01-01T09:00:42+00:00, 1h before routing"),
    ("2025-12-30T09:00:00+00:00",
     "expired at 2025-12-30T09:00:00+00:00, 2d 1h 42s before routing"),
    # the sender's offset is kept, so the reason matches what they wrote
    ("2026-01-01T11:00:00+01:00", "expired at 2026-01-01T11:00:00+01:00, 42s before routing"),
])
def test_expiry_reason(expires_at, reason):
    assert expiry_reason(expires_at, NOW) == reason


def test_a_reason_for_a_notification_not_expired_is_a_mistake():
    with pytest.raises(ValueError, match="not expired"):
        expiry_reason("2026-01-01T10:01:00+00:00", NOW)


@pytest.mark.parametrize(("expires_at", "message"), [
    ("tomorrow", "not an ISO-8601 time"),
    ("", "not an ISO-8601 time"),
    ("2026-01-01T10:00:00", "needs an offset"),
])
def test_a_malformed_expiry_is_named(expires_at, message):
    with pytest.raises(ValueError, match=message):
        is_expired(expires_at, NOW)
    with pytest.raises(ValueError, match=message):
        expiry_reason(expires_at, NOW)


def test_a_naive_now_is_refused():
    with pytest.raises(ValueError, match="now must be an aware datetime"):
        is_expired("2026-01-01T10:00:00+00:00", datetime(2026, 1, 1, 10, 0))
