"""The ``log`` provider: writes what it would send; the embedded default."""

from __future__ import annotations

import json
import logging
import uuid

from providers.base import Provider, Receipt
from schemas.records import Delivery

logger = logging.getLogger("herald.providers.log")


class LogProvider(Provider):
    """Logs each delivery as one JSON line and keeps the last ones for inspection."""

    name = "log"

    def __init__(self, timeout: float = 10.0, keep: int = 1000) -> None:
        super().__init__(timeout)
        self.keep = keep
        self.sent: list[Delivery] = []

    async def _send(self, delivery: Delivery) -> Receipt:
        message_id = f"log-{uuid.uuid4()}"
        logger.info("would send %s", json.dumps({
            "message_id": message_id, "channel": delivery.channel, "to": delivery.address,
            "notification_id": delivery.notification_id, "title": delivery.title,
            "body": delivery.body,
        }))
        self.sent.append(delivery)
        del self.sent[:-self.keep]
        return Receipt(provider=self.name, message_id=message_id)
