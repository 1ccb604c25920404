"""Delivery agents: one per channel, handing each ``Delivery`` to its provider.

Retry topics, fallback and provider failover arrive with the delivery work;
until then a failed delivery is dead-lettered with the provider's reason,
so nothing is dropped silently.
"""

from __future__ import annotations

import logging

from faust.types import EventT, StreamT

from agents.emitters import dead_letter, emit_status
from app.context import Herald
from app.errors import DeliveryError
from providers.base import Provider
from schemas.records import Delivery

logger = logging.getLogger("herald.agents.delivery")


def register(herald: Herald) -> None:
    """Declare one delivery agent per channel on the app."""
    for channel, topic in herald.topics.deliveries.items():
        _register_channel(herald, channel, topic, herald.providers[channel])


def _register_channel(herald: Herald, channel: str, topic: object, provider: Provider) -> None:
    @herald.app.agent(topic, name=f"deliver-{channel}")
    async def deliver(stream: StreamT) -> None:
        async for event in stream.events():
            try:
                await deliver_one(herald, provider, event)
            except Exception as exc:  # noqa: BLE001 - an escaped exception is a lost message
                logger.exception("delivery failed on %s", event.message.tp)
                await dead_letter(herald, event.message, "delivery error", error=repr(exc))


async def deliver_one(herald: Herald, provider: Provider, event: EventT) -> None:
    """Send one delivery and record what happened."""
    delivery: Delivery = event.value
    try:
        receipt = await provider.send(delivery)
    except DeliveryError as exc:
        reason = "transient provider error" if exc.retriable else "permanent provider error"
        await dead_letter(herald, event.message, reason, error=str(exc), delivery=delivery,
                          attempts=delivery.attempt)
        await emit_status(herald, delivery.notification_id, delivery.channel, "DEAD",
                          user_id=delivery.user_id, reason=reason, error=str(exc),
                          attempts=delivery.attempt)
        return
    await emit_status(herald, delivery.notification_id, delivery.channel, "SENT",
                      user_id=delivery.user_id, attempts=delivery.attempt,
                      provider_message_id=receipt.message_id)
