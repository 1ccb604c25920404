"""The Kafka topics of DESIGN.md's topology, declared on a Faust app.

Public input topics carry raw bytes so that herald itself parses them: a
record Faust could not decode would be skipped before any agent saw it, and
a malformed event must reach the DLQ with its reason instead. Every
user-keyed topic has the same partition count, so tables stay co-partitioned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust
from faust.types import TopicT

from app.settings import Settings
from schemas.records import CHANNELS, DeadLetter, Delivery, DeliveryEvent

NOTIFICATIONS = "notifications"
USER_UPDATES = "user-updates"
PRESENCE = "presence"
DELIVERY_EVENTS = "delivery-events"
DLQ = "deliveries.dlq"


def delivery_topic_name(channel: str) -> str:
    """The topic a channel's delivery agent consumes."""
    return f"deliveries.{channel}"


@dataclass(frozen=True)
class Topics:
    """Every topic herald reads or writes."""

    notifications: TopicT
    user_updates: TopicT
    presence: TopicT
    deliveries: dict[str, TopicT]
    delivery_events: TopicT
    dlq: TopicT

    @classmethod
    def declare(cls, app: faust.App, settings: Settings) -> "Topics":
        """Declare the topics on ``app`` with the settings' partitions and replicas."""

        def topic(name: str, value_type: Any) -> TopicT:
            raw = value_type is bytes
            return app.topic(
                name,
                key_type=str,
                key_serializer="raw",
                value_type=value_type,
                value_serializer="raw" if raw else "json",
                partitions=settings.partitions,
                replicas=settings.replication_factor,
            )

        return cls(
            notifications=topic(NOTIFICATIONS, bytes),
            user_updates=topic(USER_UPDATES, bytes),
            presence=topic(PRESENCE, bytes),
            deliveries={channel: topic(delivery_topic_name(channel), Delivery) for channel in CHANNELS},
            delivery_events=topic(DELIVERY_EVENTS, DeliveryEvent),
            dlq=topic(DLQ, DeadLetter),
        )
