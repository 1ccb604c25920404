"""The ``sends`` table: what the providers were asked and answered, per notification and channel.

A row keeps a redelivered or replayed delivery from being sent twice, so it
is kept for ``HERALD_SENDS_RETENTION_SECONDS`` after its last change, then
purged by housekeeping: the table would otherwise grow by a row per delivery
forever (its RocksDB files, its changelog, and a restore's time with them).
An intent whose outcome is open (``sending``: the worker stopped during the
provider call) is never purged: its redelivery must find it and be
dead-lettered as "outcome unknown", however late it comes.
"""

from __future__ import annotations

from typing import Any, Mapping


def is_settled(entry: Mapping[str, Any], now: float, retention_seconds: float) -> bool:
    """Whether a ``sends`` row may go: older than the retention, and not an open intent."""
    return entry.get("state") != "sending" and now - entry.get("at", now) >= retention_seconds
