"""What the recorder accepts from ``delivery-events``: one bad event never fails its batch."""

from __future__ import annotations

import json

import pytest

from agents.recorder import parse_event

GOOD = {"notification_id": "n-1", "channel": "push", "status": "SENT",
        "at": "2026-11-21T10:00:00+00:00", "attempts": 1, "user_id": "u-1"}


def test_a_status_event_is_read_with_unknown_fields_ignored() -> None:
    event = parse_event(json.dumps({**GOOD, "from_the_future": True}).encode())
    assert (event.notification_id, event.channel, event.status, event.attempts) == \
        ("n-1", "push", "SENT", 1)


@pytest.mark.parametrize(("raw", "says"), [
    (b"", "empty"),
    (b"not json", "invalid"),
    (b"[1, 2]", "JSON object, not list"),
    (json.dumps({"channel": "push"}).encode(), "missing"),
    (json.dumps({**GOOD, "notification_id": 7}).encode(), "notification_id must be a string"),
    (json.dumps({**GOOD, "status": "LOST"}).encode(), "unknown status 'LOST'"),
    (json.dumps({**GOOD, "attempts": "2"}).encode(), "attempts must be an integer"),
    (json.dumps({**GOOD, "at": "yesterday"}).encode(), "isoformat"),
])
def test_a_bad_status_event_is_refused_with_the_reason(raw: bytes, says: str) -> None:
    with pytest.raises(Exception, match=says):
        parse_event(raw)


def test_the_recorder_reads_the_public_status_event() -> None:
    from schemas.records import DeliveryEvent

    assert type(parse_event(json.dumps(GOOD).encode())) is DeliveryEvent


def test_absent_and_null_optional_fields_take_their_defaults() -> None:
    event = parse_event(json.dumps({**GOOD, "attempts": None, "reason": None}).encode())
    assert (event.attempts, event.reason, event.notification) == (0, None, None)
    bare = parse_event(json.dumps({key: GOOD[key] for key in
                                   ("notification_id", "channel", "status", "at")}).encode())
    assert (bare.attempts, bare.user_id, bare.provider_message_id) == (0, None, None)
