"""The ``noop`` provider: accepts every delivery and sends nothing, for benchmarks.

It measures herald itself: no vendor, no network, no logging. With
``HERALD_NOOP_LATENCY_FILE`` set it appends one line per call,
``<created_at as epoch seconds> <seconds from created_at to this call>``,
which the benchmark's latency part reads. Lines are written whole (line
buffering), so the providers of every channel can share one file. With
``HERALD_NOOP_DELAY_MS`` each call takes that long, like a vendor's round trip.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import IO, Mapping

from providers.base import Provider, Receipt
from schemas.records import Delivery


class NoopProvider(Provider):
    """Accepts everything at once; optionally records each call's latency."""

    name = "noop"

    def __init__(self, latency_file: str | None = None, delay: float = 0.0) -> None:
        super().__init__()
        self.delay = delay
        self._latencies: IO[str] | None = open(latency_file, "a", buffering=1, encoding="utf-8") \
            if latency_file else None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "NoopProvider":
        return cls(env.get("HERALD_NOOP_LATENCY_FILE") or None,
                   float(env.get("HERALD_NOOP_DELAY_MS") or 0) / 1000)

    async def _send(self, delivery: Delivery) -> Receipt:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self._latencies is not None:
            created = datetime.fromisoformat(delivery.created_at).timestamp()
            self._latencies.write(f"{created:.6f} {time.time() - created:.6f}\n")
        return Receipt(self.name, f"noop-{delivery.notification_id}-{delivery.channel}")

    async def aclose(self) -> None:
        if self._latencies is not None:
            self._latencies.close()
            self._latencies = None
