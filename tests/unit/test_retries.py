"""Retry stages, delays with jitter, dead ends and fallback chains."""

import random

import pytest

from rules.retries import Retry, after_failure, fallback_after, parse_delays

DELAYS = (5.0, 30.0, 300.0)


@pytest.mark.parametrize(("attempt", "expected"), [
    (1, Retry(1, 5.0)), (2, Retry(2, 30.0)), (3, Retry(3, 300.0)), (4, None)])
def test_each_attempt_moves_to_the_next_stage_until_none_is_left(attempt, expected):
    assert after_failure(attempt, retriable=True, delays=DELAYS, jitter=0.0) == expected


def test_permanent_failures_never_retry():
    assert after_failure(1, retriable=False, delays=DELAYS) is None


def test_jitter_spreads_delays_within_its_fraction():
    rand = random.Random(3)
    delays = {after_failure(2, retriable=True, delays=DELAYS, rand=rand).delay for _ in range(50)}
    assert all(24.0 <= d <= 36.0 for d in delays) and len(delays) > 1


def test_retry_after_from_the_provider_wins_when_longer():
    assert after_failure(1, retriable=True, delays=DELAYS, jitter=0.0, retry_after=42.0).delay == 42.0
    assert after_failure(1, retriable=True, delays=DELAYS, jitter=0.0, retry_after=1.0).delay == 5.0


@pytest.mark.parametrize(("channel", "chain", "expected"), [
    ("push", ["push", "sms", "email"], "sms"),
    ("sms", ["push", "sms", "email"], "email"),
    ("email", ["push", "sms", "email"], None),
    ("inapp", ["push", "sms"], None),
    ("push", [], None),
])
def test_fallback_follows_the_chain(channel, chain, expected):
    assert fallback_after(channel, chain) == expected


def test_parse_delays():
    assert parse_delays("5, 30,300") == DELAYS
    assert parse_delays("") == ()
    with pytest.raises(ValueError, match="positive"):
        parse_delays("5,0")
