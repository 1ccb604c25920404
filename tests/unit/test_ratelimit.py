"""Token buckets, the two-bucket rate decision and the rate-limit setting."""

import json

import pytest

from tables.ratelimit import (
    BucketPolicy,
    RatePolicy,
    bucket_key,
    decide,
    parse_policy,
    parse_rate_policies,
    per_partition,
    policy_for,
    take,
)

T0 = 1_700_000_000.0
#: Timestamps this large keep about a microsecond of precision.
CLOSE = 1e-6
#: One token a second, at most three saved up.
ONE_PER_SECOND = BucketPolicy(rate=1.0, burst=3.0)


# --- parse_policy -----------------------------------------------------------

@pytest.mark.parametrize(("spec", "rate", "burst"), [
    ("10/second", 10.0, 10.0),
    ("10/minute", 10 / 60, 10.0),
    ("5/hour", 5 / 3600, 5.0),
    ("24/day", 24 / 86400, 24.0),
    (" 3 / minute ", 3 / 60, 3.0),
    ("2.5/second", 2.5, 2.5),
    # a burst below one token could never let anything through
    ("0.5/second", 0.5, 1.0),
])
def test_parse_policy_reads_n_per_unit_with_burst_n(spec, rate, burst):
    policy = parse_policy(spec)
    assert (policy.rate, policy.burst) == (pytest.approx(rate), burst)


def test_parse_policy_takes_an_explicit_burst():
    policy = parse_policy("10/minute", burst=50)
    assert (policy.rate, policy.burst) == (pytest.approx(10 / 60), 50)


@pytest.mark.parametrize("spec", ["", "10", "10/min", "10/minutes", "ten/minute", "-1/second",
                                  "0/second", "10/Minute", "10 per minute", "/second"])
def test_parse_policy_refuses_anything_else_and_quotes_it(spec):
    with pytest.raises(ValueError, match=r"/second|positive") as raised:
        parse_policy(spec)
    assert repr(spec) in str(raised.value)


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1.0), (-1.0, 1.0), (1.0, 0.0),
                                             (float("inf"), 1.0), (1.0, float("nan"))])
def test_bucket_policy_refuses_non_positive_or_non_finite_values(rate, burst):
    with pytest.raises(ValueError, match="positive"):
        BucketPolicy(rate=rate, burst=burst)


def test_parse_policy_refuses_a_non_positive_burst():
    with pytest.raises(ValueError, match="burst"):
        parse_policy("10/minute", burst=0)


# --- take -------------------------------------------------------------------

def test_a_new_bucket_starts_full():
    taken = take(None, T0, ONE_PER_SECOND)
    assert taken.allowed
    assert taken.retry_after == 0.0
    assert taken.state == {"tokens": 2.0, "at": T0}


def test_a_burst_is_allowed_then_refused_with_the_wait_until_a_token():
    # Given a full bucket of three
    state = None
    # When four notifications arrive at the same instant
    outcomes = []
    for _ in range(4):
        taken = take(state, T0, ONE_PER_SECOND)
        outcomes.append(taken.allowed)
        state = taken.state
    # Then three go and the fourth must wait one second for the next token
    assert outcomes == [True, True, True, False]
    assert taken.retry_after == pytest.approx(1.0)


def test_a_refusal_consumes_nothing():
    # Given an empty bucket
    state = {"tokens": 0.0, "at": T0}
    # When takes are refused again and again
    for _ in range(5):
        taken = take(state, T0 + 0.5, ONE_PER_SECOND)
        assert not taken.allowed
        state = taken.state
    # Then the half token refilled meanwhile is still there
    assert state["tokens"] == pytest.approx(0.5)
    assert take(state, T0 + 1.0, ONE_PER_SECOND).allowed


@pytest.mark.parametrize(("tokens", "elapsed", "allowed", "left", "retry_after"), [
    (0.0, 0.25, False, 0.25, 0.75),   # refills continuously, not in whole tokens
    (0.0, 0.999, False, 0.999, 0.001),
    (0.0, 1.0, True, 0.0, 0.0),       # exactly one token after exactly one second
    (0.5, 0.5, True, 0.0, 0.0),
    (0.0, 3600.0, True, 2.0, 0.0),    # an hour idle refills only up to the burst
    (3.0, 10.0, True, 2.0, 0.0),      # a full bucket stays full
])
def test_take_refills_continuously_up_to_the_burst(tokens, elapsed, allowed, left, retry_after):
    taken = take({"tokens": tokens, "at": T0}, T0 + elapsed, ONE_PER_SECOND)
    assert taken.allowed is allowed
    assert taken.state["tokens"] == pytest.approx(left, abs=CLOSE)
    assert taken.state["at"] == T0 + elapsed
    assert taken.retry_after == pytest.approx(retry_after, abs=CLOSE)


def test_a_clock_going_backwards_mints_no_tokens():
    # Given a bucket emptied at T0 + 10
    state = {"tokens": 0.0, "at": T0 + 10}
    # When the clock jumps back five seconds, the bucket is still empty,
    # and the wait counts the five seconds back to where it was
    taken = take(state, T0 + 5, ONE_PER_SECOND)
    assert not taken.allowed
    assert taken.retry_after == pytest.approx(6.0)
    # Then the later instant is kept, so the same seconds are not counted twice
    assert taken.state == {"tokens": 0.0, "at": T0 + 10}
    assert not take(taken.state, T0 + 10.5, ONE_PER_SECOND).allowed
    assert take(taken.state, T0 + 11, ONE_PER_SECOND).allowed


def test_a_lowered_burst_applies_to_a_bucket_already_fuller():
    taken = take({"tokens": 100.0, "at": T0}, T0, ONE_PER_SECOND)
    assert taken.state["tokens"] == pytest.approx(2.0)


def test_take_with_a_cost():
    taken = take(None, T0, ONE_PER_SECOND, cost=2.5)
    assert taken.allowed and taken.state["tokens"] == pytest.approx(0.5)
    refused = take(taken.state, T0, ONE_PER_SECOND, cost=2.5)
    assert not refused.allowed and refused.retry_after == pytest.approx(2.0)


@pytest.mark.parametrize("cost", [-1.0, 3.5])
def test_a_cost_that_could_never_be_taken_is_an_error(cost):
    with pytest.raises(ValueError, match="cost"):
        take(None, T0, ONE_PER_SECOND, cost=cost)


def test_the_state_is_a_plain_json_value():
    state = take(None, T0, parse_policy("10/minute")).state
    assert json.loads(json.dumps(state)) == state


def test_take_does_not_change_the_stored_value():
    state = {"tokens": 1.0, "at": T0}
    take(state, T0 + 1, ONE_PER_SECOND)
    assert state == {"tokens": 1.0, "at": T0}


# --- bucket_key -------------------------------------------------------------

@pytest.mark.parametrize(("parts", "key"), [
    (("user", "u-1", "email"), "user\x1fu-1\x1femail"),
    (("category", "marketing"), "category\x1fmarketing"),
    (("category",), "category"),
])
def test_bucket_key_joins_its_parts(parts, key):
    assert bucket_key(*parts) == key


def test_bucket_keys_of_different_buckets_differ():
    assert bucket_key("user", "u-1", "email") != bucket_key("user", "u-1", "sms")
    assert bucket_key("user", "u-1", "email") != bucket_key("user", "u-2", "email")


def test_a_part_containing_the_separator_is_refused():
    # "a\x1fb" + "c" and "a" + "b\x1fc" would otherwise share a key
    with pytest.raises(ValueError, match="separator"):
        bucket_key("user", "a\x1fb", "c")


# --- decide -----------------------------------------------------------------

USER = BucketPolicy(rate=1.0, burst=1.0)
CATEGORY = BucketPolicy(rate=10.0, burst=2.0)
EMPTY = {"tokens": 0.0, "at": T0}
FULL_USER = {"tokens": 1.0, "at": T0}
FULL_CATEGORY = {"tokens": 2.0, "at": T0}


@pytest.mark.parametrize(("user", "category", "on_excess", "outcome", "retry_after"), [
    (None, None, "defer", "allow", 0.0),           # new buckets start full
    (FULL_USER, FULL_CATEGORY, "defer", "allow", 0.0),
    (EMPTY, FULL_CATEGORY, "defer", "defer", 1.0),  # the user's bucket refuses
    (FULL_USER, EMPTY, "defer", "defer", 0.1),      # the category's bucket refuses
    (EMPTY, EMPTY, "defer", "defer", 1.0),          # both: wait for the slower one
    (EMPTY, FULL_CATEGORY, "drop", "drop", 1.0),
    (FULL_USER, EMPTY, "drop", "drop", 0.1),
])
def test_decide_needs_both_buckets(user, category, on_excess, outcome, retry_after):
    decision = decide(user, category, T0, RatePolicy(USER, CATEGORY, on_excess))
    assert decision.outcome == outcome
    assert decision.retry_after == pytest.approx(retry_after)


def test_an_allowed_notification_consumes_from_both_buckets():
    decision = decide(FULL_USER, FULL_CATEGORY, T0, RatePolicy(USER, CATEGORY, "defer"))
    assert decision.user_state == {"tokens": 0.0, "at": T0}
    assert decision.category_state == {"tokens": 1.0, "at": T0}


@pytest.mark.parametrize(("user", "category"), [(EMPTY, FULL_CATEGORY), (FULL_USER, EMPTY)])
def test_a_refusal_by_either_bucket_consumes_from_neither(user, category):
    # Given one bucket with tokens and the other empty
    # When the notification is refused
    decision = decide(user, category, T0, RatePolicy(USER, CATEGORY, "defer"))
    # Then the bucket that had tokens still has them all
    assert decision.outcome == "defer"
    assert decision.user_state == user
    assert decision.category_state == category


def test_a_refused_new_bucket_is_stored_full():
    decision = decide(None, EMPTY, T0, RatePolicy(USER, CATEGORY, "drop"))
    assert decision.user_state == {"tokens": 1.0, "at": T0}


@pytest.mark.parametrize(("policy", "user_state", "category_state"), [
    (RatePolicy(None, CATEGORY, "defer"), None, {"tokens": 1.0, "at": T0}),
    (RatePolicy(USER, None, "defer"), {"tokens": 0.0, "at": T0}, None),
    (RatePolicy(None, None, "defer"), None, None),
])
def test_a_missing_bucket_limits_nothing_and_stores_nothing(policy, user_state, category_state):
    # Given empty stored values for the buckets the policy does not have
    user = FULL_USER if policy.per_user_channel else EMPTY
    category = FULL_CATEGORY if policy.per_category else EMPTY
    # When deciding, only the policy's buckets count and are returned
    decision = decide(user, category, T0, policy)
    assert decision.outcome == "allow"
    assert (decision.user_state, decision.category_state) == (user_state, category_state)


# --- parse_rate_policies ----------------------------------------------------

def test_the_documented_example():
    # Given the example of the module docstring
    spec = "marketing=5/hour:drop; marketing.global=1000/second; default=30/minute"
    # When it is parsed
    policies = parse_rate_policies(spec)
    # Then marketing has both buckets and drops, and default defers
    assert policies["marketing"] == RatePolicy(parse_policy("5/hour"), parse_policy("1000/second"),
                                               "drop")
    assert policies["default"] == RatePolicy(parse_policy("30/minute"), None, "defer")


def test_a_category_takes_what_it_leaves_unset_from_default():
    policies = parse_rate_policies("default=30/minute:drop;default.global=100/second;"
                                   "otp=3/minute;news.global=10/second:defer")
    assert policies["otp"] == RatePolicy(parse_policy("3/minute"), parse_policy("100/second"),
                                         "drop")
    assert policies["news"] == RatePolicy(parse_policy("30/minute"), parse_policy("10/second"),
                                          "defer")


def test_without_default_a_category_is_limited_only_by_what_it_sets():
    assert parse_rate_policies("news.global=10/second") == {
        "news": RatePolicy(None, parse_policy("10/second"), "defer")}


@pytest.mark.parametrize("spec", ["", "  ", ";", " ; ;"])
def test_an_empty_setting_limits_nothing(spec):
    assert parse_rate_policies(spec) == {}


def test_policy_for_falls_back_to_default_then_to_none():
    policies = parse_rate_policies("marketing=5/hour;default=30/minute")
    assert policy_for(policies, "marketing") is policies["marketing"]
    assert policy_for(policies, "account") is policies["default"]
    assert policy_for(parse_rate_policies("marketing=5/hour"), "account") is None


@pytest.mark.parametrize(("spec", "bad_part", "reason"), [
    ("marketing", "marketing", "expected CATEGORY=RATE"),
    ("marketing=5/hour;news=5", "news=5", "not a rate"),
    ("marketing=5/fortnight", "marketing=5/fortnight", "not a rate"),
    ("marketing=5/hour:later", "marketing=5/hour:later", "neither defer nor drop"),
    ("marketing=5/hour:", "marketing=5/hour:", "neither defer nor drop"),
    ("=5/hour", "=5/hour", "not a category name"),
    ("*category=1000/second", "*category=1000/second", "not a category name"),
    (".global=1/second", ".global=1/second", "not a category name"),
    ("a b=1/second", "a b=1/second", "not a category name"),
    ("news=1/second;news=2/second", "news=2/second", "per-user rate of news is set twice"),
    ("news.global=1/second;news.global=2/second", "news.global=2/second",
     "global rate of news is set twice"),
    ("news=1/second:drop;news.global=2/second:defer", "news.global=2/second:defer",
     "both defer and drop"),
])
def test_a_bad_setting_names_the_entry_at_fault(spec, bad_part, reason):
    with pytest.raises(ValueError) as raised:
        parse_rate_policies(spec)
    assert repr(bad_part) in str(raised.value)
    assert reason in str(raised.value)


def test_the_same_action_on_both_entries_of_a_category_is_fine():
    policies = parse_rate_policies("news=1/second:drop;news.global=2/second:drop")
    assert policies["news"].on_excess == "drop"


def test_per_partition_splits_only_the_category_bucket() -> None:
    # Given 800/second per category and 30/minute per user
    policy = parse_rate_policies("news=30/minute; news.global=800/second")["news"]
    # When spread over 8 partitions
    shared = per_partition(policy, 8)
    # Then each partition's category bucket gets an eighth, users keep theirs
    assert shared.per_category == BucketPolicy(rate=100.0, burst=100.0)
    assert shared.per_user_channel == policy.per_user_channel
    assert per_partition(policy, 1) is policy
