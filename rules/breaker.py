"""A circuit breaker per provider: stop hammering a provider that is down.

closed ──(threshold consecutive failures)──▶ open ──(open_seconds)──▶ half-open
  ▲                                                                  │
  └──────────────(a trial succeeds)──── half-open ◀──(a trial fails: open again)

Plain values in, plain values out; the delivery agent keeps one per
provider in memory (each worker judges the provider from its own calls).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
#: Exported as the ``herald_circuit_state`` gauge.
STATE_VALUES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}


@dataclass(frozen=True)
class BreakerPolicy:
    """When to open, and how long to stay open before a trial call."""

    failure_threshold: int = 5
    open_seconds: float = 30.0


@dataclass(frozen=True)
class Breaker:
    """A breaker's state: consecutive failures and when it opened."""

    state: str = CLOSED
    failures: int = 0
    opened_at: float = 0.0
    trial_running: bool = False


def allow(breaker: Breaker, now: float, policy: BreakerPolicy) -> tuple[bool, Breaker]:
    """Whether a call may go through now, and the breaker after deciding.

    Open past its time becomes half-open and lets exactly one trial through.
    """
    if breaker.state == CLOSED:
        return True, breaker
    if breaker.state == OPEN and now - breaker.opened_at >= policy.open_seconds:
        return True, replace(breaker, state=HALF_OPEN, trial_running=True)
    if breaker.state == HALF_OPEN and not breaker.trial_running:
        return True, replace(breaker, trial_running=True)
    return False, breaker


def succeeded(breaker: Breaker) -> Breaker:
    """The breaker after a successful call: closed, failures forgotten."""
    return Breaker()


def failed(breaker: Breaker, now: float, policy: BreakerPolicy) -> Breaker:
    """The breaker after a failed call (only transient failures count)."""
    if breaker.state == HALF_OPEN:
        return Breaker(state=OPEN, failures=breaker.failures + 1, opened_at=now)
    failures = breaker.failures + 1
    if failures >= policy.failure_threshold:
        return Breaker(state=OPEN, failures=failures, opened_at=now)
    return replace(breaker, failures=failures)
