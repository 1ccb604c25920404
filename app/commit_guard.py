"""Never commit past a record no agent handled (faust-streaming #606), and read it again.

Faust commits, per partition, the end of the first run of consecutive acked
offsets. Its check for a missing head of that run is off by one: with the
committed position at 2 (record 2 is next) and record 3 acked, it commits 4,
and record 2 is never handled. That happens in a rebalance: a record
fetched just before the new generation is known is skipped by the stream
(it is from the "old" generation) while the next one is handled. Found by
the chaos run: 9 of 636 deliveries were committed without ever being sent.

Two parts:

- :func:`install` wraps ``Consumer._new_offset``: while the record at the
  committed position is neither acked nor a known gap (compaction,
  transaction markers), nothing is committed for that partition;
- :class:`CommitGuard` notices a partition held that way for two checks in
  a row and seeks it back to its committed position, so the skipped record
  is fetched again. Records after it are handled a second time, which
  herald's idempotent handling (dedup, the ``sends`` table, the recorder's
  upserts) makes harmless.

Faust takes the records it commits out of its acked list before the commit
is sent, and updates the committed position only after the commit, which
first flushes the producer: seconds under load. Meanwhile the acked list
starts past the committed position. So the position a record is judged
against is the offset being committed, once chosen (:func:`position`), not
the stale committed one; otherwise a busy worker re-read thousands of
handled records (measured in the issue 7 benchmark).
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

from faust.transport.consumer import Consumer
from mode import Service

logger = logging.getLogger("herald.commit_guard")

#: Seconds between two looks at the consumer's acked offsets.
CHECK_SECONDS = 2.0


def missing_head(acked: Iterable[int], committed: int | None,
                 gaps: Iterable[tuple[int, int]]) -> bool:
    """Whether the record at ``committed`` (the next to handle) is missing from ``acked``.

    ``gaps`` are half-open ``[begin, end)`` ranges of offsets that do not
    exist (Faust records them when fetched offsets jump); they count as
    handled. Unknown ``committed`` (never committed): nothing to compare with.
    """
    offsets = list(acked)
    if not offsets or committed is None:
        return False
    head = min(offsets)
    position = committed
    for begin, end in sorted(gaps):
        if begin <= position < end:
            position = end
    return head > position


def _gaps(consumer: Consumer, tp: Any) -> list[tuple[int, int]]:
    return [(interval.begin, interval.end) for interval in consumer._gap.get(tp, ())]  # noqa: SLF001


#: The offset chosen for each partition by the commit in flight (Faust's
#: ``_commit_fut``), per consumer: the committed position catches up after.
COMMITTING = "_herald_committing"


def position(consumer: Consumer, tp: Any) -> int | None:
    """The next record to handle on ``tp``: committed, or being committed right now."""
    committed = consumer._committed_offset.get(tp)  # noqa: SLF001
    in_flight = getattr(consumer, "_commit_fut", None)
    chosen = getattr(consumer, COMMITTING, {}).get(tp)
    # An offset chosen by an earlier commit that failed must not count.
    committing = chosen[1] if chosen and in_flight is not None and chosen[0] is in_flight \
        else None
    known = [offset for offset in (committed, committing) if offset is not None]
    return max(known) if known else None


def blocked_partitions(consumer: Consumer) -> dict[Any, int]:
    """The partitions whose next record to handle is not handled, with that position."""
    blocked = {}
    for tp, acked in list(consumer._acked.items()):  # noqa: SLF001
        head = position(consumer, tp)
        if missing_head(acked, head, _gaps(consumer, tp)):
            assert head is not None
            blocked[tp] = head
    return blocked


def install() -> None:
    """Wrap Faust's ``Consumer._new_offset`` once (idempotent)."""
    original = Consumer._new_offset  # noqa: SLF001
    if getattr(original, "herald_guarded", False):
        return

    def _new_offset(self: Consumer, tp: Any) -> int | None:
        acked = self._acked[tp]  # noqa: SLF001
        if missing_head(acked, position(self, tp), _gaps(self, tp)):
            return None
        offset = original(self, tp)
        if offset is not None:
            in_flight = getattr(self, "_commit_fut", None)
            self.__dict__.setdefault(COMMITTING, {})[tp] = (in_flight, offset)
        return offset

    _new_offset.herald_guarded = True  # type: ignore[attr-defined]
    Consumer._new_offset = _new_offset  # type: ignore[method-assign]  # noqa: SLF001


class CommitGuard(Service):
    """Seeks back a partition whose committed record stayed unhandled for two checks."""

    def __init__(self, app: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.app = app
        self.seen: dict[Any, int] = {}

    async def on_start(self) -> None:
        self.add_future(self._watch())

    async def _watch(self) -> None:
        while not self.should_stop:
            await self.sleep(CHECK_SECONDS)
            try:
                await self.check()
            except Exception as exc:  # noqa: BLE001 - the guard must never stop the worker
                logger.warning("commit guard check failed: %r", exc)

    async def check(self) -> None:
        """Seek back what was blocked at the same position last time too."""
        consumer = self.app.consumer
        if consumer is None or self.app.rebalancing:
            self.seen.clear()
            return
        blocked = blocked_partitions(consumer)
        for tp, committed in blocked.items():
            if self.seen.get(tp) == committed:
                logger.warning("re-reading %s from offset %d: that record was skipped during a "
                               "rebalance and never handled (faust-streaming #606)", tp, committed)
                await consumer.seek(tp, committed)
        self.seen = blocked
