"""Which channels a notification goes out on (router step 3).

wanted channels ∩ the user's preferences for the category ∩ channels the
user has an address for. Critical priority overrides an opt-out only in the
categories that allow it (security, OTP); marketing can never be forced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

#: Channels used when a notification does not name any. SMS costs money per
#: message, so it is only used when asked for.
DEFAULT_CHANNELS = ("push", "email", "inapp")

#: Categories where a critical notification is sent despite an opt-out.
BYPASSABLE_CATEGORIES = frozenset({"security", "otp"})


@dataclass(frozen=True)
class Route:
    """One channel the notification goes out on, and to which address."""

    channel: str
    address: str


@dataclass(frozen=True)
class Suppressed:
    """One wanted channel the notification does not go out on, and why."""

    channel: str
    reason: str


@dataclass(frozen=True)
class ChannelDecision:
    """The outcome of channel resolution: where it goes and where it does not."""

    routes: tuple[Route, ...]
    suppressed: tuple[Suppressed, ...]


def address_for(channel: str, user_id: str, email: str | None, phone: str | None,
                push_tokens: Sequence[object]) -> str | None:
    """The address a channel delivers to, or ``None`` when the user has none."""
    if channel == "email":
        return email
    if channel == "sms":
        return phone
    if channel == "push":
        return user_id if push_tokens else None
    if channel == "inapp":
        return user_id
    return None


def needs_address(wanted: Sequence[str] | None) -> bool:
    """Whether any wanted channel needs an address from the user's profile."""
    return any(channel != "inapp" for channel in wanted or DEFAULT_CHANNELS)


def opted_in(categories: Mapping[str, Mapping[str, bool]], category: str, channel: str) -> bool:
    """Whether the user allows ``channel`` for ``category``; absent means allowed."""
    return categories.get(category, {}).get(channel, True)


def resolve_channels(
    *,
    user_id: str,
    category: str,
    priority: str,
    wanted: Sequence[str] | None,
    categories: Mapping[str, Mapping[str, bool]],
    email: str | None,
    phone: str | None,
    push_tokens: Sequence[object],
) -> ChannelDecision:
    """Decide the channels of one notification for one user."""
    routes: list[Route] = []
    suppressed: list[Suppressed] = []
    forced = priority == "critical" and category in BYPASSABLE_CATEGORIES
    for channel in wanted or DEFAULT_CHANNELS:
        if not forced and not opted_in(categories, category, channel):
            suppressed.append(Suppressed(channel, f"opted out of {category} on {channel}"))
            continue
        address = address_for(channel, user_id, email, phone, push_tokens)
        if address is None:
            suppressed.append(Suppressed(channel, f"no {channel} address for the user"))
            continue
        routes.append(Route(channel, address))
    return ChannelDecision(tuple(routes), tuple(suppressed))


def apply_presence(decision: ChannelDecision, *, online: bool,
                   push_when_online: bool) -> ChannelDecision:
    """Router step 4: an online user gets in-app now instead of push.

    Push is kept for an online user who asked for both, or when in-app is
    not among the routes. An offline user gets push, and the in-app copy
    waits in the inbox for the next visit.
    """
    channels = {route.channel for route in decision.routes}
    if not online or push_when_online or "push" not in channels or "inapp" not in channels:
        return decision
    routes = tuple(route for route in decision.routes if route.channel != "push")
    skipped = Suppressed("push", "user is online: delivered in-app instead")
    return ChannelDecision(routes, (*decision.suppressed, skipped))
