"""Expiry: a notification whose ``expires_at`` has passed is not sent.

``expires_at`` is ISO-8601 with an offset, as validated on the way in
(:mod:`schemas.parsing`). A notification expires at that instant exactly:
one routed at ``expires_at`` is already too late.
"""

from __future__ import annotations

from datetime import datetime


def is_expired(expires_at: str | None, now: datetime) -> bool:
    """Whether ``now`` is at or past ``expires_at``; without one, never."""
    if expires_at is None:
        return False
    return _parse(expires_at) <= _aware(now)


def expiry_reason(expires_at: str, now: datetime) -> str:
    """Why an expired notification was not sent, e.g. ``"expired at ..., 42s before routing"``."""
    expiry = _parse(expires_at)
    late = _aware(now) - expiry
    if late.total_seconds() < 0:
        raise ValueError(f"not expired: expires at {expiry.isoformat()}")
    return f"expired at {expiry.isoformat()}, {_duration(late.total_seconds())} before routing"


def _duration(seconds: float) -> str:
    """``42s``, ``3m 5s``, ``2d 1h``: whole seconds, zero units left out."""
    remaining = int(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    return " ".join(parts) or "0s"


def _parse(expires_at: str) -> datetime:
    try:
        instant = datetime.fromisoformat(expires_at)
    except ValueError as exc:
        raise ValueError(f"expires_at: not an ISO-8601 time ({expires_at!r})") from exc
    # Without an offset the instant depends on the server's zone: refuse to guess.
    if instant.utcoffset() is None:
        raise ValueError(f"expires_at: ISO-8601 time needs an offset ({expires_at!r})")
    return instant


def _aware(now: datetime) -> datetime:
    if now.utcoffset() is None:
        raise ValueError(f"now must be an aware datetime, got {now.isoformat()}")
    return now
