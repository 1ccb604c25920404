"""Intake: validates public ``notifications`` and puts them in their priority lane.

The lane split comes first so that a critical notification never waits
behind a backlog of bulk ones anywhere after this cheap step. Lane records
are keyed by user (murmur2), so they also land on the partition that owns
the user's table rows, whatever partitioner the producer used. An audience
notification goes to the fan-out instead, keyed by its audience.
"""

from __future__ import annotations

from faust.types import EventT, StreamT

from agents.emitters import dead_letter, handle_each, produce
from app.context import Herald
from app.errors import InvalidEvent
from schemas.parsing import parse_notification
from schemas.records import FanOut


def register(herald: Herald) -> None:
    """Declare the intake agent on the app."""

    @herald.app.agent(herald.topics.notifications, name="intake")
    async def intake(stream: StreamT) -> None:
        await handle_each(herald, stream, lambda event: admit(herald, event), "intake error")


async def admit(herald: Herald, event: EventT) -> None:
    """Validate one record and hand it to its lane or to the fan-out."""
    message = event.message
    try:
        notification = parse_notification(message.value)
    except InvalidEvent as exc:
        await dead_letter(herald, message, "invalid notification", error=str(exc))
        return
    headers = list(message.headers or [])
    if notification.audience and not notification.user_id:
        await herald.topics.fanout.send(key=notification.audience,
                                        value=FanOut(notification=notification.asdict()),
                                        headers=headers)
        return
    # The original timestamp travels on: the router's profile grace counts
    # from when the producer wrote the record, not from intake.
    await produce(herald, herald.topics.lanes[notification.lane], notification.user_id,
                  notification, headers=headers, timestamp=message.timestamp)
