"""Model.decode and from_values build the records Faust's loads and constructor build."""

from __future__ import annotations

import json
from typing import Any

import pytest

from schemas.records import Delivery, Notification, PushToken

NOTIFICATION = {"id": "n-1", "user_id": "u-1", "category": "orders", "priority": "high",
                "created_at": "2026-11-21T10:00:00+00:00"}
DELIVERY = {"notification_id": "n-1", "user_id": "u-1", "channel": "push", "address": "u-1",
            "title": "Shipped", "body": "Your order left", "category": "orders",
            "priority": "high", "created_at": "2026-11-21T10:00:00+00:00"}

CASES: list[tuple[type, dict[str, Any]]] = [
    (Notification, NOTIFICATION),
    (Notification, {**NOTIFICATION, "title": "T", "body": "B", "data": {"order": "o-1"},
                    "channels": ["push", "email"], "fallback": ["sms"], "released": True,
                    "idempotency_key": "k-1", "send_at": None, "expires_at": None}),
    (Notification, {**NOTIFICATION, "data": None, "fallback": None, "released": None}),
    (Notification, {**NOTIFICATION, "added_later": 1}),  # a field this version does not know
    (Delivery, DELIVERY),
    (Delivery, {**DELIVERY, "push_tokens": [{"token": "t-1", "platform": "fcm"},
                                            {"token": "t-2", "platform": "apns"}],
                "attempt": 3, "not_before": "2026-11-21T10:00:05+00:00",
                "last_error": "503", "lane": "urgent", "notification": NOTIFICATION}),
    (Delivery, {**DELIVERY, "title": None, "body": None, "push_tokens": None, "attempt": None}),
]


@pytest.mark.parametrize(("model", "data"), CASES)
def test_decode_builds_what_loads_builds(model: type, data: dict[str, Any]) -> None:
    raw = json.dumps(data).encode()
    faust_built, decoded = model.loads(raw), model.decode(raw)
    assert decoded == faust_built
    assert decoded.__dict__ == faust_built.__dict__
    assert decoded.dumps() == faust_built.dumps()
    assert type(decoded) is model


def test_nested_push_tokens_are_records_when_read() -> None:
    raw = json.dumps({**DELIVERY, "push_tokens": [{"token": "t-1", "platform": "fcm"}]})
    tokens = Delivery.decode(raw).push_tokens
    assert tokens == [PushToken(token="t-1", platform="fcm")]
    assert isinstance(tokens[0], PushToken)


@pytest.mark.parametrize("model, data, missing", [
    (Notification, {k: v for k, v in NOTIFICATION.items() if k != "user_id"}, "user_id"),
    (Delivery, {k: v for k, v in DELIVERY.items() if k not in ("address", "channel")},
     "address"),
])
def test_a_missing_required_field_is_refused(model: type, data: dict[str, Any],
                                             missing: str) -> None:
    with pytest.raises(TypeError):
        model.loads(json.dumps(data))
    with pytest.raises(TypeError, match=missing):
        model.decode(json.dumps(data))


def test_from_values_builds_what_the_constructor_builds() -> None:
    tokens = [PushToken(token="t-1", platform="fcm")]
    values = {**DELIVERY, "html": "<p>Your order left</p>", "data": {"order": "o-1"},
              "fallback": ["email"], "lane": "urgent", "notification": NOTIFICATION,
              "push_tokens": tokens}
    built, constructed = Delivery.from_values(values), Delivery(**values)
    assert built == constructed and built.__dict__ == constructed.__dict__
    assert built.dumps() == constructed.dumps()
