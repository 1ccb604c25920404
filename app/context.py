"""What every agent and view of one herald app shares, passed in explicitly."""

from __future__ import annotations

from dataclasses import dataclass

import faust

from app.settings import Settings
from app.store import Store
from app.topics import Topics
from providers.channel import ChannelSender
from rules.templates import TemplateCatalog
from tables.declarations import Tables


@dataclass(frozen=True)
class Herald:
    """One herald app: Faust app, settings, topics, tables and long-lived clients."""

    app: faust.App
    settings: Settings
    topics: Topics
    tables: Tables
    store: Store
    senders: dict[str, ChannelSender]
    templates: TemplateCatalog
