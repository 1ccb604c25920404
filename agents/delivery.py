"""Delivery: each ``Delivery`` handed to its channel's providers, never lost, never twice.

Per (notification, channel) the ``sends`` table remembers what the
providers were asked and what they answered. The intent is made durable
(acknowledged by Kafka) before a provider hears of the delivery, and "sent" is
written once it accepted; so when Kafka redelivers a record after a crash:

- sent already → nothing is sent again;
- the crash came while the call was in flight (intent without an outcome) →
  the provider may have accepted it, so it is not resent: it is
  dead-lettered as "outcome unknown" for an operator to decide.

A transient failure waits in ``deliveries.<channel>.retry.<n>``; a permanent
one, or the last retry, is dead-lettered, recorded DEAD and handed to the
notification's fallback channel. Unregistered push tokens are removed
through ``user-updates``.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

from faust.types import EventT, StreamT

from agents.emitters import (dead_letter, drain_outbox, emit_status, guarded, handle_batches,
                             handle_each, produce)
from app import metrics
from app.context import Herald
from app.errors import DeliveryError, TokenUnregistered
from providers.channel import NO_PROVIDER, ChannelSender, provider_of
from rules.retries import after_failure, fallback_after
from schemas.records import Delivery, Notification
from tables.keys import compose

#: A retry agent waiting for a due time looks at the rebalance flag this often.
WAIT_STEP_SECONDS = 0.5


def register(herald: Herald) -> None:
    """Declare one delivery agent per channel and lane."""
    for (channel, lane), topic in herald.topics.deliveries.items():
        _deliver_agent(herald, f"deliver-{channel}-{lane}", topic, herald.senders[channel])


def register_retries(herald: Herald) -> None:
    """Declare one retry agent per channel and stage (Faust agents on either hot path)."""
    for (channel, stage), topic in herald.topics.retries.items():
        _retry_agent(herald, f"retry-{channel}-{stage}", topic)


def _deliver_agent(herald: Herald, name: str, topic: object, sender: ChannelSender) -> None:
    @herald.app.agent(topic, name=name)
    async def deliver(stream: StreamT) -> None:
        # Up to HERALD_DELIVERY_BATCH deliveries at once: their intents are awaited
        # together and their provider calls run concurrently.
        await handle_batches(herald, stream,
                             lambda agent, events: deliver_batch(herald, sender, agent, events),
                             size=herald.settings.delivery_batch)


def _retry_agent(herald: Herald, name: str, topic: object) -> None:
    @herald.app.agent(topic, name=name)
    async def retry(stream: StreamT) -> None:
        await handle_each(herald, stream, lambda event: release_retry(herald, event),
                          "retry error")


async def deliver_batch(herald: Herald, sender: ChannelSender, agent: str,
                        events: Sequence[EventT]) -> None:
    """Send a batch of deliveries, each at most once per success, and record what happened.

    Every intent of the batch is written first, and the batch waits until
    Kafka acknowledged them all; then the provider calls run concurrently, started in the
    batch's order. A (notification, channel) pair seen twice in one batch
    (a redelivery) waits for the next round, so it finds the first one's
    outcome in ``sends``.
    """
    while events:
        claimed: set[str] = set()
        ready, later = [], []
        for event in events:
            key = _send_key(event.value)
            (later if key in claimed else ready).append(event)
            claimed.add(key)
        intents = [await guarded(herald, agent, event,
                                 lambda e: _intent(herald, e), "delivery error")
                   for event in ready]
        sending = [(event, key) for event, key in zip(ready, intents) if key]
        if sending:
            # The intents must be in Kafka before a provider hears of them.
            await drain_outbox(herald)
            await herald.tables.sends.confirmed()
            await asyncio.gather(*(
                guarded(herald, agent, event,
                        lambda e, key=key: _send(herald, sender, e, key), "delivery error")
                for event, key in sending))
        events = later


def _send_key(d: Delivery) -> str:
    return compose(d.user_id, d.notification_id, d.channel)


async def _intent(herald: Herald, event: EventT) -> str | None:
    """Write the intent to send ``event``'s delivery; ``None`` if it must not be sent."""
    d: Delivery = event.value
    key = _send_key(d)
    sends = herald.tables.sends
    previous = sends.get(key)
    if previous and previous["state"] == "sent":
        await _status(herald, d, "SENT", provider_message_id=previous.get("message_id"))
        return None
    if previous and previous["attempt"] >= d.attempt and previous["state"] != "failed":
        if previous["state"] == "sending":
            await _outcome_unknown(herald, event, d, key)
        return None
    sends[key] = {"state": "sending", "attempt": d.attempt, "at": time.time()}
    return key


async def _send(herald: Herald, sender: ChannelSender, event: EventT, key: str) -> None:
    """Call the providers for an intent already durable, and record the outcome."""
    d: Delivery = event.value
    try:
        receipt = await sender.send(d)
    except DeliveryError as exc:
        await _failed(herald, event, d, key, exc)
        return
    herald.tables.sends[key] = {"state": "sent", "attempt": d.attempt,
                                "message_id": receipt.message_id, "provider": receipt.provider,
                                "at": time.time()}
    # A notification held on purpose (quiet hours, send-at, a fallback) is
    # left out of the latency, which would otherwise measure the hold.
    held = bool((d.notification or {}).get("released"))
    await _status(herald, d, "SENT", provider_message_id=receipt.message_id,
                  created_at=None if held else d.created_at)
    await _remove_tokens(herald, d.user_id, receipt.unregistered_tokens)


async def _status(herald: Herald, d: Delivery, status: str, **fields: Any) -> None:
    await emit_status(herald, d.notification_id, d.channel, status, user_id=d.user_id,
                      attempts=d.attempt, **fields)


async def _outcome_unknown(herald: Herald, event: EventT, d: Delivery, key: str) -> None:
    reason = "outcome unknown"
    error = ("the worker stopped while the provider was being called; not resent, so as "
             "never to send twice (replay from the DLQ to send anyway)")
    herald.tables.sends[key] = {"state": "unknown", "attempt": d.attempt, "at": time.time()}
    await dead_letter(herald, event.message, reason, error=error, delivery=d, attempts=d.attempt)
    metrics.delivery_outcome(d.channel, NO_PROVIDER, "dead_lettered")
    await _status(herald, d, "DEAD", reason=reason, error=error)


async def _failed(herald: Herald, event: EventT, d: Delivery, key: str,
                  exc: DeliveryError) -> None:
    if isinstance(exc, TokenUnregistered):
        await _remove_tokens(herald, d.user_id, exc.tokens)
    retry = after_failure(d.attempt, retriable=exc.retriable,
                          delays=herald.settings.retry_delays,
                          retry_after=getattr(exc, "retry_after", None))
    if retry is not None:
        herald.tables.sends[key] = {"state": "failed", "attempt": d.attempt, "at": time.time()}
        due = datetime.fromtimestamp(time.time() + retry.delay, timezone.utc).isoformat()
        later = Delivery(**{**d.asdict(), "attempt": d.attempt + 1, "not_before": due,
                            "last_error": str(exc)})
        await produce(herald, herald.topics.retries[d.channel, retry.stage], d.user_id, later)
        metrics.delivery_outcome(d.channel, provider_of(exc), "retried")
        await _status(herald, d, "QUEUED", reason=f"retry {retry.stage} in {retry.delay:.1f}s",
                      error=str(exc))
        return
    reason = "retries exhausted" if exc.retriable else "permanent provider error"
    herald.tables.sends[key] = {"state": "dead", "attempt": d.attempt, "at": time.time()}
    await dead_letter(herald, event.message, reason, error=str(exc), delivery=d,
                      attempts=d.attempt)
    metrics.delivery_outcome(d.channel, provider_of(exc), "dead_lettered")
    await _status(herald, d, "DEAD", reason=reason, error=str(exc))
    await _fall_back(herald, d)


async def _fall_back(herald: Herald, d: Delivery) -> None:
    """Hand the notification to the next channel of its fallback chain, if any."""
    channel = fallback_after(d.channel, d.fallback)
    if channel is None or d.notification is None:
        return
    again = Notification(**{**d.notification, "channels": [channel], "released": True})
    await herald.topics.lanes[d.lane].send(key=d.user_id, value=again)


async def _remove_tokens(herald: Herald, user_id: str, tokens: tuple[str, ...]) -> None:
    """Ask the profile agent to forget push tokens the provider says are gone."""
    if tokens:
        update = {"user_id": user_id, "remove_push_tokens": list(tokens)}
        await herald.topics.user_updates.send(key=user_id, value=json.dumps(update).encode())


async def release_retry(herald: Herald, event: EventT) -> None:
    """Wait until a failed delivery is due, then hand it back to its channel's agent.

    Records of one retry topic share a delay, so they come due in the order
    they wait in. During a rebalance the wait stops and the record goes back
    to the end of its retry topic, so partitions are never held hostage.
    """
    d: Delivery = event.value
    due = datetime.fromisoformat(d.not_before).timestamp() if d.not_before else 0.0
    if not await wait_until(due, interrupted=lambda: bool(herald.app.rebalancing)):
        await produce(herald, herald.topics.retries[d.channel, d.attempt - 1], d.user_id, d)
        return
    await produce(herald, herald.topics.deliveries[d.channel, d.lane], d.user_id, d)


async def wait_until(due: float, interrupted: Callable[[], bool]) -> bool:
    """Sleep until ``due`` (epoch seconds); ``False`` if ``interrupted`` first."""
    while (left := due - time.time()) > 0:
        if interrupted():
            return False
        await asyncio.sleep(min(left, WAIT_STEP_SECONDS))
    return True
