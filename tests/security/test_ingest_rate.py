"""The per-API-key ingest bucket (rules/ingest.py): pure, with an explicit clock."""

from __future__ import annotations

import pytest

from rules.ingest import (
    IngestLimiter,
    IngestRates,
    parse_ingest_rates,
    parse_policy,
    retry_after_header,
)
from tables.ratelimit import BucketPolicy


@pytest.mark.parametrize(("raw", "rate", "burst"), [
    ("10", 10.0, 10.0), ("0.5", 0.5, 1.0), ("50,500", 50.0, 500.0), (" 2 , 3 ", 2.0, 3.0)])
def test_rate_and_burst_are_parsed(raw, rate, burst):
    assert parse_policy(raw) == BucketPolicy(rate, burst)


def test_named_entries_override_the_default():
    rates = parse_ingest_rates("50,500; importer=5 ;")
    assert rates.for_key("importer") == BucketPolicy(5.0, 5.0)
    assert rates.for_key("anyone-else") == BucketPolicy(50.0, 500.0)
    assert parse_ingest_rates("importer=1").for_key("anyone-else") is None


@pytest.mark.parametrize(("raw", "message"), [
    ("", "no rate"), ("fast", "expected <requests per second>"), ("0", "rate must be"),
    ("-1", "rate must be"), ("inf", "rate must be"), ("nan", "rate must be"),
    ("10,0.5", "burst must be at least 1"), ("10,x", "expected"), ("=5", "key name"),
    ("5;6", "the default is set twice"), ("a=1;a=2", "key 'a' is set twice")])
def test_a_bad_rate_is_refused_naming_the_entry(raw, message):
    with pytest.raises(ValueError, match=message):
        parse_ingest_rates(raw)


def test_a_key_gets_its_burst_then_waits_for_the_refill():
    # Given 2 requests per second with a burst of 3
    limiter = IngestLimiter(IngestRates(BucketPolicy(rate=2.0, burst=3.0)))
    # When a key sends 4 at once
    waits = [limiter.admit("svc-a", now=100.0) for _ in range(4)]
    # Then 3 pass and the 4th waits half a second (one token at 2/s)
    assert waits == [0.0, 0.0, 0.0, pytest.approx(0.5)]
    # And after that half second it passes
    assert limiter.admit("svc-a", now=100.5) == 0.0


def test_each_key_has_its_own_bucket():
    limiter = IngestLimiter(IngestRates(BucketPolicy(rate=1.0, burst=1.0)))
    assert limiter.admit("svc-a", now=0.0) == 0.0
    assert limiter.admit("svc-a", now=0.0) > 0
    assert limiter.admit("svc-b", now=0.0) == 0.0


def test_a_key_without_a_policy_is_not_limited():
    limiter = IngestLimiter(IngestRates(per_key={"slow": BucketPolicy(1.0, 1.0)}))
    assert all(limiter.admit("fast", now=0.0) == 0.0 for _ in range(100))
    assert limiter.buckets == {}


def test_a_refused_request_takes_no_token():
    limiter = IngestLimiter(IngestRates(BucketPolicy(rate=1.0, burst=1.0)))
    limiter.admit("k", now=0.0)
    for _ in range(10):
        limiter.admit("k", now=0.5)
    assert limiter.admit("k", now=1.0) == 0.0


@pytest.mark.parametrize(("seconds", "header"), [(0.01, "1"), (1.0, "1"), (1.2, "2"), (30, "30")])
def test_retry_after_is_whole_seconds_rounded_up(seconds, header):
    assert retry_after_header(seconds) == header
