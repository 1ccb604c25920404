"""Producing JSON records the way any outside service does (plain aiokafka)."""

from __future__ import annotations

import json
from typing import Any

from aiokafka import AIOKafkaProducer


async def produce_json(bootstrap: str, topic: str, key: str, value: Any) -> tuple[int, int]:
    """Produce one JSON record keyed by ``key``; return its (partition, offset)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                request_timeout_ms=15000)
    try:
        await producer.start()
        meta = await producer.send_and_wait(
            topic, key=key.encode(), value=json.dumps(value).encode()
        )
    finally:
        await producer.stop()
    return meta.partition, meta.offset
