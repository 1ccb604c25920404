"""Keeping records on the partition their key hashes to.

Tables are co-partitioned with their topics; a record produced with another
partitioner (librdkafka's default, say) or without a key would look up the
wrong shard. It is re-produced once, keyed and placed right, and skipped.
"""

from __future__ import annotations

import logging
from typing import Callable, TypeVar

from faust.types import EventT, TopicT

from agents.emitters import dead_letter
from app.context import Herald
from app.errors import InvalidEvent
from rules.partitioning import partition_for

T = TypeVar("T")

logger = logging.getLogger("herald.agents.placement")


async def forward_if_misplaced(herald: Herald, topic: TopicT, event: EventT, user_id: str) -> bool:
    """Forward ``event`` to ``user_id``'s partition if it is elsewhere; ``True`` if it was."""
    message = event.message
    right = partition_for(user_id, herald.settings.partitions)
    key = message.key.decode("utf-8", errors="replace") if message.key is not None else None
    if key == user_id and message.partition == right:
        return False
    logger.info("forwarding %s[%s]@%s (key %r) to partition %s", message.topic,
                message.partition, message.offset, key, right)
    await topic.send(key=user_id, value=message.value, partition=right,
                     headers=list(message.headers or []))
    return True


async def parse_on_owner(herald: Herald, topic: TopicT, event: EventT,
                         parse: Callable[[bytes | None], T], what: str) -> T | None:
    """Parse a public user-keyed record where its user's rows live.

    ``None`` when there is nothing more to do here: the record was invalid
    (dead-lettered with the reason) or sat on another partition (forwarded).
    """
    try:
        record = parse(event.message.value)
    except InvalidEvent as exc:
        await dead_letter(herald, event.message, f"invalid {what}", error=str(exc))
        return None
    if await forward_if_misplaced(herald, topic, event, record.user_id):  # type: ignore[attr-defined]
        return None
    return record
