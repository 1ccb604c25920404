"""The changelog-backed tables the router and profile agents share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust
from faust.types import TableT

from app.settings import Settings
from schemas.records import Contacts, Preferences
from app.outbox import Outbox
from tables.confirmed import ConfirmedTable
from tables.restore import ChangelogReader
from tables.table import HeraldTable


#: Every table, by name; Faust keeps each in the ``<app id>-<name>-changelog`` topic.
TABLE_NAMES = ("contacts", "preferences", "presence", "dedup", "scheduled", "rate", "digests",
               "audiences", "sends")


def changelog_topic_name(app_id: str, table: str) -> str:
    """The changelog topic Faust uses for ``table`` of app ``app_id``."""
    return f"{app_id}-{table}-changelog"


@dataclass(frozen=True)
class Tables:
    """The tables of one herald app, all keyed like the user-keyed topics."""

    contacts: TableT
    preferences: TableT
    presence: TableT
    dedup: TableT
    scheduled: TableT
    rate: TableT
    digests: TableT
    audiences: TableT
    sends: ConfirmedTable
    #: The worker's records waiting for the producer, table writes among them;
    #: ``None`` under ``exactly_once``, where Faust sends them inside its transactions.
    outbox: Outbox | None = None

    @classmethod
    def declare(cls, app: faust.App, settings: Settings) -> "Tables":
        """Declare the tables on ``app``, co-partitioned with the topics."""
        reader = app.service(ChangelogReader(settings.kafka_bootstrap))
        outbox = (None if settings.processing_guarantee == "exactly_once"
                  else Outbox(lambda: app.producer._ensure_producer()))  # noqa: SLF001

        def table(name: str, value_type: Any, help_text: str,
                  kind: type[HeraldTable] = HeraldTable) -> TableT:
            declared = app.tables.add(kind(app, name=name, beacon=app.tables.beacon,
                                           key_type=str, value_type=value_type,
                                           partitions=settings.partitions, help=help_text))
            # Faust JSON-encodes table keys by default, while topics carry the
            # raw user id: route lookups and changelog keys must hash the same
            # bytes as the topics do. The store is built lazily, but the
            # changelog topic was built with the table: rebuilt with raw keys,
            # or a restore from the changelog fails to decode every record.
            declared.key_serializer = "raw"
            declared.changelog_topic = declared._new_changelog_topic()  # noqa: SLF001
            declared.changelog_reader = reader
            declared.outbox = outbox
            return declared

        return cls(
            contacts=table("contacts", Contacts, "Where each user can be reached"),
            preferences=table("preferences", Preferences, "What each user agreed to receive"),
            presence=table("presence", None, "Which gateway nodes hold each user's sessions"),
            dedup=table("dedup", None, "Idempotency keys and when their window ends"),
            scheduled=table("scheduled", None, "Notifications held until a time (quiet hours, "
                            "send_at, rate limits)"),
            rate=table("rate", None, "Token buckets per user and channel, and per category"),
            digests=table("digests", None, "Low-priority notifications batched per user and "
                          "category"),
            audiences=table("audiences", None, "Audience members, keyed audience\x1fuser"),
            sends=table("sends", None, "What each provider was asked and answered, per "
                        "notification and channel", kind=ConfirmedTable),
            outbox=outbox,
        )

    def by_name(self) -> dict[str, TableT]:
        """The tables by their names, for inspection."""
        return {table.name: table for table in (
            self.contacts, self.preferences, self.presence, self.dedup, self.scheduled,
            self.rate, self.digests, self.audiences, self.sends)}
