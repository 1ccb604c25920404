"""The profile agent: applies ``user-updates`` to the contacts and preferences tables."""

from __future__ import annotations

from faust.types import EventT, StreamT

from agents.emitters import handle_each
from agents.placement import parse_on_owner
from app.context import Herald
from schemas.parsing import parse_user_update
from schemas.records import MembershipChanged
from tables.profile import apply_contacts, apply_preferences


def register(herald: Herald) -> None:
    """Declare the profile agent on the app."""

    @herald.app.agent(herald.topics.user_updates, name="profile")
    async def profile(stream: StreamT) -> None:
        await handle_each(herald, stream, lambda event: apply_update(herald, event),
                          "profile error")


async def apply_update(herald: Herald, event: EventT) -> None:
    """Apply one ``user-updates`` record."""
    update = await parse_on_owner(herald, herald.topics.user_updates, event, parse_user_update,
                                  "user update")
    if update is None:
        return
    tables = herald.tables
    tables.contacts[update.user_id] = apply_contacts(tables.contacts.get(update.user_id), update)
    preferences = apply_preferences(tables.preferences.get(update.user_id), update)
    if preferences is not None:
        tables.preferences[update.user_id] = preferences
    changes = [(audience, True) for audience in update.subscribe]
    changes += [(audience, False) for audience in update.unsubscribe]
    for audience, member in changes:
        await herald.topics.memberships.send(key=audience, value=MembershipChanged(
            audience=audience, user_id=update.user_id, member=member))
