"""Delivery agents: one per channel, handing each ``Delivery`` to its provider.

Retry topics, fallback and provider failover arrive with the delivery work;
until then a failed delivery is dead-lettered with the provider's reason,
so nothing is dropped silently.
"""

from __future__ import annotations

from faust.types import EventT, StreamT

from agents.emitters import dead_letter, emit_status, handle_each
from app.context import Herald
from app.errors import DeliveryError
from providers.base import Provider
from schemas.records import Delivery


def register(herald: Herald) -> None:
    """Declare one delivery agent per channel and lane on the app."""
    for (channel, lane), topic in herald.topics.deliveries.items():
        _register_channel(herald, f"deliver-{channel}-{lane}", topic, herald.providers[channel])


def _register_channel(herald: Herald, name: str, topic: object, provider: Provider) -> None:
    @herald.app.agent(topic, name=name)
    async def deliver(stream: StreamT) -> None:
        await handle_each(herald, stream, lambda event: deliver_one(herald, provider, event),
                          "delivery error")


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
