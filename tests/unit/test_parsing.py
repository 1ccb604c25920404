"""The public JSON contract: valid input accepted, bad input named precisely."""

import json
import re

import pytest

from app.errors import InvalidEvent
from schemas.parsing import parse_notification, parse_user_update


def raw(**fields):
    return json.dumps(fields).encode()


def test_minimal_notification_gets_its_defaults():
    n = parse_notification(raw(user_id="u-42", title="Hi"))
    assert (n.user_id, n.category, n.priority, n.channels) == ("u-42", "general", "normal", None)
    assert len(n.id) == 36 and n.created_at.endswith("+00:00")


def test_unknown_fields_are_ignored_and_known_ones_kept():
    n = parse_notification(raw(user_id="u-42", id="n-1", body="b", channels=["sms", "email", "sms"],
                               future_field={"x": 1}, priority="critical",
                               send_at="2026-01-01T10:00:00+01:00", data={"city": "Paris"}))
    assert (n.id, n.priority, n.channels, n.data) == ("n-1", "critical", ["sms", "email"],
                                                      {"city": "Paris"})
    assert n.send_at == "2026-01-01T10:00:00+01:00"


def test_serialized_notification_has_no_framework_metadata():
    n = parse_notification(raw(user_id="u-42", title="Hi"))
    assert "__faust" not in json.loads(n.dumps())


@pytest.mark.parametrize(("payload", "message"), [
    (b"not json", "value: not JSON"),
    (b"\xff\xfe", "value: not"),
    (b"[1, 2]", "value: expected a JSON object, got list"),
    (None, "value: empty record"),
    (raw(title="Hi"), "user_id: required"),
    (raw(user_id="  ", title="Hi"), "user_id: must not be empty"),
    (raw(user_id=42, title="Hi"), "user_id: expected a string, got int"),
    (raw(user_id="u"), "title/body/template: one of them is required"),
    (raw(user_id="u", title=["x"]), "title: expected a string, got list"),
    (raw(user_id="u", title="t", priority="urgent"), "priority: must be one of"),
    (raw(user_id="u", title="t", channels="email"), "channels: expected a list, got str"),
    (raw(user_id="u", title="t", channels=["fax"]), "channels: unknown channel 'fax'"),
    (raw(user_id="u", title="t", channels=[]), "channels: must not be empty"),
    (raw(user_id="u", title="t", send_at="tomorrow"), "send_at: not an ISO-8601 time"),
    (raw(user_id="u", title="t", expires_at="2026-01-01T10:00:00"), "expires_at: ISO-8601 time needs an offset"),
    (raw(user_id="u", title="t", data=[1]), "data: expected an object, got list"),
])
def test_bad_notifications_are_rejected_with_the_field_named(payload, message):
    with pytest.raises(InvalidEvent) as caught:
        parse_notification(payload)
    assert str(caught.value).startswith(message)


def test_user_update_keeps_absent_fields_absent():
    update = parse_user_update(raw(user_id="u-1", email="a@example.org"))
    assert (update.email, update.phone, update.push_tokens, update.preferences) == (
        "a@example.org", None, None, None)


def test_user_update_full():
    update = parse_user_update(raw(
        user_id="u-1", phone="+33612345678", timezone="Europe/Paris",
        push_tokens=[{"token": "t1", "platform": "apns"}], remove_push_tokens=["t0"],
        preferences={"categories": {"marketing": {"email": True, "sms": False}},
                     "quiet_hours": {"start": "22:00", "end": "07:00"}}))
    assert update.push_tokens[0].platform == "apns"
    assert update.preferences.categories == {"marketing": {"email": True, "sms": False}}
    assert update.preferences.quiet_hours == {"start": "22:00", "end": "07:00"}


@pytest.mark.parametrize(("fields", "message"), [
    ({}, "user_id: required"),
    ({"email": "nope"}, "email: not an email address"),
    ({"phone": "0612345678"}, "phone: expected E.164"),
    ({"timezone": "Mars/Olympus"}, "timezone: unknown time zone"),
    ({"push_tokens": [{"platform": "fcm"}]}, "push_tokens: token: required"),
    ({"push_tokens": [{"token": "t", "platform": "wns"}]}, "push_tokens: platform: must be one of"),
    ({"preferences": {"categories": {"news": {"fax": True}}}}, "preferences.categories.news: unknown channel"),
    ({"preferences": {"categories": {"news": {"sms": "yes"}}}}, "preferences.categories.news.sms: expected true/false"),
    ({"preferences": {"quiet_hours": {"start": "25:00", "end": "07:00"}}}, "preferences.quiet_hours.start"),
])
def test_bad_user_updates_are_rejected_with_the_field_named(fields, message):
    payload = {"user_id": "u-1", **fields} if fields else {}
    with pytest.raises(InvalidEvent) as caught:
        parse_user_update(json.dumps(payload))
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(("fields", "message"), [
    ({"user_id": "a\x1fb", "title": "x"}, "user_id: contains the control character '\\x1f'"),
    ({"user_id": "u-1", "title": "a\x00b"}, "title: contains a NUL character"),
    ({"user_id": "u-1", "title": "\ud800"}, "title: contains a lone surrogate"),
    ({"user_id": "u-1", "title": "x", "data": {"k": ["\x00"]}}, "data.k[0]: contains a NUL"),
    ({"user_id": "u-1", "title": "x", "send_at": "0001-01-01T00:00:00+01:00"},
     "send_at: year outside 1970-9000"),
])
def test_text_that_downstream_cannot_store_is_refused(fields, message):
    with pytest.raises(InvalidEvent, match=re.escape(message)):
        parse_notification(raw(**fields))


def test_free_text_keeps_line_breaks_and_any_script():
    n = parse_notification(raw(user_id="u-1", title="שלום 👋", body="line 1\nline 2\t\u202e"))
    assert n.body == "line 1\nline 2\t\u202e"


@pytest.mark.parametrize("value", [b'{"user_id": "u-1", "title": "x", "data": {"n": NaN}}',
                                   b'{"user_id": "u-1", "title": "x", "data": {"n": 1e999}}',
                                   b"[" * 5000 + b"]" * 5000])
def test_json_that_is_not_strict_or_too_deep_is_not_json(value):
    with pytest.raises(InvalidEvent, match="value: "):
        parse_notification(value)
