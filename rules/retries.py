"""What happens after a failed delivery attempt: retry later, or give up.

A transient failure goes to retry topic n (``deliveries.<channel>.retry.<n>``)
after the n-th attempt, due after that topic's delay with jitter (or the
provider's Retry-After, if longer), while retry topics remain. A permanent
failure, or a transient one with no retry topic left, is dead: dead-lettered
and handed to the notification's fallback channel, if it has one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

DEFAULT_DELAYS = (5.0, 30.0, 300.0)


@dataclass(frozen=True)
class Retry:
    """Try again through retry topic ``stage`` (1-based) in ``delay`` seconds."""

    stage: int
    delay: float


def parse_delays(spec: str) -> tuple[float, ...]:
    """``"5,30,300"`` → (5.0, 30.0, 300.0); an empty spec means no retries."""
    delays = tuple(float(part) for part in spec.split(",") if part.strip())
    if any(delay <= 0 for delay in delays):
        raise ValueError("retry delays must be positive seconds, e.g. 5,30,300")
    return delays


def after_failure(attempt: int, *, retriable: bool, delays: Sequence[float],
                  retry_after: float | None = None, jitter: float = 0.2,
                  rand: random.Random | None = None) -> Retry | None:
    """The retry for the failed ``attempt`` (1-based), or ``None`` when it is dead."""
    if not retriable or attempt > len(delays):
        return None
    base = delays[attempt - 1]
    delay = base + (rand or random).uniform(-jitter, jitter) * base
    return Retry(stage=attempt, delay=max(delay, retry_after or 0.0))


def fallback_after(channel: str, chain: Sequence[str]) -> str | None:
    """The channel to try after ``channel`` failed for good, following ``chain``."""
    if channel not in chain:
        return None
    position = list(chain).index(channel)
    return chain[position + 1] if position + 1 < len(chain) else None
