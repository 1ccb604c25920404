"""Creating herald's topics before a worker subscribes to them.

Faust creates only its internal topics, and only once it starts: a topic
missing from the metadata when the consumer group assigns partitions is
ignored until a later rebalance, so a table whose changelog was created a
moment too late has no partitions on any worker. Every topic, changelogs
included, is therefore created here and waited for before Faust starts. Co-partitioning also
needs every user-keyed topic to have the same partition count, which is
checked here so that a mismatch fails at start-up instead of misrouting.
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

import asyncio
import time

from app.settings import Settings
from app.topics import all_topic_names
from tables.declarations import TABLE_NAMES, changelog_topic_name

#: How long to wait for created topics to show up in the broker's metadata.
VISIBLE_TIMEOUT_SECONDS = 30.0


class TopicMismatch(RuntimeError):
    """An existing topic has a partition count that breaks co-partitioning."""


async def ensure_topics(settings: Settings) -> list[str]:
    """Create missing topics; fail on a partition count other than the settings'."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap,
                                request_timeout_ms=15000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        changelogs = {changelog_topic_name(settings.app_id, table) for table in TABLE_NAMES}
        wanted = [*all_topic_names(len(settings.retry_delays)), *sorted(changelogs)]
        missing = [name for name in wanted if name not in existing]
        created = []
        for name in missing:
            # Compacted like the changelogs Faust would create: the latest value per key.
            configs = {"cleanup.policy": "compact"} if name in changelogs else {}
            try:
                await admin.create_topics([NewTopic(name, settings.partitions,
                                                    settings.replication_factor,
                                                    topic_configs=configs)])
                created.append(name)
            except TopicAlreadyExistsError:
                pass  # another worker created it meanwhile
        await _wait_visible(admin, created, settings.partitions)
        present = [name for name in wanted if name in existing]
        for description in await admin.describe_topics(present) if present else []:
            count = len(description["partitions"])
            if count != settings.partitions:
                raise TopicMismatch(
                    f"topic {description['topic']!r} has {count} partitions but "
                    f"HERALD_PARTITIONS={settings.partitions}: user-keyed topics must match")
        return created
    finally:
        await admin.close()


async def _wait_visible(admin: AIOKafkaAdminClient, names: list[str], partitions: int) -> None:
    """Wait until the broker's metadata shows every partition of ``names``."""
    deadline = time.monotonic() + VISIBLE_TIMEOUT_SECONDS
    pending = list(names)
    while pending:
        described = await admin.describe_topics(pending)
        pending = [d["topic"] for d in described
                   if d["error_code"] != 0 or len(d["partitions"]) != partitions
                   or any(p["leader"] < 0 for p in d["partitions"])]
        if pending and time.monotonic() > deadline:
            raise TopicMismatch(f"topics not visible after {VISIBLE_TIMEOUT_SECONDS:.0f}s: "
                                f"{', '.join(pending)}")
        if pending:
            await asyncio.sleep(0.1)


async def partitions_of(bootstrap: str, topic: str) -> list[int]:
    """The partition numbers of ``topic``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        if described["error_code"]:
            raise ValueError(f"topic {topic!r} does not exist")
        return sorted(p["partition"] for p in described["partitions"])
    finally:
        await admin.close()


async def rewind(consumer: AIOKafkaConsumer,
                 partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
    """Put ``consumer`` at the first record of each of ``partitions``; return those offsets.

    An explicit seek, not ``seek_to_beginning``: that one only requests a
    reset, so a position read right after it can still be where the
    assignment's own reset left it (the end, by default). A reader that
    stops at the end then reads nothing: one ``herald dlq ls`` in 15 listed
    no letter of 400 before this.
    """
    starts = await consumer.beginning_offsets(partitions)
    for tp in partitions:
        consumer.seek(tp, starts[tp])
    return starts
