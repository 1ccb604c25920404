"""Applying user updates to stored contacts and preferences."""

import json

from schemas.parsing import parse_user_update
from schemas.records import Contacts, Preferences, PushToken
from tables.profile import apply_contacts, apply_preferences


def update(**fields):
    return parse_user_update(json.dumps({"user_id": "u-1", **fields}))


def test_present_fields_replace_absent_ones_stay():
    current = Contacts(email="old@example.org", phone="+33600000000")
    after = apply_contacts(current, update(email="new@example.org"))
    assert (after.email, after.phone) == ("new@example.org", "+33600000000")


def test_push_tokens_are_added_refreshed_and_removed():
    current = Contacts(push_tokens=[PushToken(token="a", platform="fcm"),
                                    PushToken(token="b", platform="fcm")])
    after = apply_contacts(current, update(push_tokens=[{"token": "b", "platform": "apns"},
                                                        {"token": "c", "platform": "fcm"}],
                                           remove_push_tokens=["a"]))
    assert [(t.token, t.platform) for t in after.push_tokens] == [("b", "apns"), ("c", "fcm")]


def test_first_update_creates_contacts():
    assert apply_contacts(None, update(email="a@example.org")).email == "a@example.org"


def test_preferences_merge_per_category():
    current = Preferences(categories={"news": {"email": False}, "billing": {"sms": True}})
    after = apply_preferences(current, update(preferences={"categories": {"news": {"email": True}}}))
    assert after.categories == {"news": {"email": True}, "billing": {"sms": True}}


def test_an_update_without_preferences_changes_none():
    assert apply_preferences(Preferences(), update(email="a@example.org")) is None
