"""Keeping records on the partition their key hashes to.

Tables are co-partitioned with their topics; a record produced with another
partitioner (librdkafka's default, say) or without a key would look up the
wrong shard. It is re-produced once, keyed and placed right, and skipped.
"""

from __future__ import annotations

import logging

from faust.types import EventT, TopicT

from app.context import Herald
from rules.partitioning import partition_for

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
