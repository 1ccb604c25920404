"""The ingest rate limit: a token bucket per API key on ``POST /v1/notifications``.

``HERALD_INGEST_RATE`` (:func:`parse_ingest_rates`)::

    spec   := entry (";" entry)*
    entry  := [KEY_NAME "="] PER_SECOND ["," BURST]

e.g. ``50,500`` (every key: 50 requests per second, bursts of 500) or
``50,500; batch-importer=5`` (that key has its own, lower rate). The burst
defaults to one second's worth (at least one request); an entry without a
name is the default for keys not named. Each key gets its own bucket, kept
in the memory of the worker that answers, so with N workers behind a
balancer a key may send up to N times its rate. Over the limit the API
answers 429 with ``Retry-After``.

The bucket arithmetic is :func:`tables.ratelimit.take`, the one the
per-user limits use; this module only keeps one bucket per key name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from tables.ratelimit import BucketPolicy, take


@dataclass(frozen=True)
class IngestRates:
    """The bucket of every API key: its own, else the default, else none (unlimited)."""

    default: BucketPolicy | None = None
    per_key: Mapping[str, BucketPolicy] = field(default_factory=dict)

    def for_key(self, name: str) -> BucketPolicy | None:
        """The policy that limits API key ``name``, if any."""
        return self.per_key.get(name, self.default)


def parse_policy(raw: str) -> BucketPolicy:
    """``"<per second>[,<burst>]"`` as a bucket policy; ``ValueError`` saying what is wrong."""
    rate_text, _, burst_text = raw.partition(",")
    try:
        rate = float(rate_text)
        burst = float(burst_text) if burst_text.strip() else max(rate, 1.0)
    except ValueError as exc:
        raise ValueError(f"{raw.strip()!r}: expected <requests per second>[,<burst>], "
                         "e.g. 50,500") from exc
    policy = BucketPolicy(rate=rate, burst=burst)  # refuses zero, negative, inf, nan
    if burst < 1:
        raise ValueError(f"{raw.strip()!r}: burst must be at least 1 request")
    return policy


def parse_ingest_rates(spec: str) -> IngestRates:
    """Parse ``HERALD_INGEST_RATE`` (grammar in the module docstring)."""
    default: BucketPolicy | None = None
    per_key: dict[str, BucketPolicy] = {}
    for entry in (part.strip() for part in spec.split(";")):
        if not entry:
            continue
        name, sep, rate = entry.rpartition("=")
        name = name.strip()
        if sep and not name:
            raise ValueError(f"{entry!r}: the key name before '=' is empty")
        if (name in per_key) if name else (default is not None):
            raise ValueError(f"{entry!r}: {'key ' + repr(name) if name else 'the default'} "
                             "is set twice")
        if name:
            per_key[name] = parse_policy(rate)
        else:
            default = parse_policy(rate)
    if default is None and not per_key:
        raise ValueError("no rate given")
    return IngestRates(default, per_key)


class IngestLimiter:
    """One token bucket per API key name; not thread-safe (one event loop)."""

    def __init__(self, rates: IngestRates) -> None:
        self.rates = rates
        self.buckets: dict[str, dict[str, Any]] = {}

    def admit(self, key_name: str, now: float) -> float:
        """0 if ``key_name`` may send one request at ``now``; else seconds to wait."""
        policy = self.rates.for_key(key_name)
        if policy is None:
            return 0.0
        taken = take(self.buckets.get(key_name), now, policy)
        self.buckets[key_name] = taken.state
        return 0.0 if taken.allowed else taken.retry_after


def retry_after_header(seconds: float) -> str:
    """The ``Retry-After`` value (whole seconds, at least 1) for a wait of ``seconds``."""
    return str(max(1, math.ceil(seconds)))
