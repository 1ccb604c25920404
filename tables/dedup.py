"""The dedup window: (user, idempotency key) seen recently means a repeat.

Kept as an expiry timestamp in a plain table and checked here, not as a
windowed table: windowed expiry is unreliable on RocksDB after recovery
(faust-streaming #385, #193).

Each claim remembers the record that made it (partition and offset). Kafka
redelivers a record after a crash (at-least-once); that redelivery is the
same record, not a repeat, and must go through again rather than be lost.
"""

from __future__ import annotations

from typing import Any, Mapping

from tables.keys import compose


def dedup_key(user_id: str, idempotency_key: str) -> str:
    """The ``dedup`` table key of a user's idempotency key."""
    return compose(user_id, idempotency_key)


def claim(source: str, now: float, window_seconds: float) -> dict[str, Any]:
    """The table value recording that ``source`` claimed a key at ``now``."""
    return {"source": source, "expires_at": now + window_seconds}


def is_repeat(entry: Mapping[str, Any] | None, source: str, now: float) -> bool:
    """Whether a record from ``source`` repeats a key claimed by another record."""
    if entry is None or now >= entry["expires_at"]:
        return False
    return bool(entry["source"] != source)


def is_expired(entry: Mapping[str, Any], now: float) -> bool:
    """Whether a claim has left its window and can be purged."""
    return bool(now >= entry["expires_at"])
