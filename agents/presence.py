"""The presence agent: gateway connect/disconnect/heartbeat into the ``presence`` table."""

from __future__ import annotations

import time
from datetime import datetime

from faust.types import EventT, StreamT

from agents.emitters import handle_each
from agents.placement import parse_on_owner
from app.context import Herald
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
    change = await parse_on_owner(herald, herald.topics.presence, event, parse_presence,
                                  "presence")
    if change is None:
        return
    table = herald.tables.presence
    table[change.user_id] = apply_presence(
        table.get(change.user_id), change.node_id, change.event,
        at=datetime.fromisoformat(change.at).timestamp(), now=time.time())
