"""Rewinding (or advancing) herald's consumer group to a point in time.

Workers re-read their source topics from the first record at or after the
chosen time once they start again. Committing for a group whose members are
running would be overwritten by their next commit (and Kafka refuses it), so
the reset refuses while the group has members. Choosing the new offsets is
pure (:func:`plan_reset`); the rest is plain aiokafka, committing with a
consumer that is assigned the partitions and joins no group.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndTimestamp

from app.topics import NOTIFICATIONS, PRESENCE, USER_UPDATES, hot_topic_names

if TYPE_CHECKING:
    from app.settings import Settings

logger = logging.getLogger("herald.offsets")

#: The topics herald's agents consume from outside producers.
SOURCE_TOPICS = (NOTIFICATIONS, USER_UPDATES, PRESENCE)


class GroupActive(RuntimeError):
    """The consumer group has running members; offsets cannot be reset under them."""


class UnknownTopic(RuntimeError):
    """A topic to reset does not exist on the cluster."""


@dataclass(frozen=True)
class Move:
    """One partition's committed offset, before and after the reset (``None``: never committed)."""

    topic: str
    partition: int
    old: int | None
    new: int

    def __str__(self) -> str:
        old = "none" if self.old is None else str(self.old)
        return f"{self.topic}[{self.partition}]: {old} -> {self.new}"


def new_offset(found: OffsetAndTimestamp | None, end: int) -> int:
    """Where a partition resumes: the first record at or after the time, else its end."""
    return end if found is None else found.offset


def plan_reset(partitions: Iterable[TopicPartition],
               committed: Mapping[TopicPartition, int | None],
               found: Mapping[TopicPartition, OffsetAndTimestamp | None],
               ends: Mapping[TopicPartition, int]) -> list[Move]:
    """The move of every partition, in topic and partition order."""
    return [Move(tp.topic, tp.partition, committed.get(tp), new_offset(found.get(tp), ends[tp]))
            for tp in sorted(partitions)]


def active_members(descriptions: Iterable[Mapping[str, object]], group_id: str) -> int:
    """How many members ``group_id`` has, from DescribeGroups answers (as objects)."""
    count = 0
    for description in descriptions:
        for group in description.get("groups", ()):  # type: ignore[attr-defined]
            if group["group"] == group_id:
                count += len(group["members"])
    return count


async def reset_to_time(bootstrap: str, group_id: str, topics: Iterable[str], timestamp_ms: int,
                        *, dry_run: bool = False) -> list[Move]:
    """Set ``group_id``'s committed offsets of ``topics`` to ``timestamp_ms``; return the moves.

    Raises :class:`GroupActive` while the group has members.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    await admin.start()
    try:
        described = await admin.describe_consumer_groups([group_id])
        members = active_members([d.to_object() for d in described], group_id)
        if members:
            raise GroupActive(f"workers are running in group {group_id} ({members} members); "
                              f"stop them first")
        topic_descriptions = await admin.describe_topics(list(topics))
        missing = [d["topic"] for d in topic_descriptions
                   if d["error_code"] != 0 or not d["partitions"]]
        if missing:
            raise UnknownTopic(f"no such topic: {', '.join(missing)}")
        partitions = [TopicPartition(d["topic"], p["partition"])
                      for d in topic_descriptions for p in d["partitions"]]
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id,
                                enable_auto_commit=False, request_timeout_ms=15000)
    try:
        await consumer.start()
        consumer.assign(partitions)
        committed = {tp: await consumer.committed(tp) for tp in partitions}
        found = await consumer.offsets_for_times({tp: timestamp_ms for tp in partitions})
        ends = await consumer.end_offsets(partitions)
        moves = plan_reset(partitions, committed, found, ends)
        if not dry_run and moves:
            await consumer.commit({TopicPartition(m.topic, m.partition): m.new for m in moves})
        return moves
    finally:
        await consumer.stop()


def own_consumer(settings: Settings, group_id: str, name: str) -> AIOKafkaConsumer:
    """A consumer of the worker's own (the hot loops', the recorder's) in ``group_id``.

    It commits by hand (:func:`commit_or_skip`, after the batch is handled)
    and starts a partition its group never committed at the earliest offset.
    """
    return AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=group_id,
        client_id=f"{settings.app_id}-{name}-{settings.gateway_node}",
        enable_auto_commit=False, auto_offset_reset="earliest")


def consumer_lag(consumer: AIOKafkaConsumer,
                 committed: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
    """End offset minus committed offset of each partition ``consumer`` is assigned.

    Both come from the consumer's own state, without a request: the end is
    the high watermark of the last fetch (the fetcher keeps fetching in the
    background), the committed offset the caller's own record of its commits.
    Asking the brokers took about a second per scrape, longer than Prometheus
    waits at a one-second interval.
    """
    lags = {}
    for tp in consumer.assignment():
        end, done = consumer.highwater(tp), committed.get(tp)
        if end is not None and done is not None:
            lags[tp] = max(0, end - done)
    return lags


async def commit_or_skip(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int],
                         committed: dict[TopicPartition, int], who: str) -> None:
    """Commit ``offsets`` and note them in ``committed``; on a Kafka error, log and go on.

    The partitions moved meanwhile (their new owner reads the batch again), or
    Kafka is away (the next commit covers these offsets): herald's idempotent
    handling (dedup, the ``sends`` table, the recorder's upserts) makes either
    harmless.
    """
    try:
        await consumer.commit(offsets)
        committed.update(offsets)
    except KafkaError as exc:
        logger.info("%s commit skipped: %r", who, exc)


def hot_path_group(app_id: str) -> str:
    """The group the hot path (agents/hotpath.py) commits in: never joined, simple commits."""
    return f"{app_id}-hotpath"


async def reset_groups(bootstrap: str, app_id: str, topics: Iterable[str], timestamp_ms: int,
                       *, dry_run: bool = False) -> tuple[list[Move], list[Move]]:
    """Reset Faust's group (``app_id``), then the hot path's group for the hot topics among ``topics``.

    Workers are members of Faust's group only, so its check for members (they
    must be stopped) guards both. The hot path starts a partition its group
    never committed where Faust's group left it, so both move together.
    Returns the moves of each group.
    """
    topics = list(topics)
    moves = await reset_to_time(bootstrap, app_id, topics, timestamp_ms, dry_run=dry_run)
    hot_topics = set(hot_topic_names())
    hot = [topic for topic in topics if topic in hot_topics]
    hot_moves = await reset_to_time(bootstrap, hot_path_group(app_id), hot, timestamp_ms,
                                    dry_run=dry_run) if hot else []
    return moves, hot_moves


async def committed_offsets(bootstrap: str, group_id: str,
                            topics: Iterable[str]) -> dict[TopicPartition, int]:
    """The offsets ``group_id`` committed on ``topics`` (none if Kafka cannot tell)."""
    wanted = set(topics)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    try:
        await admin.start()
        offsets = await admin.list_consumer_group_offsets(group_id)
    except KafkaError as exc:
        logger.warning("could not read what group %s committed: %r", group_id, exc)
        return {}
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in offsets.items()
            if tp.topic in wanted and meta.offset >= 0}
