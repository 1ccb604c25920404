"""The recorder: ``delivery-events`` into PostgreSQL, in batches, losing nothing.

A batch is written in one round trip, then its offsets are committed; while
PostgreSQL cannot be reached the recorder backs off and tries the same batch
again, so nothing is committed and nothing is lost. A batch PostgreSQL
rejects as data is dead-lettered event by event, as is an event that does
not parse.

The recorder needs no table, so it reads with a plain aiokafka consumer in a
group of its own (``<app id>-recorder``) rather than as a Faust agent: Faust's
per-event machinery cost more than the recording itself, for the three status
events of every notification (issue 7 profile). A partition this group never
committed starts where the Faust group's recorder agent left it, so an upgrade
neither skips nor re-records history.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from typing import Any, Iterable, Sequence

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from mode import Service

from agents.emitters import dead_letter
from app import logs, metrics
from app.context import Herald
from app.offsets import commit_or_skip, committed_offsets, consumer_lag, own_consumer
from app.topics import DELIVERY_EVENTS
from rules.backoff import backoff_delay
from rules.statuses import STATUS_RANK, fold_events
from schemas.records import DeliveryEvent

logger = logging.getLogger("herald.agents.recorder")

BATCH_SIZE = 500
BATCH_WITHIN_SECONDS = 0.2
#: Pause before fetching again after Kafka or the batch itself failed.
RETRY_SECONDS = 1.0

#: Failures that say "PostgreSQL is not there right now", not "bad data".
UNAVAILABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.OperatorInterventionError,
)


def group_id(app_id: str) -> str:
    """The recorder's consumer group."""
    return f"{app_id}-recorder"


def register(herald: Herald) -> None:
    """Run the recorder as a service of the worker."""
    recorder = Recorder(herald)
    herald.app.service(recorder)  # type: ignore[arg-type]
    herald.lag_sources.append(recorder.lag)


class Recorder(Service):
    """Consumes ``delivery-events`` in batches and writes them to PostgreSQL."""

    def __init__(self, herald: Herald, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.herald = herald
        self.consumer: AIOKafkaConsumer | None = None
        #: What this worker committed (or found committed) per partition it records.
        self.committed: dict[TopicPartition, int] = {}

    async def on_start(self) -> None:
        settings = self.herald.settings
        self.consumer = own_consumer(settings, group_id(settings.app_id), "recorder")
        await self.consumer.start()
        started = await committed_offsets(settings.kafka_bootstrap, settings.app_id,
                                          [DELIVERY_EVENTS])
        self.consumer.subscribe([DELIVERY_EVENTS],
                                listener=_StartWhereTheAgentStopped(self.consumer, started,
                                                                    self.committed))

    async def on_stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()

    @Service.task
    async def _consume(self) -> None:
        consumer = self.consumer
        assert consumer is not None
        while not self.should_stop:
            try:
                batches = await consumer.getmany(timeout_ms=int(BATCH_WITHIN_SECONDS * 1000),
                                                 max_records=BATCH_SIZE)
            except KafkaError as exc:
                logger.warning("recorder could not fetch (%r); trying again", exc)
                await self.sleep(RETRY_SECONDS)
                continue
            records = [message for part in batches.values() for message in part]
            if not records:
                continue
            metrics.event_in("recorder", len(records))
            with logs.event_context(agent="recorder"):
                try:
                    await self._handle(records)
                except Exception:  # noqa: BLE001 - an escaped exception is a lost batch
                    logger.exception("recorder failed on a batch of %d; reading it again",
                                     len(records))
                    for tp, part in batches.items():
                        consumer.seek(tp, part[0].offset)
                    await self.sleep(RETRY_SECONDS)
                    continue
                await commit_or_skip(consumer, {tp: part[-1].offset + 1
                                                for tp, part in batches.items()},
                                     self.committed, "recorder")

    async def _handle(self, records: Sequence[ConsumerRecord]) -> None:
        """Record a batch; what cannot be recorded is dead-lettered, never dropped."""
        events, parsed = [], []
        for message in records:
            try:
                parsed.append(parse_event(message.value))
                events.append(message)
            except Exception as exc:  # noqa: BLE001 - a bad record must not stop the others
                await dead_letter(self.herald, message, "invalid status event", error=repr(exc))
        if not parsed:
            return
        try:
            await record(self.herald, parsed)
        except Exception as exc:  # noqa: BLE001 - an escaped exception is a lost message
            metrics.agent_failed("recorder", len(events))
            logger.exception("recorder failed on a batch of %d", len(events))
            for event in events:
                await dead_letter(self.herald, event, "recorder error", error=repr(exc))

    async def lag(self) -> dict[TopicPartition, int]:
        """End offset minus committed offset of each partition this worker records."""
        return consumer_lag(self.consumer, self.committed) if self.consumer else {}


def parse_event(value: bytes | None) -> DeliveryEvent:
    """One ``delivery-events`` record; raises on anything but a JSON status event."""
    data = orjson.loads(value or b"")
    if not isinstance(data, dict):
        raise ValueError(f"a status event is a JSON object, not {type(data).__name__}")
    attempts = data.get("attempts")
    if attempts is not None and type(attempts) is not int:
        raise ValueError("attempts must be an integer")
    # Without Faust's per-field pass (10.6 -> about 5 us per event, 2.9 per notification);
    # raises on a missing field.
    event = DeliveryEvent.from_values(data)
    for name in ("notification_id", "channel", "status", "at"):
        if not isinstance(getattr(event, name), str):
            raise ValueError(f"{name} must be a string")
    # Checked here so that one bad event cannot fail the batch it came in.
    if event.status not in STATUS_RANK:
        raise ValueError(f"unknown status {event.status!r}")
    datetime.fromisoformat(event.at)
    return event


class _StartWhereTheAgentStopped(ConsumerRebalanceListener):
    """Seeks a partition this group never committed to where the Faust group's agent stopped.

    It also keeps ``committed`` (the recorder's view of its committed offsets,
    for its lag) in step with the assignment.
    """

    def __init__(self, consumer: AIOKafkaConsumer, started: dict[TopicPartition, int],
                 committed: dict[TopicPartition, int]) -> None:
        self.consumer, self.started, self.committed = consumer, started, committed

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        for tp in revoked:
            self.committed.pop(tp, None)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        for tp in assigned:
            committed = await self.consumer.committed(tp)
            if committed is None and tp in self.started:
                self.consumer.seek(tp, self.started[tp])
                committed = self.started[tp]
            if committed is not None:
                self.committed[tp] = committed


def _log_recorded(values: Sequence[DeliveryEvent]) -> None:
    """At debug level, one line per recorded status change, carrying its notification id."""
    if not logger.isEnabledFor(logging.DEBUG):
        return
    for value in values:
        with logs.event_context(notification_id=value.notification_id):
            logger.debug("recorded %s on %s", value.status, value.channel)


async def record(herald: Herald, values: Sequence[DeliveryEvent]) -> None:
    """Write one batch, retrying for as long as PostgreSQL is unavailable."""
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
