"""The circuit breaker's state machine."""

from rules.breaker import CLOSED, HALF_OPEN, OPEN, Breaker, BreakerPolicy, allow, failed, succeeded

POLICY = BreakerPolicy(failure_threshold=3, open_seconds=10.0)


def fail_times(n, now=0.0):
    breaker = Breaker()
    for _ in range(n):
        breaker = failed(breaker, now, POLICY)
    return breaker


def test_opens_after_the_threshold_of_consecutive_failures():
    assert fail_times(2).state == CLOSED
    assert fail_times(3).state == OPEN


def test_a_success_resets_the_count():
    breaker = succeeded(fail_times(2))
    assert failed(breaker, 0.0, POLICY).state == CLOSED


def test_open_refuses_until_its_time_then_lets_one_trial_through():
    # Given a breaker opened at t=100
    breaker = fail_times(3, now=100.0)
    # Then calls are refused while open
    assert allow(breaker, 109.9, POLICY)[0] is False
    # When its time is up, exactly one trial goes through
    allowed, breaker = allow(breaker, 110.0, POLICY)
    assert allowed and breaker.state == HALF_OPEN
    assert allow(breaker, 110.1, POLICY)[0] is False


def test_a_failed_trial_opens_again_and_a_good_one_closes():
    _, trial = allow(fail_times(3, now=0.0), 10.0, POLICY)
    reopened = failed(trial, 10.5, POLICY)
    assert (reopened.state, reopened.opened_at) == (OPEN, 10.5)
    assert succeeded(trial).state == CLOSED


def test_closed_allows_without_changing():
    breaker = Breaker()
    assert allow(breaker, 0.0, POLICY) == (True, breaker)
