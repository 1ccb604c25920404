"""A table whose writes can be awaited until Kafka has them.

A write to a Faust table is stored locally at once and sent to the table's
changelog later (Faust's changelog buffer, then the Kafka producer). Where a
write must be durable before something else happens (a delivery's intent,
before the provider is called), :meth:`ConfirmedTable.confirmed` waits for
exactly those writes to be acknowledged (``acks=all``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from faust.types.tuples import FutureMessage

from tables.table import HeraldTable


class ConfirmedTable(HeraldTable):
    """A table that keeps the changelog futures of its writes until confirmed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._unconfirmed: list[FutureMessage] = []

    def send_changelog(self, *args: Any, **kwargs: Any) -> FutureMessage:
        fut = super().send_changelog(*args, **kwargs)
        self._unconfirmed.append(fut)
        return fut

    async def confirmed(self) -> None:
        """Return once every write made so far is acknowledged by Kafka; raise if one failed."""
        futures, self._unconfirmed = self._unconfirmed, []
        if futures:
            await asyncio.gather(*futures)
