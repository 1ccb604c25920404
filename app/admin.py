"""Creating herald's topics before a worker subscribes to them.

Faust creates only its internal topics (changelogs); a source topic missing
at subscription time is ignored until a later rebalance. Co-partitioning also
needs every user-keyed topic to have the same partition count, which is
checked here so that a mismatch fails at start-up instead of misrouting.
"""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from app.settings import Settings
from app.topics import all_topic_names


class TopicMismatch(RuntimeError):
    """An existing topic has a partition count that breaks co-partitioning."""


async def ensure_topics(settings: Settings) -> list[str]:
    """Create missing topics; fail on a partition count other than the settings'."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap,
                                request_timeout_ms=15000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = all_topic_names()
        missing = [name for name in wanted if name not in existing]
        created = []
        for name in missing:
            try:
                await admin.create_topics([NewTopic(name, settings.partitions,
                                                    settings.replication_factor)])
                created.append(name)
            except TopicAlreadyExistsError:
                pass  # another worker created it meanwhile
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
