"""Audiences: who subscribed to what, and the streamed fan-out to every member.

Memberships are keyed by audience (``audience\\x1fuser`` rows on the
audience's partition), so one worker holds a whole audience. The fan-out
copies a chunk of members per step and re-enqueues the rest behind a
cursor, so a million-member audience never holds its partition for long.
Each copy is keyed by its user and enters that user's lane, where the
worker owning the user routes it.
"""

from __future__ import annotations

import uuid
from typing import Any

from faust.types import EventT, StreamT

from agents.emitters import handle_each
from app.context import Herald
from schemas.records import FanOut, MembershipChanged, Notification
from tables.keys import SEPARATOR, compose

#: Members copied per fan-out step before the rest is re-enqueued.
FANOUT_CHUNK = 500
COPY_NAMESPACE = uuid.UUID("5f0c6e57-4c1e-4a39-9f0d-2a9d8e0b7a11")


def register(herald: Herald) -> None:
    """Declare the membership and fan-out agents on the app."""

    @herald.app.agent(herald.topics.memberships, name="memberships")
    async def memberships(stream: StreamT) -> None:
        await handle_each(herald, stream, lambda event: apply_membership(herald, event),
                          "membership error")

    @herald.app.agent(herald.topics.fanout, name="fanout")
    async def fanout(stream: StreamT) -> None:
        await handle_each(herald, stream, lambda event: fan_out(herald, event), "fan-out error")


async def apply_membership(herald: Herald, event: EventT) -> None:
    """Add or remove one audience member."""
    change: MembershipChanged = event.value
    key = compose(change.audience, change.user_id)
    table = herald.tables.audiences
    if change.member:
        table[key] = True
    elif key in table:
        del table[key]


def members_after(keys: Any, audience: str, after: str | None, limit: int) -> list[str]:
    """The next ``limit`` members of ``audience`` in order, after the cursor."""
    prefix = audience + SEPARATOR
    users = sorted(key[len(prefix):] for key in keys if key.startswith(prefix))
    if after is not None:
        users = [user for user in users if user > after]
    return users[:limit]


def copy_for(parent: dict[str, Any], user_id: str) -> Notification:
    """The notification one member receives: its own id, deduplicated per member."""
    fields = {**parent, "user_id": user_id, "audience": parent["audience"],
              "id": str(uuid.uuid5(COPY_NAMESPACE, f"{parent['id']}/{user_id}")),
              "idempotency_key": parent.get("idempotency_key") or f"audience:{parent['id']}"}
    return Notification(**fields)


async def fan_out(herald: Herald, event: EventT) -> None:
    """Copy the next chunk of members; re-enqueue the rest behind a cursor."""
    step: FanOut = event.value
    parent = step.notification
    chunk = members_after(herald.tables.audiences.keys(), parent["audience"], step.after,
                          FANOUT_CHUNK)
    for user_id in chunk:
        copy = copy_for(parent, user_id)
        await herald.topics.lanes[copy.lane].send(key=user_id, value=copy)
    if len(chunk) == FANOUT_CHUNK:
        await herald.topics.fanout.send(key=parent["audience"], value=FanOut(
            notification=parent, after=chunk[-1], copied=step.copied + len(chunk)))
