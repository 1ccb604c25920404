"""A table whose writes can be awaited until Kafka has them.

A write to a table is stored locally at once and sent to the table's
changelog later (the worker's outbox, or Faust's buffer under ``exactly_once``,
then the Kafka producer). Where a write must be durable before something else happens (a
delivery's intent, before the provider is called),
:meth:`ConfirmedTable.confirmed` waits for exactly those writes to be
acknowledged (``acks=all``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from faust.types.tuples import FutureMessage

from tables.table import HeraldTable


class ConfirmedTable(HeraldTable):
    """A table that keeps the futures of its changelog writes until they are acknowledged.

    Several delivery batches run at once (one per channel and lane), each
    waiting for its own intents. A write stays in :attr:`_unconfirmed` until
    Kafka acknowledged it, so a batch that asks finds every write still in
    flight, including one that another waiting batch asked about first.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._unconfirmed: set[asyncio.Future[Any]] = set()

    def send_changelog(self, *args: Any, **kwargs: Any) -> FutureMessage:
        fut = super().send_changelog(*args, **kwargs)
        self._track(fut)
        return fut

    def sent(self, partition: int, acknowledged: asyncio.Future[Any], place: int) -> None:
        super().sent(partition, acknowledged, place)
        self._track(acknowledged)

    def _track(self, fut: asyncio.Future[Any]) -> None:
        self._unconfirmed.add(fut)
        fut.add_done_callback(self._acknowledged)

    def _acknowledged(self, fut: asyncio.Future[Any]) -> None:
        # A failed write stays until a caller of confirmed() was told of it.
        if not fut.cancelled() and fut.exception() is None:
            self._unconfirmed.discard(fut)

    async def confirmed(self) -> None:
        """Return once every write made so far is acknowledged by Kafka; raise if one failed."""
        if self.outbox is not None:  # the writes still queued get their futures
            await self.outbox.hand_over()
        waiting = list(self._unconfirmed)
        if not waiting:
            return
        try:
            await asyncio.gather(*waiting)
        except BaseException:
            self._unconfirmed.difference_update(fut for fut in waiting if fut.done())
            raise
