"""A status event leaves as the bytes a DeliveryEvent record encodes to."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from faust.utils import json as faust_json

from agents.emitters import emit_status
from app.outbox import Outbox
from schemas.records import DeliveryEvent, Notification


def fake_herald() -> SimpleNamespace:
    topic = SimpleNamespace(get_topic_name=lambda: "delivery-events")
    return SimpleNamespace(settings=SimpleNamespace(processing_guarantee="at_least_once"),
                           topics=SimpleNamespace(delivery_events=topic),
                           tables=SimpleNamespace(outbox=Outbox(lambda: None)))


def test_a_status_event_is_encoded_as_its_record_would_be() -> None:
    herald = fake_herald()
    n = Notification(id="n-1", user_id="u-1", category="news", priority="high",
                     created_at="2026-11-21T10:00:00+00:00", title="T", body="B",
                     data={"x": 1})
    asyncio.run(emit_status(herald, "n-1", "push", "QUEUED", user_id="u-1", reason="r",
                            attempts=2, provider_message_id="m-1", notification=n))
    [(topic, partition, key, value, *_)] = herald.tables.outbox.pending
    sent = faust_json.loads(value)
    record = DeliveryEvent(
        notification_id="n-1", channel="push", status="QUEUED", at=sent["at"], user_id="u-1",
        reason="r", error=None, attempts=2, provider_message_id="m-1",
        notification={"id": "n-1", "user_id": "u-1", "category": "news", "priority": "high",
                      "title": "T", "body": "B", "data": {"x": 1},
                      "created_at": "2026-11-21T10:00:00+00:00"})
    assert (topic, partition, key) == ("delivery-events", None, b"n-1")  # partitioned by key
    assert value == faust_json.dumps(record)
