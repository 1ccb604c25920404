"""Building a herald app from settings: the one place where the parts meet."""

from __future__ import annotations

import logging

import faust
from mode import Service

from agents import audience, delivery, housekeeping, intake, presence, profile, recorder, router
from app import web
from app.context import Herald
from app.settings import Settings
from app.store import Store
from app.topics import Topics
from providers import load_provider
from providers.base import Provider
from rules.templates import load_catalog
from schemas.records import CHANNELS
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
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        web_enabled=True,
        web_bind=settings.web_bind,
        web_port=settings.web_port,
        web_host=settings.web_host,
        consumer_group_instance_id=settings.node_id,
        logging_config=None,
    )


def create_providers(names: dict[str, str] | None = None) -> dict[str, Provider]:
    """One provider per channel; the ``log`` provider unless told otherwise."""
    names = names or {}
    return {channel: load_provider(names.get(channel, "log"))() for channel in CHANNELS}


class Resources(Service):
    """Opens the long-lived clients when the worker starts and closes them when it stops."""

    def __init__(self, herald: Herald, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.herald = herald

    async def on_start(self) -> None:
        try:
            await self.herald.store.start()
        except Exception as exc:  # noqa: BLE001 - the recorder retries until it can write
            logger.warning("PostgreSQL not reachable at start (%s); the recorder will retry", exc)

    async def on_stop(self) -> None:
        for provider in self.herald.providers.values():
            await provider.aclose()
        await self.herald.store.aclose()


def create_herald(settings: Settings, providers: dict[str, Provider] | None = None) -> Herald:
    """A complete herald app: topics, tables, agents, views and clients."""
    app = create_faust_app(settings)
    herald = Herald(
        app=app,
        settings=settings,
        topics=Topics.declare(app, settings),
        tables=Tables.declare(app, settings),
        store=Store(settings.database_url),
        providers=providers or create_providers(),
        templates=load_catalog(settings.templates_dir, default_locale=settings.default_locale),
    )
    for module in (intake, profile, presence, audience, router, housekeeping, delivery, recorder):
        module.register(herald)
    web.register(herald)
    app.service(Resources(herald))  # type: ignore[arg-type]
    return herald
