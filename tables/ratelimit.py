"""Token buckets: how many notifications a user, or a whole category, may get.

A bucket is a plain JSON table value, ``{"tokens": 3.5, "at": 1700000000.0}``:
the tokens left at instant ``at``. The level between takes is never stored;
it is recomputed from the elapsed time, so the changelog only carries one
small record per take.

Two buckets guard a notification (:func:`decide`): one per user and channel,
so a noisy category cannot flood one person, and one per category shared by
all users, so a campaign cannot exhaust a provider's quota. Both must allow.
A Faust table keeps a value in the store of the partition whose event wrote
it, so a category bucket taken from a stream keyed by user exists once per
partition: its rate is per partition, not for the whole cluster.

Rate policies are read from one settings string (:func:`parse_rate_policies`)::

    spec    := entry (";" entry)*          blank entries are ignored
    entry   := NAME "=" RATE [":" ACTION]         per user and channel
             | NAME ".global=" RATE [":" ACTION]  one bucket for the whole category
    RATE    := N "/" ("second" | "minute" | "hour" | "day")
    ACTION  := "defer" | "drop"                   what happens over the limit

    e.g. "marketing=5/hour:drop; marketing.global=1000/second; default=30/minute"

``N`` is a positive number; the burst is ``N`` (one period's worth, at least
one token). The entry named ``default`` supplies whatever a category leaves
unset: its per-user rate, its global rate, its action. The action falls back
to ``defer``, because a deferred notification is late but not lost.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any, Literal, Mapping, cast

SEPARATOR = "\x1f"

#: The category whose entries apply to categories that have none of their own.
DEFAULT = "default"

UNITS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*([a-z]+)\s*$")
_NAME = re.compile(r"^[\w-]+(?:\.[\w-]+)*$")
_GLOBAL = ".global"

Action = Literal["defer", "drop"]


@dataclass(frozen=True)
class BucketPolicy:
    """A bucket's refill ``rate`` (tokens per second) and capacity ``burst``."""

    rate: float
    burst: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise ValueError(f"rate must be a positive number of tokens per second ({self.rate!r})")
        if not (math.isfinite(self.burst) and self.burst > 0):
            raise ValueError(f"burst must be a positive number of tokens ({self.burst!r})")


@dataclass(frozen=True)
class Taken:
    """The outcome of one take: allowed or not, the bucket to store, the wait."""

    allowed: bool
    state: dict[str, float]
    #: 0 when allowed; otherwise the seconds until the bucket holds enough.
    retry_after: float


@dataclass(frozen=True)
class RatePolicy:
    """The limits of one category and what to do with a notification over them."""

    per_user_channel: BucketPolicy | None
    per_category: BucketPolicy | None
    on_excess: Action = "defer"


@dataclass(frozen=True)
class RateDecision:
    """Whether a notification goes now, later or never, and the buckets to store.

    ``user_state`` and ``category_state`` are ``None`` when no bucket of that
    kind applies (nothing to store). ``retry_after`` is 0 when allowed, else
    the seconds until both buckets would allow; a dropped notification keeps
    it only to say so in its reason.
    """

    outcome: Literal["allow", "defer", "drop"]
    retry_after: float
    user_state: dict[str, float] | None
    category_state: dict[str, float] | None


def parse_policy(rate: str, burst: float | None = None) -> BucketPolicy:
    """The bucket of ``"N/second|minute|hour|day"``; ``burst`` defaults to N.

    A burst below one token could never let a notification through, so the
    default is never less than one.
    """
    match = _RATE.match(rate)
    if match is None or match.group(2) not in UNITS:
        raise ValueError(f"{rate!r} is not a rate: expected N/second, N/minute, N/hour or N/day")
    count = float(match.group(1))
    if count <= 0:
        raise ValueError(f"{rate!r}: the number of tokens must be positive")
    return BucketPolicy(rate=count / UNITS[match.group(2)],
                        burst=max(count, 1.0) if burst is None else burst)


def bucket_key(scope: str, *parts: str) -> str:
    """The table key of a bucket, e.g. ``("user", "u-1", "email")``."""
    for part in (scope, *parts):
        # A separator inside a part would let two different buckets share a key.
        if SEPARATOR in part:
            raise ValueError(f"bucket key part {part!r} contains the separator")
    return SEPARATOR.join((scope, *parts))


def _level(state: Mapping[str, Any] | None, now: float,
           policy: BucketPolicy) -> tuple[float, float]:
    """The tokens in the bucket at ``now``, and the instant they are counted at."""
    if state is None:
        return policy.burst, now
    at = float(state["at"])
    # A clock that went backwards refills nothing, and ``at`` keeps the later
    # instant so that the same seconds are not counted again when it recovers.
    counted_at = max(at, now)
    tokens = float(state["tokens"]) + policy.rate * (counted_at - at)
    # Capped on every read, so a lowered burst takes effect at once.
    return min(policy.burst, max(0.0, tokens)), counted_at


def take(state: Mapping[str, Any] | None, now: float, policy: BucketPolicy,
         cost: float = 1.0) -> Taken:
    """Take ``cost`` tokens at ``now`` if the bucket holds them; a refusal takes none.

    A bucket never seen before (``state`` is ``None``) starts full. A cost
    above the burst could never be taken and raises :class:`ValueError`.
    """
    if cost < 0:
        raise ValueError(f"cost must not be negative ({cost!r})")
    if cost > policy.burst:
        # It would wait forever: a configuration error, not a busy bucket.
        raise ValueError(f"cost {cost!r} exceeds the bucket's burst {policy.burst!r}")
    tokens, at = _level(state, now, policy)
    if tokens >= cost:
        return Taken(True, {"tokens": tokens - cost, "at": at}, 0.0)
    ready_at = at + (cost - tokens) / policy.rate
    return Taken(False, {"tokens": tokens, "at": at}, ready_at - now)


def decide(user_state: Mapping[str, Any] | None, category_state: Mapping[str, Any] | None,
           now: float, policy: RatePolicy) -> RateDecision:
    """Allow, defer or drop one notification against its user and category buckets.

    Both buckets must allow. When either refuses, neither is consumed: a
    notification that does not go out must not use up the other's tokens.
    """
    takes = [take(state, now, bucket) for state, bucket in
             ((user_state, policy.per_user_channel), (category_state, policy.per_category))
             if bucket is not None]
    refusals = [taken.retry_after for taken in takes if not taken.allowed]
    if not refusals:
        return RateDecision("allow", 0.0, _taken(user_state, now, policy.per_user_channel),
                            _taken(category_state, now, policy.per_category))
    return RateDecision(policy.on_excess, max(refusals),
                        _refilled(user_state, now, policy.per_user_channel),
                        _refilled(category_state, now, policy.per_category))


def _taken(state: Mapping[str, Any] | None, now: float,
           bucket: BucketPolicy | None) -> dict[str, float] | None:
    return None if bucket is None else take(state, now, bucket).state


def _refilled(state: Mapping[str, Any] | None, now: float,
              bucket: BucketPolicy | None) -> dict[str, float] | None:
    # Taking nothing stores the level the old value already implies.
    return None if bucket is None else take(state, now, bucket, cost=0.0).state


def policy_for(policies: Mapping[str, RatePolicy], category: str) -> RatePolicy | None:
    """The policy of ``category``: its own, else ``default``, else none (unlimited)."""
    return policies.get(category, policies.get(DEFAULT))


def parse_rate_policies(spec: str) -> dict[str, RatePolicy]:
    """Parse the rate-limit setting (grammar in the module docstring).

    Every named category gets a complete policy, with what it leaves unset
    taken from ``default``. Errors name the entry at fault.
    """
    rates: dict[tuple[str, bool], BucketPolicy] = {}
    actions: dict[str, Action] = {}
    for entry in (part.strip() for part in spec.split(";")):
        if not entry:
            continue
        name, is_global, bucket, action = _parse_entry(entry)
        if (name, is_global) in rates:
            raise ValueError(f"rate policy {entry!r}: {_describe(name, is_global)} is set twice")
        rates[name, is_global] = bucket
        if action is not None:
            if actions.get(name, action) != action:
                raise ValueError(f"rate policy {entry!r}: {name} is both defer and drop")
            actions[name] = action
    fallback = RatePolicy(rates.get((DEFAULT, False)), rates.get((DEFAULT, True)),
                          actions.get(DEFAULT, "defer"))
    return {
        name: RatePolicy(rates.get((name, False), fallback.per_user_channel),
                         rates.get((name, True), fallback.per_category),
                         actions.get(name, fallback.on_excess))
        for name in dict.fromkeys(name for name, _ in rates)
    }


def _parse_entry(entry: str) -> tuple[str, bool, BucketPolicy, Action | None]:
    name, equals, value = (part.strip() for part in entry.partition("="))
    if not equals:
        raise ValueError(f"rate policy {entry!r}: expected CATEGORY=RATE[:defer|drop]")
    is_global = name.endswith(_GLOBAL)
    if is_global:
        name = name[: -len(_GLOBAL)]
    if not _NAME.match(name):
        raise ValueError(f"rate policy {entry!r}: {name!r} is not a category name")
    rate, colon, action = (part.strip() for part in value.partition(":"))
    if colon and action not in ("defer", "drop"):
        raise ValueError(f"rate policy {entry!r}: action {action!r} is neither defer nor drop")
    try:
        bucket = parse_policy(rate)
    except ValueError as exc:
        raise ValueError(f"rate policy {entry!r}: {exc}") from exc
    return name, is_global, bucket, cast(Action, action) if colon else None


def _describe(name: str, is_global: bool) -> str:
    return f"the global rate of {name}" if is_global else f"the per-user rate of {name}"


def per_partition(policy: RatePolicy, partitions: int) -> RatePolicy:
    """``policy`` with its category bucket split evenly over ``partitions``.

    The category bucket is a table row, and a row lives on the partition of
    the event that wrote it; a stream keyed by user therefore has one such
    bucket per partition, each entitled to its share of the rate.
    """
    bucket = policy.per_category
    if bucket is None or partitions == 1:
        return policy
    share = BucketPolicy(rate=bucket.rate / partitions, burst=max(bucket.burst / partitions, 1.0))
    return replace(policy, per_category=share)
