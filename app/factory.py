"""Building a herald app from settings: the one place where the parts meet."""

from __future__ import annotations

import logging

import faust
from mode import Service

from agents import (audience, delivery, hotpath, housekeeping, intake, presence, profile,
                    recorder, router)
from app import web
from app.context import Herald
from app.producing import partition_for
from app.settings import Settings
from app.store import Store
from app.topics import Topics
from app import api, commit_guard, gateway, metrics, webhooks
from providers.channel import ChannelSender, build_provider
from rules.breaker import BreakerPolicy
from rules.templates import load_catalog
from tables.declarations import Tables

logger = logging.getLogger("herald.app")


def create_faust_app(settings: Settings) -> faust.App:
    """The Faust app, with the defaults that bite overridden (DESIGN.md)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return faust.App(
        settings.app_id,
        broker=settings.broker_url,
        store=f"{settings.store}://",
        datadir=str(settings.data_dir),
        autodiscover=False,
        key_serializer="raw",
        value_serializer="json",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        # At-least-once plus idempotent handling: exactly_once has open bugs
        # (faust-streaming #517, #323, #177, #136).
        processing_guarantee=settings.processing_guarantee,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_partitioner=partition_for,
        producer_max_batch_size=PRODUCER_BATCH_BYTES,
        web_enabled=True,
        web_bind=settings.web_bind,
        web_port=settings.web_port,
        web_host=settings.web_host,
        consumer_group_instance_id=settings.node_id,
        logging_config=None,
    )


def create_senders(settings: Settings) -> dict[str, ChannelSender]:
    """One sender per channel with its failover providers, breakers and caps."""
    policy = BreakerPolicy(settings.breaker_failures, settings.breaker_open_seconds)
    return {
        channel: ChannelSender(
            channel, [build_provider(step, settings.provider_env) for step in steps],
            breaker_policy=policy, caps=settings.provider_caps, on_state=metrics.circuit_changed)
        for channel, steps in settings.channels.items()
    }


#: The largest batch of one partition the producer sends (Faust's default: 16 KiB). A
#: hand-over of the outbox makes one batch per partition of everything a loop batch
#: produced; a request's cost is mostly per batch (issue 7: 5.8 -> 1.3 us per 460 B
#: record from 16 to 256 KiB). Well under the broker's 1 MiB ``message.max.bytes``.
PRODUCER_BATCH_BYTES = 256 * 1024


#: Table writes that may wait in Faust's changelog buffer before streams stall.
CHANGELOG_BUFFER_MESSAGES = 10_000


class Resources(Service):
    """Opens the long-lived clients when the worker starts and closes them when it stops."""

    def __init__(self, herald: Herald, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.herald = herald

    async def on_start(self) -> None:
        # Faust's changelog buffer holds back every stream once more than 100
        # table writes wait in it (Conductor → wait_until_ebb), flushing them
        # one by one: a delivery batch alone writes up to 200 intents.
        self.herald.app.producer.buffer.max_messages = CHANGELOG_BUFFER_MESSAGES
        try:
            await self.herald.store.start()
        except Exception as exc:  # noqa: BLE001 - the recorder retries until it can write
            logger.warning("PostgreSQL not reachable at start (%s); the recorder will retry", exc)

    async def on_stop(self) -> None:
        for sender in self.herald.senders.values():
            await sender.aclose()
        await self.herald.store.aclose()


def create_herald(settings: Settings, senders: dict[str, ChannelSender] | None = None) -> Herald:
    """A complete herald app: topics, tables, agents, views and clients."""
    commit_guard.install()
    app = create_faust_app(settings)
    herald = Herald(
        app=app,
        settings=settings,
        topics=Topics.declare(app, settings),
        tables=Tables.declare(app, settings),
        store=Store(settings.database_url),
        senders=senders or create_senders(settings),
        templates=load_catalog(settings.templates_dir, default_locale=settings.default_locale),
    )
    # First of the app's services, so it stops last: mode stops them in the reverse
    # order, and the provider clients must outlive the hot loops' in-flight calls (a
    # call cut by closing its client would be retried, and sent twice).
    app.service(Resources(herald))  # type: ignore[arg-type]
    # The hot topics are read by Faust agents or by the hot path's loops, never both.
    hot = (intake, router, delivery) if settings.hot_path == "faust" else (hotpath,)
    for module in (profile, presence, audience, housekeeping, recorder, *hot):
        module.register(herald)
    delivery.register_retries(herald)
    web.register(herald)
    webhooks.register(herald)
    api.register(herald)
    app.service(gateway.register(herald))  # type: ignore[arg-type]
    app.service(commit_guard.CommitGuard(app))  # type: ignore[arg-type]
    return herald
