"""The presence agent: gateway connect/disconnect/heartbeat into the ``presence`` table."""

from __future__ import annotations

import time
from datetime import datetime

from faust.types import EventT, StreamT

from agents.emitters import dead_letter, handle_each
from agents.placement import forward_if_misplaced
from app.context import Herald
from app.errors import InvalidEvent
from schemas.parsing import parse_presence
from tables.presence import apply_presence


def register(herald: Herald) -> None:
    """Declare the presence agent on the app."""

    @herald.app.agent(herald.topics.presence, name="presence")
    async def presence(stream: StreamT) -> None:
        await handle_each(herald, stream, lambda event: record_presence(herald, event),
                          "presence error")


async def record_presence(herald: Herald, event: EventT) -> None:
    """Apply one presence record."""
    try:
        change = parse_presence(event.message.value)
    except InvalidEvent as exc:
        await dead_letter(herald, event.message, "invalid presence", error=str(exc))
        return
    if await forward_if_misplaced(herald, herald.topics.presence, event, change.user_id):
        return
    table = herald.tables.presence
    table[change.user_id] = apply_presence(
        table.get(change.user_id), change.node_id, change.event,
        at=datetime.fromisoformat(change.at).timestamp(), now=time.time())
