"""The recorder: ``delivery-events`` into PostgreSQL, in batches, losing nothing.

A batch is written in one round trip; while PostgreSQL cannot be reached the
recorder backs off and tries the same batch again, so its offsets are not
committed and nothing is lost. A batch PostgreSQL rejects as data is
dead-lettered event by event.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Sequence

import asyncpg
from faust.types import EventT, StreamT

from agents.emitters import dead_letter
from app.context import Herald
from rules.backoff import backoff_delay
from rules.statuses import fold_events

logger = logging.getLogger("herald.agents.recorder")

BATCH_SIZE = 500
BATCH_WITHIN_SECONDS = 0.2

#: Failures that say "PostgreSQL is not there right now", not "bad data".
UNAVAILABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.OperatorInterventionError,
)


def register(herald: Herald) -> None:
    """Declare the recorder agent on the app."""

    @herald.app.agent(herald.topics.delivery_events, name="recorder")
    async def recorder(stream: StreamT) -> None:
        async for events in stream.take_events(BATCH_SIZE, within=BATCH_WITHIN_SECONDS):
            try:
                await record(herald, events)
            except Exception as exc:  # noqa: BLE001 - an escaped exception is a lost message
                logger.exception("recorder failed on a batch of %d", len(events))
                for event in events:
                    await dead_letter(herald, event.message, "recorder error", error=repr(exc))


async def record(herald: Herald, events: Sequence[EventT]) -> None:
    """Write one batch, retrying for as long as PostgreSQL is unavailable."""
    values = [event.value for event in events]
    rows = fold_events(values)
    attempt = 0
    while True:
        try:
            await herald.store.record(values, rows)
            return
        except UNAVAILABLE as exc:
            attempt += 1
            delay = backoff_delay(attempt, base=0.5, cap=30.0)
            logger.warning("PostgreSQL unavailable (%s); retrying a batch of %d in %.1fs",
                           exc, len(values), delay)
            await asyncio.sleep(delay)
