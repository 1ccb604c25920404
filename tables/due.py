"""When the held rows of a table come due, per partition, so a tick reads only what is due.

The ``scheduled`` and ``digests`` tables hold rows until a time (quiet hours,
``send_at``, rate-limit deferrals, a digest's window). Finding the due ones by
reading a whole partition on every tick costs as much as the partition is
large: a night of quiet hours for a million users would have every tick read
a million rows. A :class:`DueIndex` keeps each partition's due times in a
heap instead. It is built from the partition's rows the first time a tick
needs it in a consumer generation (the rows may have changed while another
worker owned the partition), and the router adds each row it holds after that.

An entry is a hint, not the truth: the row is read again before it is
released, so an entry whose row was replaced or removed is skipped.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Iterable


@dataclass
class DueIndex:
    """Due times of one table's held rows, per partition: ``(due, key)`` heaps."""

    _heaps: dict[int, list[tuple[float, str]]] = field(default_factory=dict)
    _generations: dict[int, int] = field(default_factory=dict)

    def built(self, partition: int, generation: int) -> bool:
        """Whether ``partition`` was indexed in consumer ``generation``."""
        return self._generations.get(partition) == generation

    def build(self, partition: int, generation: int, rows: Iterable[tuple[str, float]]) -> None:
        """Index ``partition`` afresh from its ``(key, due)`` rows."""
        heap = [(due, key) for key, due in rows]
        heapq.heapify(heap)
        self._heaps[partition] = heap
        self._generations[partition] = generation

    def add(self, partition: int, due: float, key: str) -> None:
        """Note a row held until ``due``; a partition not indexed yet reads it when it is built."""
        heap = self._heaps.get(partition)
        if heap is not None:
            heapq.heappush(heap, (due, key))

    def pop_due(self, partition: int, now: float) -> tuple[float, str] | None:
        """The earliest entry of ``partition`` due at ``now``, taken out; ``None`` if none is."""
        heap = self._heaps.get(partition)
        if not heap or heap[0][0] > now:
            return None
        return heapq.heappop(heap)

    def __len__(self) -> int:
        return sum(len(heap) for heap in self._heaps.values())
