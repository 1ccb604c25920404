"""What every agent and view of one herald app shares, passed in explicitly."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import faust

from app.settings import Settings
from app.store import Store
from app.topics import Topics
from providers.channel import ChannelSender
from rules.templates import TemplateCatalog
from tables.declarations import Tables
from tables.due import DueIndex


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
    #: Consumers outside Faust's group report their lag here (for ``/metrics``).
    lag_sources: list[Callable[[], Awaitable[dict[Any, int]]]] = field(default_factory=list)
    #: When the rows of ``scheduled`` and ``digests`` come due, so a tick reads only those.
    scheduled_due: DueIndex = field(default_factory=DueIndex)
    digests_due: DueIndex = field(default_factory=DueIndex)
