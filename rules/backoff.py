"""Exponential backoff with jitter, for anything herald retries."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, *, base: float, cap: float, jitter: float = 0.2,
                  rand: random.Random | None = None) -> float:
    """The wait before retry ``attempt`` (1-based): base·2^(attempt-1), capped, ±jitter."""
    delay = min(cap, base * (2 ** max(0, attempt - 1)))
    spread = delay * jitter
    return max(0.0, delay + (rand or random).uniform(-spread, spread))
