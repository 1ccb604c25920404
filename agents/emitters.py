"""Producing status events and dead letters, the two outputs every agent shares."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence

from faust import streams as faust_streams
from faust.types import AppT, EventT, HeadersArg, Message, StreamT, TopicT
from faust.utils import json as faust_json

from app import logs, metrics
from app.context import Herald
from schemas.parsing import now_iso
from schemas.records import DeadLetter, Delivery, Notification

logger = logging.getLogger("herald.agents")

#: A dead letter copies at most this much of its record: JSON escaping may grow
#: it up to 6 times, and the letter must stay under Kafka's 1 MiB default.
MAX_DEAD_PAYLOAD_BYTES = 128 * 1024


async def drain_outbox(herald: Herald) -> None:
    """Hand every queued record and table write to the Kafka producer, in order.

    Produced records and table writes queue in the worker's outbox
    (:mod:`app.outbox`) or, under exactly-once, table writes in Faust's
    changelog buffer. Faust drains its buffer in one task, one record at a
    time, and that task waits whenever one partition's batch is full: every
    other table write waits behind it. In the issue 7 benchmark the buffer
    grew by about 1,000 writes a second to its limit, then stalled every
    stream while a commit flushed it (5-10 s). Agents call this after each
    event or batch, so records leave as they are made.
    """
    try:
        await hand_over(herald)
    except Exception:  # noqa: BLE001 - the event is handled; its agent must go on
        logger.exception("records could not be handed to the Kafka producer; kept queued")


async def hand_over(herald: Herald) -> None:
    """:func:`drain_outbox`, raising what the producer raised (the records stay queued)."""
    if herald.tables.outbox is not None:
        await herald.tables.outbox.hand_over()
    await hand_over_table_writes(herald.app)


async def hand_over_table_writes(app: AppT) -> None:
    """Send every write waiting in ``app``'s changelog buffer to the Kafka producer, in order.

    A write's order per partition is kept: the producer appends to a full
    partition's batch in the order the writers waited.
    """
    buffer = app.producer.buffer
    while buffer.size:
        await buffer._send_pending(buffer.pending.get_nowait())  # noqa: SLF001


async def produce(herald: Herald, topic: TopicT, key: str, value: Any, *,
                  partition: int | None = None, timestamp: float | None = None,
                  headers: HeadersArg | None = None) -> None:
    """Produce ``value`` (a record, or bytes as they are) keyed by ``key`` onto ``topic``.

    The record, encoded as Faust encodes it, queues in the worker's outbox
    (:mod:`app.outbox`), which hands it to the Kafka producer in a batch with
    the others of its partition: in the issue 7 profile, Faust's per-send
    machinery (a future message, codecs, sensors, callbacks) cost more than
    the send itself. Under exactly-once, Faust's own send keeps the record in
    the transaction.
    """
    outbox = herald.tables.outbox
    if outbox is None:
        await topic.send(key=key, value=value, partition=partition, timestamp=timestamp,
                         headers=headers)
        return
    data = value if isinstance(value, bytes) else faust_json.dumps(value)
    if isinstance(headers, Mapping):
        headers = list(headers.items())
    outbox.add(topic.get_topic_name(), partition, key.encode(), data,
               timestamp_ms=int(timestamp * 1000) if timestamp else None,
               headers=headers or None)


def notification_columns(notification: Notification) -> dict[str, Any]:
    """The ``notifications`` row columns a status event carries for the recorder."""
    return {
        "id": notification.id, "user_id": notification.user_id,
        "category": notification.category, "priority": notification.priority,
        "title": notification.title, "body": notification.body,
        "data": notification.data, "created_at": notification.created_at,
    }


async def emit_status(
    herald: Herald, notification_id: str, channel: str, status: str, *,
    user_id: str | None = None, reason: str | None = None, error: str | None = None,
    attempts: int = 0, provider_message_id: str | None = None,
    notification: Notification | None = None, created_at: str | None = None,
) -> None:
    """Produce one status change to ``delivery-events``, keyed by notification id.

    Every status change passes here, so this is where it is counted for
    ``/metrics`` (``created_at`` given: the send latency is observed too).
    """
    # A DeliveryEvent as the dict it encodes to, in its fields' order: building
    # the Faust record, then its dict, cost more than the rest of a status change.
    event = {
        "notification_id": notification_id, "channel": channel, "status": status,
        "at": now_iso(), "user_id": user_id, "reason": reason, "error": error,
        "attempts": attempts, "provider_message_id": provider_message_id,
        "notification": notification_columns(notification) if notification else None,
    }
    await produce(herald, herald.topics.delivery_events, notification_id, event)
    metrics.status_changed(channel, status, created_at)


def _text(value: bytes | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return value.decode("utf-8", errors="backslashreplace")


def _headers(headers: Any) -> dict[str, str]:
    pairs = headers.items() if isinstance(headers, Mapping) else (headers or [])
    return {str(name): _text(value) or "" for name, value in pairs}


async def dead_letter(
    herald: Herald, message: Message, reason: str, *, error: str | None = None,
    delivery: Delivery | None = None, attempts: int = 0,
) -> None:
    """Produce the record ``message`` to ``deliveries.dlq`` with why it was given up."""
    key = _text(message.key)
    payload = _text(message.value)
    if payload is not None and len(message.value) > MAX_DEAD_PAYLOAD_BYTES:
        # The letter must fit where the original barely did (Kafka's 1 MiB).
        payload = message.value[:MAX_DEAD_PAYLOAD_BYTES].decode("utf-8", errors="ignore")
        error = (f"{error}; payload cut to {MAX_DEAD_PAYLOAD_BYTES} of {len(message.value)}"
                 f" bytes, the original is at {message.topic}[{message.partition}]@{message.offset}")
    logger.warning("dead-lettering %s[%s]@%s: %s: %s", message.topic, message.partition,
                   message.offset, reason, error)
    letter = DeadLetter(
        reason=reason, error=error, topic=message.topic, at=now_iso(),
        partition=message.partition, offset=message.offset, key=key,
        payload=payload, headers=_headers(message.headers), attempts=attempts,
        delivery=delivery.asdict() if delivery is not None else None,
    )
    await herald.topics.dlq.send(key=key, value=letter)
    metrics.dead_lettered(message.topic, reason)


def agent_name(stream: StreamT) -> str:
    """The name of the agent consuming ``stream`` (Faust prefixes an agent's stream with it)."""
    return getattr(stream, "prefix", "") or metrics.NO_AGENT


async def handle_each(herald: Herald, stream: StreamT, handle: Callable[[EventT], Awaitable[None]],
                      failure_reason: str) -> None:
    """Run ``handle`` on every event; one that raises is dead-lettered, never lost.

    Faust acks an event whose handler raised, so an exception escaping the
    loop would lose the message and stop the agent. Every line logged while
    an event is handled carries the agent and the notification id
    (:mod:`app.logs`); events in and errors are counted per agent.
    """
    agent = agent_name(stream)
    async for event in stream.events():
        metrics.event_in(agent)
        await guarded(herald, agent, event, handle, failure_reason)
        await drain_outbox(herald)


async def handle_batches(herald: Herald, stream: StreamT,
                         handle: Callable[[str, Sequence[EventT]], Awaitable[None]], *,
                         size: int) -> None:
    """Hand ``handle`` the events that arrived while it was busy, up to ``size`` at a time.

    The events are acked once ``handle`` returned, so a crash redelivers the
    whole batch. ``handle`` runs each event's work through :func:`guarded`,
    which keeps one event's failure from touching the others.
    """
    agent = agent_name(stream)
    async for events in waiting_batches(stream, size):
        metrics.event_in(agent, len(events))
        await handle(agent, events)


async def waiting_batches(stream: StreamT, size: int) -> AsyncIterator[list[EventT]]:
    """The events of ``stream`` in batches: whatever arrived since the last batch was taken.

    Faust's ``take_events(size, within)`` wakes every ``within`` seconds,
    idle or not (eight delivery agents at 5 ms kept an idle worker at 16-18 %
    of a core instead of 4 %). Here, as in ``take_events``, the stream is
    read in the background (Faust's passive reading: a processor gets each
    event), and a batch is taken as soon as one event waits: a lone event
    goes at once, and a backlog forms batches by itself while the previous
    one is handled.

    Only the background reader waits on the stream; the loop that hands out
    batches never does while it holds one. On a rebalance Faust empties the
    agent's queue and waits for every unacked event, so a batch held while
    waiting for the stream would wait forever. The reader waits while
    ``size`` events wait for their turn. Events are acked after their batch
    was handled (or failed), never before.
    """
    waiting: list[EventT] = []
    arrived = asyncio.Event()
    taken = asyncio.Event()

    async def add(value: Any) -> Any:
        waiting.append(stream.current_event)
        arrived.set()
        while len(waiting) >= size:
            taken.clear()
            await taken.wait()
        return value

    acking = stream.enable_acks
    stream.enable_acks = False
    stream.add_processor(add)
    stream._enable_passive(aiter(stream.channel))  # noqa: SLF001 - as take_events does
    try:
        while True:
            await arrived.wait()
            arrived.clear()
            batch, waiting = waiting, []
            taken.set()
            try:
                yield batch
            finally:
                for event in batch:
                    await stream.ack(event)
    finally:  # as take_events leaves the stream
        stream.enable_acks = acking
        stream._processors.remove(add)  # noqa: SLF001


@contextlib.contextmanager
def faust_event(event: EventT) -> Iterator[None]:
    """Within the block, ``event`` is Faust's current event.

    A table write goes to the changelog partition of the current event, which
    Faust sets while a stream hands out one event at a time. The events of a
    batch (``take_events``) are handled after the stream has moved on, so each
    event's work sets it again (Faust has no public setter for it).
    """
    token = faust_streams._current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        faust_streams._current_event.reset(token)


async def guarded(herald: Herald, agent: str, event: EventT,
                  handle: Callable[[EventT], Awaitable[Any]], failure_reason: str) -> Any:
    """``await handle(event)`` in the event's log context; if it raises, dead-letter the event."""
    message = event.message
    notification_id = logs.Lazy(lambda value=event.value: logs.notification_id_of(value))
    with logs.event_context(agent=agent, notification_id=notification_id,
                            topic=message.topic, partition=message.partition,
                            offset=message.offset), faust_event(event):
        try:
            result = await handle(event)
        except Exception as exc:  # noqa: BLE001 - an escaped exception is a lost message
            metrics.agent_failed(agent)
            logger.exception("%s on %s", failure_reason, message.tp)
            await dead_letter(herald, message, failure_reason, error=repr(exc))
            return None
        logger.debug("handled")
        return result
