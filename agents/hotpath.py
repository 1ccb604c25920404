"""The hot path off Faust's streams: intake, routers and delivery as plain aiokafka loops.

With ``HERALD_HOT_PATH=aiokafka`` the three hops every notification takes
(``notifications`` → lane → ``deliveries.*``) are read by aiokafka consumers
over fetched batches instead of Faust agents: Faust's consumer thread,
conductor and streams cost more per record than herald's own work on it
(issue 7 profile). The handlers are the same functions the agents run
(:func:`agents.intake.admit`, :func:`agents.router.route`,
:func:`agents.delivery.deliver_batch`) and the tables stay Faust's.

Partition ownership stays Faust's: the hot consumers are assigned by hand
the partition numbers Faust's group gave this worker (those of
``user-updates``, co-partitioned with every table), once Faust has recovered
them, and let them go when Faust revokes them, after their last batch was
handled and committed. So a table row is still read and written only by the
worker that owns its partition. Offsets are committed in a group of their
own (``<app id>-hotpath``, never joined: simple commits) once everything a
batch produced is acknowledged, every half second while records keep coming
and at once when they stop: at least once, as with Faust. A partition
that group never committed starts where Faust's group left it, so switching
neither skips nor repeats records.

What a batch produces leaves through the worker's outbox (:mod:`app.outbox`),
handed over once the batch is handled. If Kafka refuses the hand-over, the
batch is read again; if a batch of the outbox is not acknowledged (Kafka
away for longer than the producer's request timeout), no later offset is
committed and the loop reads again from its last commit: the records
produced since may be lost, the records read since are not.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Any, Awaitable, Callable, Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from faust.types import TP
from mode import Service

from agents import delivery, intake, router
from agents.emitters import dead_letter, guarded, hand_over
from app import metrics
from app.context import Herald
from app.offsets import (commit_or_skip, committed_offsets, consumer_lag, hot_path_group,
                         own_consumer)
from app.topics import USER_UPDATES
from schemas.records import Delivery, Notification

logger = logging.getLogger("herald.agents.hotpath")

#: Records one loop takes from Kafka at once.
FETCH_RECORDS = 500
#: How long a fetch waits for records before the loop looks at its state again.
FETCH_WAIT_MS = 200
#: How often a loop commits while records keep coming (seconds); an idle loop
#: commits at once. A crash reads again what was handled since: harmless, as
#: every hop is idempotent (dedup, ``sends``, the recorder's upserts).
COMMIT_INTERVAL = 0.5

Decode = Callable[[bytes | None], Any]
HandleBatch = Callable[[str, Sequence["HotEvent"]], Awaitable[None]]


class HotMessage:
    """What herald's handlers read of a Faust ``Message``, from an aiokafka record."""

    __slots__ = ("topic", "partition", "offset", "timestamp", "key", "value", "headers")

    def __init__(self, record: ConsumerRecord) -> None:
        self.topic, self.partition, self.offset = record.topic, record.partition, record.offset
        self.timestamp = record.timestamp / 1000.0
        self.key, self.value, self.headers = record.key, record.value, list(record.headers or ())

    @property
    def tp(self) -> TP:
        return TP(self.topic, self.partition)


class HotEvent:
    """What herald's handlers read of a Faust ``Event``: the message and its decoded value.

    Faust's table writes find the changelog partition through the current
    event (``agents.emitters.faust_event``), which they hold by weak reference.
    """

    __slots__ = ("message", "value", "__weakref__")

    def __init__(self, message: HotMessage, value: Any) -> None:
        self.message, self.value = message, value


class Loop:
    """One consumer over one hot topic, standing in for the Faust agent named ``name``.

    One loop per topic, as one agent per topic: a slow provider holds up its
    own channel's deliveries only, and urgent lanes never wait behind bulk ones.
    """

    def __init__(self, herald: Herald, name: str, topic: str, decode: Decode,
                 handle: HandleBatch, batch: int = FETCH_RECORDS) -> None:
        self.herald, self.name, self.topic = herald, name, topic
        self.decode, self.handle, self.batch = decode, handle, batch
        self.consumer: AIOKafkaConsumer | None = None
        #: Set while the loop may fetch; cleared (and waited for) on a revoke.
        self.running = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.committed: dict[TopicPartition, int] = {}
        #: Offsets whose records are handled and acknowledged, not yet committed.
        self.acknowledged: dict[TopicPartition, int] = {}
        self.commit_due = 0.0
        #: The commit of the last batch handled, once its records are acknowledged:
        #: ``False`` if it was not made.
        self.settling: asyncio.Future[bool] | None = None
        #: Set when produced records may be lost: read again from the last commit.
        self.rewind = False

    async def start(self) -> None:
        settings = self.herald.settings
        self.consumer = own_consumer(settings, hot_path_group(settings.app_id), self.name)
        await self.consumer.start()

    async def stop(self) -> None:
        await self.release()
        if self.consumer is not None:
            await self.consumer.stop()

    async def take(self, partitions: set[int], faust_offsets: dict[TopicPartition, int]) -> None:
        """Own ``partitions`` of the loop's topic, from where they were last committed."""
        consumer = self.consumer
        assert consumer is not None
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        self.committed, self.acknowledged, self.rewind = {}, {}, False
        for tp in tps:
            offset = await consumer.committed(tp)
            if offset is None and tp in faust_offsets:
                offset = faust_offsets[tp]
                consumer.seek(tp, offset)
            if offset is not None:
                self.committed[tp] = offset
        if tps:
            self.running.set()

    async def release(self) -> None:
        """Stop fetching, wait for the batch in hand, and give every partition up."""
        self.running.clear()
        await self.idle.wait()
        await self._settled()
        if self.consumer is not None:
            self.consumer.assign([])
        self.committed = {}

    async def run(self, stopping: Callable[[], bool]) -> None:
        consumer = self.consumer
        assert consumer is not None
        while not stopping():
            await self.running.wait()
            self.idle.clear()
            try:
                await self._once(consumer)
            except Exception:  # noqa: BLE001 - the loop must go on; the batch is read again
                logger.exception("%s failed on a batch; reading it again", self.name)
                await asyncio.sleep(1.0)
            finally:
                self.idle.set()

    async def _once(self, consumer: AIOKafkaConsumer) -> None:
        if self.rewind:
            await self._rewind(consumer)
        try:
            batches = await consumer.getmany(timeout_ms=FETCH_WAIT_MS, max_records=self.batch)
        except KafkaError as exc:
            logger.warning("%s could not fetch (%r); trying again", self.name, exc)
            await asyncio.sleep(1.0)
            return
        if not batches or not self.running.is_set():
            for tp, part in batches.items():
                consumer.seek(tp, part[0].offset)
            if self.settling is None or self.settling.done():
                await self._commit()  # idle: nothing acknowledged waits for the interval
            return
        failures = self._failures()
        try:
            events = [event for part in batches.values() for record in part
                      if (event := await self._event(record)) is not None]
            metrics.event_in(self.name, len(events))
            await self.handle(self.name, events)
            await hand_over(self.herald)
        except BaseException:
            for tp, part in batches.items():
                consumer.seek(tp, part[0].offset)
            raise
        # The next batch is fetched and handled while this one's records are acknowledged.
        self.settling = asyncio.ensure_future(self._settle(
            self.settling, failures, {tp: part[-1].offset + 1 for tp, part in batches.items()}))

    def _failures(self) -> int:
        outbox = self.herald.tables.outbox
        return outbox.failures if outbox is not None else 0

    async def _settle(self, previous: asyncio.Future[bool] | None, failures: int,
                      offsets: dict[TopicPartition, int]) -> bool:
        """Mark ``offsets`` done once everything produced so far is acknowledged, in order,
        and commit them with the offsets before them if the interval has passed.

        Not if an earlier batch's commit was not made, nor if a batch of the
        outbox failed since this one began (any loop's: which records it held
        is not known here, so every loop it may concern reads again).
        """
        if previous is not None and not await previous:
            return False
        try:
            await self.herald.app.producer.flush()
        except Exception:  # noqa: BLE001 - the producer is closing; a restart reads these again
            logger.exception("%s: records not acknowledged; offsets not committed", self.name)
            return False
        if self._failures() != failures:
            logger.error("%s: Kafka did not acknowledge records produced since offsets %s; "
                         "reading again from the last commit", self.name, offsets)
            self.rewind = True
            return False
        self.acknowledged.update(offsets)
        if asyncio.get_running_loop().time() >= self.commit_due:
            await self._commit()
        return True

    async def _commit(self) -> None:
        """Commit the acknowledged offsets; one commit at a time, from the settling chain
        or from the loop when no settling is under way."""
        if not self.acknowledged or self.consumer is None:
            return
        offsets, self.acknowledged = self.acknowledged, {}
        self.commit_due = asyncio.get_running_loop().time() + COMMIT_INTERVAL
        await commit_or_skip(self.consumer, offsets, self.committed, self.name)

    async def _settled(self) -> None:
        """Wait for the settling chain, then commit all it acknowledged."""
        if self.settling is not None:
            await self.settling
            self.settling = None
        await self._commit()

    async def _rewind(self, consumer: AIOKafkaConsumer) -> None:
        """Read every partition again from the loop's last commit."""
        await self._settled()  # what was acknowledged before the failure is committed
        self.rewind = False
        for tp in consumer.assignment():
            if tp in self.committed:
                consumer.seek(tp, self.committed[tp])
            else:  # never committed: read from the start, as the consumer began
                await consumer.seek_to_beginning(tp)

    async def _event(self, record: ConsumerRecord) -> HotEvent | None:
        message = HotMessage(record)
        try:
            return HotEvent(message, self.decode(record.value))
        except Exception as exc:  # noqa: BLE001 - a record that does not decode is dead-lettered
            await dead_letter(self.herald, message, "undecodable record",  # type: ignore[arg-type]
                              error=repr(exc))
            return None

    def lag(self) -> dict[TopicPartition, int]:
        done = {**self.committed, **self.acknowledged}
        return consumer_lag(self.consumer, done) if self.consumer else {}


class HotPath(Service):
    """Runs the hot loops on the partitions Faust's group gives this worker."""

    def __init__(self, herald: Herald, loops: list[Loop], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.herald, self.loops = herald, loops
        self.lock = asyncio.Lock()
        #: The partition numbers Faust's group gave this worker, once recovered.
        self.partitions: set[int] | None = None
        self.assigned = asyncio.Event()
        herald.app.on_partitions_revoked.connect(self._on_revoked)
        herald.app.on_rebalance_complete.connect(self._on_recovered)

    async def on_start(self) -> None:
        for loop in self.loops:
            await loop.start()
            self.add_future(loop.run(lambda: self.should_stop))
        self.add_future(self._follow())

    async def on_stop(self) -> None:
        async with self.lock:
            for loop in self.loops:
                await loop.stop()

    async def _on_revoked(self, sender: Any, revoked: set[TP], **_: Any) -> None:
        # Faust waits for this before the partitions move: the last batches
        # are handled and committed before another worker takes them.
        self.partitions = None
        async with self.lock:
            for loop in self.loops:
                await loop.release()

    async def _on_recovered(self, sender: Any, **_: Any) -> None:
        # Faust sends this once its tables are recovered, before its streams resume.
        assignment = self.herald.app.consumer.assignment()
        self.partitions = {tp.partition for tp in assignment if tp.topic == USER_UPDATES}
        self.assigned.set()

    async def _follow(self) -> None:
        """Give the loops the partitions Faust recovered, trying again while Kafka cannot."""
        while not self.should_stop:
            await self.assigned.wait()
            self.assigned.clear()
            async with self.lock:
                partitions = self.partitions
                if partitions is None:
                    continue  # revoked again meanwhile
                try:
                    await self._take(partitions)
                except Exception:  # noqa: BLE001 - the worker must go on; try again
                    logger.exception("hot path could not take partitions %s; trying again",
                                     sorted(partitions))
                    await asyncio.sleep(1.0)
                    self.assigned.set()

    async def _take(self, partitions: set[int]) -> None:
        faust_offsets = await self._faust_committed()
        for loop in self.loops:
            await loop.release()
            await loop.take(partitions, faust_offsets)
        logger.info("hot path: reading partitions %s of %d topics with plain aiokafka loops",
                    sorted(partitions), len(self.loops))

    async def _faust_committed(self) -> dict[TopicPartition, int]:
        settings = self.herald.settings
        return await committed_offsets(settings.kafka_bootstrap, settings.app_id,
                                       {loop.topic for loop in self.loops})

    async def lag(self) -> dict[TopicPartition, int]:
        lags: dict[TopicPartition, int] = {}
        for loop in self.loops:
            lags.update(loop.lag())
        return lags


def each(herald: Herald, handle: Callable[[Any], Awaitable[None]],
         failure_reason: str) -> HandleBatch:
    """A batch handler that runs ``handle`` on each event in turn, as ``handle_each`` does."""

    async def handle_batch(agent: str, events: Sequence[HotEvent]) -> None:
        for event in events:
            await guarded(herald, agent, event, handle, failure_reason)  # type: ignore[arg-type]

    return handle_batch


def register(herald: Herald) -> None:
    """Run the hot path as a service of the worker (``HERALD_HOT_PATH=aiokafka``).

    One loop per Faust agent it stands in for, with its name: ``intake``,
    ``router-<lane>``, ``deliver-<channel>-<lane>``.
    """
    topics = herald.topics
    loops = [Loop(herald, "intake", topics.notifications.get_topic_name(), decode=lambda v: v,
                  handle=each(herald, lambda e: intake.admit(herald, e), "intake error"))]
    loops += [Loop(herald, f"router-{lane}", topic.get_topic_name(), decode=Notification.decode,
                   handle=each(herald, lambda e: router.route(herald, e), "router error"))
              for lane, topic in topics.lanes.items()]
    loops += [Loop(herald, f"deliver-{channel}-{lane}", topic.get_topic_name(),
                   decode=Delivery.decode, batch=herald.settings.delivery_batch,
                   handle=partial(delivery.deliver_batch, herald, herald.senders[channel]))
              for (channel, lane), topic in topics.deliveries.items()]
    hot = HotPath(herald, loops)
    herald.app.service(hot)  # type: ignore[arg-type]
    herald.lag_sources.append(hot.lag)
