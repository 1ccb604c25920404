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
from schemas.records import (
    CHANNELS,
    LANES,
    DeadLetter,
    Delivery,
    DeliveryEvent,
    FanOut,
    MembershipChanged,
    Notification,
)

NOTIFICATIONS = "notifications"
USER_UPDATES = "user-updates"
PRESENCE = "presence"
DELIVERY_EVENTS = "delivery-events"
DLQ = "deliveries.dlq"
FANOUT = "audiences.fanout"
MEMBERSHIPS = "audiences.members"
TICKS = "herald.ticks"
#: In-app frames for the gateways of every worker (providers/gateway.py).
GATEWAY_FRAMES = "gateway.frames"


def lane_topic_name(lane: str) -> str:
    """The validated notifications of one priority lane, keyed by user."""
    return f"notifications.{lane}"


def delivery_topic_name(channel: str, lane: str = "bulk") -> str:
    """The topic a channel's delivery agent consumes; critical/high ride ``.urgent``."""
    return f"deliveries.{channel}" if lane == "bulk" else f"deliveries.{channel}.{lane}"


def retry_topic_name(channel: str, stage: int) -> str:
    """The retry topic a channel's failed deliveries wait in after attempt ``stage``."""
    return f"deliveries.{channel}.retry.{stage}"


def all_topic_names(retry_stages: int) -> list[str]:
    """Every topic herald reads or writes, for creating them before a worker subscribes."""
    return [NOTIFICATIONS, USER_UPDATES, PRESENCE, DELIVERY_EVENTS, DLQ, FANOUT, MEMBERSHIPS,
            TICKS, GATEWAY_FRAMES, *(lane_topic_name(lane) for lane in LANES),
            *(delivery_topic_name(channel, lane) for channel in CHANNELS for lane in LANES),
            *(retry_topic_name(channel, stage) for channel in CHANNELS
              for stage in range(1, retry_stages + 1))]


def hot_topic_names() -> list[str]:
    """The topics the hot path reads (agents/hotpath.py): intake, the lanes, the deliveries."""
    return [NOTIFICATIONS, *(lane_topic_name(lane) for lane in LANES),
            *(delivery_topic_name(channel, lane) for channel in CHANNELS for lane in LANES)]


@dataclass(frozen=True)
class Topics:
    """Every topic herald reads or writes."""

    notifications: TopicT
    user_updates: TopicT
    presence: TopicT
    lanes: dict[str, TopicT]
    deliveries: dict[tuple[str, str], TopicT]
    retries: dict[tuple[str, int], TopicT]
    delivery_events: TopicT
    dlq: TopicT
    fanout: TopicT
    memberships: TopicT
    ticks: TopicT

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
            lanes={lane: topic(lane_topic_name(lane), Notification) for lane in LANES},
            deliveries={(channel, lane): topic(delivery_topic_name(channel, lane), Delivery)
                        for channel in CHANNELS for lane in LANES},
            retries={(channel, stage): topic(retry_topic_name(channel, stage), Delivery)
                     for channel in CHANNELS
                     for stage in range(1, len(settings.retry_delays) + 1)},
            delivery_events=topic(DELIVERY_EVENTS, DeliveryEvent),
            dlq=topic(DLQ, DeadLetter),
            fanout=topic(FANOUT, FanOut),
            memberships=topic(MEMBERSHIPS, MembershipChanged),
            ticks=topic(TICKS, float),
        )
