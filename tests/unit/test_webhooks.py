"""Reading provider webhooks into status changes."""

import pytest

from app.webhooks import sendgrid_updates, twilio_update


@pytest.mark.parametrize(("message_status", "expected"), [
    ("delivered", "DELIVERED"), ("undelivered", "FAILED"), ("failed", "FAILED"),
    ("sent", None), ("queued", None)])
def test_twilio_outcomes_become_statuses_and_progress_is_ignored(message_status, expected):
    update = twilio_update({"MessageStatus": message_status, "MessageSid": "SM1"},
                           {"notification_id": "n-1", "channel": "sms"})
    assert (update["status"] if update else None) == expected


def test_twilio_error_code_is_kept():
    update = twilio_update({"MessageStatus": "undelivered", "ErrorCode": "30003"},
                           {"notification_id": "n-1"})
    assert update["error"] == "twilio error 30003" and update["channel"] == "sms"


def test_twilio_callback_without_herald_ids_is_ignored():
    assert twilio_update({"MessageStatus": "delivered"}, {}) is None


def test_sendgrid_events_map_and_foreign_events_are_skipped():
    updates = sendgrid_updates([
        {"event": "delivered", "herald_notification_id": "n-1", "sg_message_id": "m1"},
        {"event": "bounce", "herald_notification_id": "n-2", "reason": "550 no such user"},
        {"event": "open", "herald_notification_id": "n-3"},
        {"event": "delivered"},
    ])
    assert [(u["notification_id"], u["status"]) for u in updates] == [
        ("n-1", "DELIVERED"), ("n-2", "FAILED")]
    assert updates[1]["error"] == "550 no such user"


def test_sendgrid_body_must_be_an_array():
    with pytest.raises(ValueError, match="JSON array"):
        sendgrid_updates({"event": "delivered"})
