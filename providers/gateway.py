"""The ``gateway`` provider: in-app notifications to the WebSocket/SSE gateway.

A delivery is published as one frame to the ``gateway.frames`` topic, keyed
by user. Every worker's gateway reads that topic from its end and hands
each frame to the sessions it holds for the user, so a notification reaches
the user wherever their partition is processed and wherever they are
connected. "Sent" means Kafka holds the frame (acks=all); an offline user
finds the notification in the inbox, and a client that reconnects gets
what it missed from PostgreSQL.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from aiokafka import AIOKafkaProducer

from app.errors import ProviderDisabled
from providers.base import Provider, Receipt
from schemas.records import Delivery

FRAMES_TOPIC = "gateway.frames"


def frame_of(delivery: Delivery) -> dict[str, Any]:
    """The frame a client receives for ``delivery`` (the inbox item's fields)."""
    return {"type": "notification", "id": delivery.notification_id, "user_id": delivery.user_id,
            "category": delivery.category, "priority": delivery.priority,
            "title": delivery.title, "body": delivery.body, "data": delivery.data,
            "created_at": delivery.created_at}


class GatewayProvider(Provider):
    """Publishes in-app deliveries to ``gateway.frames`` with its own producer."""

    name = "gateway"

    def __init__(self, bootstrap: str, timeout: float = 10.0) -> None:
        super().__init__(timeout)
        self.bootstrap = bootstrap
        self._producer: AIOKafkaProducer | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "GatewayProvider":
        bootstrap = env.get("HERALD_KAFKA_BOOTSTRAP")
        if not bootstrap:
            raise ProviderDisabled("HERALD_KAFKA_BOOTSTRAP is not set")
        return cls(bootstrap)

    async def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all",
                                        linger_ms=0, client_id="herald-gateway-frames")
            await producer.start()
            self._producer = producer
        return self._producer

    async def _send(self, delivery: Delivery) -> Receipt:
        producer = await self._started()
        meta = await producer.send_and_wait(
            FRAMES_TOPIC, json.dumps(frame_of(delivery)).encode(),
            key=delivery.user_id.encode())
        return Receipt(self.name, f"{FRAMES_TOPIC}/{meta.partition}/{meta.offset}")

    async def aclose(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
