"""The router: from one ``notifications`` record to one ``Delivery`` per channel.

Steps (DESIGN.md, "The router, step by step"): validate, put the record on
its key's partition, dedup, resolve channels, produce deliveries and QUEUED.
Each decision is a pure function; this module only looks values up and
moves them.
"""

from __future__ import annotations

import asyncio
import logging
import time

from faust.types import EventT, StreamT

from agents.emitters import dead_letter, emit_status, handle_each
from agents.placement import forward_if_misplaced
from app.context import Herald
from app.errors import InvalidEvent
from rules.channels import needs_address, resolve_channels
from schemas.parsing import parse_notification
from schemas.records import Contacts, Delivery, Notification, Preferences
from tables.dedup import claim, dedup_key, is_repeat

logger = logging.getLogger("herald.agents.router")

#: How often a notification for a user whose profile has not arrived yet
#: looks again, while it waits inside the profile grace period.
PROFILE_POLL_SECONDS = 0.02


def register(herald: Herald) -> None:
    """Declare the router agent on the app."""

    @herald.app.agent(herald.topics.notifications, name="router")
    async def router(stream: StreamT) -> None:
        await handle_each(herald, stream, lambda event: route(herald, event), "router error")


async def route(herald: Herald, event: EventT) -> None:
    """Route one ``notifications`` record."""
    message = event.message
    try:
        notification = parse_notification(message.value)
    except InvalidEvent as exc:
        await dead_letter(herald, message, "invalid notification", error=str(exc))
        return
    if await forward_if_misplaced(herald, herald.topics.notifications, event, notification.user_id):
        return
    if notification.template is not None:
        # Templates arrive with the router's template step; until then a
        # templated notification is dead-lettered rather than sent blank.
        await dead_letter(herald, message, "template error",
                          error=f"unknown template {notification.template!r}")
        return
    if notification.idempotency_key and not _claim_idempotency_key(herald, event, notification):
        await emit_status(
            herald, notification.id, "*", "SUPPRESSED", user_id=notification.user_id,
            reason=f"duplicate idempotency_key {notification.idempotency_key!r}",
            notification=notification,
        )
        return
    contacts, preferences = await _profile(herald, event, notification)
    decision = resolve_channels(
        user_id=notification.user_id, category=notification.category,
        priority=notification.priority, wanted=notification.channels,
        categories=preferences.categories if preferences else {},
        email=contacts.email if contacts else None, phone=contacts.phone if contacts else None,
        push_tokens=contacts.push_tokens if contacts else [],
    )
    for chosen in decision.routes:
        delivery = Delivery(
            notification_id=notification.id, user_id=notification.user_id,
            channel=chosen.channel, address=chosen.address, title=notification.title,
            body=notification.body, category=notification.category,
            priority=notification.priority, created_at=notification.created_at,
            data=notification.data, fallback=notification.fallback,
            push_tokens=contacts.push_tokens if contacts and chosen.channel == "push" else [],
        )
        await herald.topics.deliveries[chosen.channel].send(key=notification.user_id, value=delivery)
        await emit_status(herald, notification.id, chosen.channel, "QUEUED",
                          user_id=notification.user_id, notification=notification)
    for skipped in decision.suppressed:
        await emit_status(herald, notification.id, skipped.channel, "SUPPRESSED",
                          user_id=notification.user_id, reason=skipped.reason,
                          notification=notification)


def _claim_idempotency_key(herald: Herald, event: EventT, notification: Notification) -> bool:
    """Claim the notification's idempotency key; ``False`` if it is a repeat."""
    assert notification.idempotency_key is not None
    key = dedup_key(notification.user_id, notification.idempotency_key)
    source = f"{event.message.partition}:{event.message.offset}"
    now = time.time()
    if is_repeat(herald.tables.dedup.get(key), source, now):
        return False
    herald.tables.dedup[key] = claim(source, now, herald.settings.dedup_window_seconds)
    return True


async def _profile(
    herald: Herald, event: EventT, notification: Notification
) -> tuple[Contacts | None, Preferences | None]:
    """The user's contacts and preferences, waiting briefly for a brand-new user's.

    A service that creates a user and notifies them at once writes to
    ``user-updates`` and ``notifications`` back to back; Faust does not order
    records across topics, so for a user not seen yet a fresh notification
    waits up to the profile grace (counted from the record's timestamp) for
    the profile agent to catch up. Backlogged records are older than the
    grace and never wait.
    """
    contacts, preferences = _lookup(herald, notification.user_id)
    if not needs_address(notification.channels):
        return contacts, preferences
    deadline = event.message.timestamp + herald.settings.profile_grace_seconds
    while contacts is None and preferences is None and time.time() < deadline:
        await asyncio.sleep(PROFILE_POLL_SECONDS)
        contacts, preferences = _lookup(herald, notification.user_id)
    return contacts, preferences


def _lookup(herald: Herald, user_id: str) -> tuple[Contacts | None, Preferences | None]:
    return herald.tables.contacts.get(user_id), herald.tables.preferences.get(user_id)
