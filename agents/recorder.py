"""The recorder: ``delivery-events`` into PostgreSQL, in batches, losing nothing.

A batch is written in one round trip; while PostgreSQL cannot be reached the
recorder backs off and tries the same batch again, so its offsets are not
committed and nothing is lost. A batch PostgreSQL rejects as data is
dead-lettered event by event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Sequence

import asyncpg
from faust.types import EventT, StreamT

from agents.emitters import dead_letter
from app import logs, metrics
from app.context import Herald
from rules.backoff import backoff_delay
from rules.statuses import fold_events
from schemas.records import DeliveryEvent

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
            metrics.event_in("recorder", len(events))
            with logs.event_context(agent="recorder"):
                try:
                    await record(herald, events)
                except Exception as exc:  # noqa: BLE001 - an escaped exception is a lost message
                    metrics.agent_failed("recorder", len(events))
                    logger.exception("recorder failed on a batch of %d", len(events))
                    for event in events:
                        await dead_letter(herald, event.message, "recorder error",
                                          error=repr(exc))


def _log_recorded(values: Sequence[DeliveryEvent]) -> None:
    """At debug level, one line per recorded status change, carrying its notification id."""
    if not logger.isEnabledFor(logging.DEBUG):
        return
    for value in values:
        with logs.event_context(notification_id=value.notification_id):
            logger.debug("recorded %s on %s", value.status, value.channel)


async def record(herald: Herald, events: Sequence[EventT]) -> None:
    """Write one batch, retrying for as long as PostgreSQL is unavailable."""
    values = [event.value for event in events]
    rows = fold_events(values)
    attempt = 0
    while True:
        started = time.perf_counter()
        try:
            await herald.store.record(values, rows)
            metrics.recorded(len(values), time.perf_counter() - started)
            _log_recorded(values)
            return
        except UNAVAILABLE as exc:
            metrics.recorder_retried()
            attempt += 1
            delay = backoff_delay(attempt, base=0.5, cap=30.0)
            logger.warning("PostgreSQL unavailable (%s); retrying a batch of %d in %.1fs",
                           exc, len(values), delay)
            await asyncio.sleep(delay)
