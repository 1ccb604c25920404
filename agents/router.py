"""The router: from one validated notification to one ``Delivery`` per channel.

One router agent per priority lane (``notifications.urgent``,
``notifications.bulk``), same code. Steps (DESIGN.md, "The router, step by
step", after intake validated the record): expiry, dedup, digest, channels,
presence, quiet hours / send-at, render, rate limit, produce. Every decision
is a pure function; this module looks values up in the co-partitioned tables
and moves them.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone

from faust.types import EventT, StreamT

from agents.emitters import dead_letter, emit_status, handle_each, produce
from app.context import Herald
from rules.channels import ChannelDecision, apply_presence, needs_address, resolve_channels
from rules.digest import add_item, due_at, is_digested
from rules.expiry import expiry_reason, is_expired
from rules.templates import Rendered, TemplateError, render
from schemas.records import Contacts, Delivery, Notification, Preferences
from tables.dedup import claim, dedup_key, is_repeat
from tables.keys import compose
from tables.presence import online_nodes
from tables.quiet_hours import hold_until
from tables.ratelimit import RateDecision, decide, per_partition, policy_for

#: How often a notification for a user whose profile has not arrived yet
#: looks again, while it waits inside the profile grace period.
PROFILE_POLL_SECONDS = 0.02
#: Rate buckets shared by a whole category live under this owner.
CATEGORY_BUCKETS = "\x1ecategory"


def register(herald: Herald) -> None:
    """Declare one router agent per lane on the app."""
    for lane, topic in herald.topics.lanes.items():
        _register_lane(herald, lane, topic)


def _register_lane(herald: Herald, lane: str, topic: object) -> None:
    @herald.app.agent(topic, name=f"router-{lane}")
    async def router(stream: StreamT) -> None:
        await handle_each(herald, stream, lambda event: route(herald, event), "router error")


async def route(herald: Herald, event: EventT) -> None:
    """Route one notification of a lane."""
    n: Notification = event.value
    now = time.time()
    moment = datetime.fromtimestamp(now, timezone.utc)
    if is_expired(n.expires_at, moment):
        await _status(herald, n, "*", "SUPPRESSED", expiry_reason(n.expires_at, moment))
        return
    if not _claim(herald, event, n, now):
        await _status(herald, n, "*", "SUPPRESSED", _repeat_reason(n))
        return
    digest_windows = herald.settings.digest_categories
    if not n.released and not n.digest and is_digested(n.category, n.priority, digest_windows):
        key = compose(n.user_id, n.category)
        current = herald.tables.digests.get(key)
        batch = add_item(current, _digest_item(n), now, digest_windows[n.category])
        herald.tables.digests[key] = batch
        if current is None:
            herald.digests_due.add(event.message.partition, due_at(batch), key)
        await _status(herald, n, "*", "SCHEDULED", f"batched into the {n.category} digest")
        return
    contacts, preferences = await _profile(herald, event, n)
    decision = _channels(herald, n, contacts, preferences, now)
    if not n.released:
        due = hold_until(moment, priority=n.priority,
                         send_at=datetime.fromisoformat(n.send_at) if n.send_at else None,
                         timezone=contacts.timezone if contacts else None,
                         quiet_hours=preferences.quiet_hours if preferences else None)
        if due is not None:
            await _hold(herald, event, n, "*", due.timestamp(), n.channels,
                        f"held until {due.isoformat()} (send_at or quiet hours)")
            return
    try:
        rendered = {r.channel: _render(herald, n, r.channel, contacts) for r in decision.routes}
    except TemplateError as exc:
        await dead_letter(herald, event.message, "template error", error=str(exc))
        await _status(herald, n, "*", "DEAD", "template error", error=str(exc))
        return
    for chosen in decision.routes:
        limited = _rate_limited(herald, n, chosen.channel, now)
        if limited is not None and limited.outcome == "drop":
            await _status(herald, n, chosen.channel, "SUPPRESSED",
                          f"rate limited: dropped ({n.category} policy)")
            continue
        if limited is not None:
            await _hold(herald, event, n, chosen.channel, now + limited.retry_after,
                        [chosen.channel], f"rate limited: deferred {limited.retry_after:.1f}s ({n.category} policy)")
            continue
        text = rendered[chosen.channel]
        delivery = Delivery.from_values({
            "notification_id": n.id, "user_id": n.user_id, "channel": chosen.channel,
            "address": chosen.address, "title": text.title, "body": text.body,
            "html": text.html, "category": n.category, "priority": n.priority,
            "created_at": n.created_at, "data": n.data, "fallback": n.fallback,
            "lane": n.lane, "notification": n.asdict(),
            "push_tokens": contacts.push_tokens if contacts and chosen.channel == "push" else [],
        })
        await produce(herald, herald.topics.deliveries[chosen.channel, n.lane], n.user_id, delivery)
        await _status(herald, n, chosen.channel, "QUEUED")
    for skipped in decision.suppressed:
        await _status(herald, n, skipped.channel, "SUPPRESSED", skipped.reason)


async def _status(herald: Herald, n: Notification, channel: str, status: str,
                  reason: str | None = None, error: str | None = None) -> None:
    await emit_status(herald, n.id, channel, status, user_id=n.user_id, reason=reason,
                      error=error, notification=n)


def _claim(herald: Herald, event: EventT, n: Notification, now: float) -> bool:
    """Claim the notification's dedup key; ``False`` if another record holds it.

    A released copy (from the scheduler or a digest) claims its own release
    key, so releasing the same held notification twice sends it once.
    """
    if n.released:
        key = compose(n.user_id, "release", n.id, ",".join(n.channels or []))
    elif n.idempotency_key:
        key = dedup_key(n.user_id, n.idempotency_key)
    else:
        return True
    source = f"{event.message.partition}:{event.message.offset}"
    if is_repeat(herald.tables.dedup.get(key), source, now):
        return False
    herald.tables.dedup[key] = claim(source, now, herald.settings.dedup_window_seconds)
    return True


def _repeat_reason(n: Notification) -> str:
    if n.released:
        return "already released"
    return f"duplicate idempotency_key {n.idempotency_key!r}"


def _digest_item(n: Notification) -> dict[str, object]:
    return {"id": n.id, "title": n.title, "body": n.body, "created_at": n.created_at,
            "data": n.data}


def _channels(herald: Herald, n: Notification, contacts: Contacts | None,
              preferences: Preferences | None, now: float) -> ChannelDecision:
    decision = resolve_channels(
        user_id=n.user_id, category=n.category, priority=n.priority, wanted=n.channels,
        categories=preferences.categories if preferences else {},
        email=contacts.email if contacts else None, phone=contacts.phone if contacts else None,
        push_tokens=contacts.push_tokens if contacts else [],
    )
    online = bool(online_nodes(herald.tables.presence.get(n.user_id), now))
    return apply_presence(decision, online=online,
                          push_when_online=bool(preferences and preferences.push_when_online))


def _render(herald: Herald, n: Notification, channel: str, contacts: Contacts | None) -> Rendered:
    return render(herald.templates, template=n.template, title=n.title, body=n.body,
                  data=n.data, locale=n.locale or (contacts.locale if contacts else None),
                  channel=channel, sms_max_segments=herald.settings.sms_max_segments)


async def _hold(herald: Herald, event: EventT, n: Notification, channel: str, due: float,
                channels: list[str] | None, reason: str) -> None:
    """Keep ``n`` in the ``scheduled`` table until ``due``; the scheduler releases it.

    The row is written to the partition of ``event``, so that partition's index notes it.
    """
    held = {**n.asdict(), "released": True, "channels": channels}
    key = compose(n.user_id, n.id, channel)
    herald.tables.scheduled[key] = {"due": due, "notification": held}
    herald.scheduled_due.add(event.message.partition, due, key)
    await _status(herald, n, channel, "SCHEDULED", reason)


def _rate_limited(herald: Herald, n: Notification, channel: str,
                  now: float) -> RateDecision | None:
    """Take from the rate buckets; ``None`` when the channel may send now."""
    policy = policy_for(herald.settings.rate_limits, n.category)
    if policy is None or n.priority == "critical":
        return None
    # The category bucket lives once per partition (a table row is stored on
    # the partition of the event that wrote it): each gets its share.
    policy = per_partition(policy, herald.settings.partitions)
    rate = herald.tables.rate
    user_key = compose(n.user_id, "rate", channel)
    category_key = compose(CATEGORY_BUCKETS, n.category)
    decision = decide(rate.get(user_key), rate.get(category_key), now, policy)
    if decision.outcome != "allow":
        return decision
    if decision.user_state is not None:
        rate[user_key] = decision.user_state
    if decision.category_state is not None:
        rate[category_key] = decision.category_state
    return None


async def _profile(
    herald: Herald, event: EventT, n: Notification
) -> tuple[Contacts | None, Preferences | None]:
    """The user's contacts and preferences, waiting briefly for a brand-new user's.

    A service that creates a user and notifies them at once writes to
    ``user-updates`` and ``notifications`` back to back; Faust does not order
    records across topics, so for a user not seen yet a fresh notification
    waits up to the profile grace (counted from the record's timestamp) for
    the profile agent to catch up. Backlogged records are older than the
    grace and never wait; nor do released ones or those needing no address.
    """
    contacts, preferences = _lookup(herald, n.user_id)
    if n.released or not needs_address(n.channels):
        return contacts, preferences
    deadline = event.message.timestamp + herald.settings.profile_grace_seconds
    while contacts is None and preferences is None and time.time() < deadline:
        await asyncio.sleep(PROFILE_POLL_SECONDS)
        contacts, preferences = _lookup(herald, n.user_id)
    return contacts, preferences


def _lookup(herald: Herald, user_id: str) -> tuple[Contacts | None, Preferences | None]:
    return herald.tables.contacts.get(user_id), herald.tables.preferences.get(user_id)
