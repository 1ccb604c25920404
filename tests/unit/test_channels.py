"""Channel resolution: wanted ∩ preferences ∩ addresses, table-driven."""

import pytest

from rules.channels import DEFAULT_CHANNELS, apply_presence, needs_address, resolve_channels

TOKENS = [object()]
EVERYTHING = {"email": "a@example.org", "phone": "+33612345678", "push_tokens": TOKENS}


def decide(wanted, categories=None, category="account", priority="normal", **contacts):
    contacts = {"email": None, "phone": None, "push_tokens": [], **contacts}
    return resolve_channels(user_id="u-1", category=category, priority=priority, wanted=wanted,
                            categories=categories or {}, **contacts)


@pytest.mark.parametrize(
    ("wanted", "categories", "category", "priority", "contacts", "routed", "suppressed"),
    [
        # every wanted channel has an address and no opt-out
        (["email", "sms", "push", "inapp"], {}, "account", "normal", EVERYTHING,
         ["email", "sms", "push", "inapp"], []),
        # no address: suppressed with the reason
        (["email", "sms"], {}, "account", "normal", {}, [], ["email", "sms"]),
        # in-app needs no address beyond the user id
        (["inapp"], {}, "account", "normal", {}, ["inapp"], []),
        # opted out of the category on one channel
        (["email", "inapp"], {"account": {"email": False}}, "account", "normal", EVERYTHING,
         ["inapp"], ["email"]),
        # an opt-out in another category does not matter
        (["email"], {"marketing": {"email": False}}, "account", "normal", EVERYTHING,
         ["email"], []),
        # critical security bypasses the opt-out
        (["email"], {"security": {"email": False}}, "security", "critical", EVERYTHING,
         ["email"], []),
        # high priority does not bypass
        (["email"], {"security": {"email": False}}, "security", "high", EVERYTHING, [], ["email"]),
        # critical marketing never bypasses
        (["email"], {"marketing": {"email": False}}, "marketing", "critical", EVERYTHING,
         [], ["email"]),
        # critical still needs an address
        (["sms"], {}, "otp", "critical", {}, [], ["sms"]),
        # no channels named: the defaults, which leave SMS out
        (None, {}, "account", "normal", EVERYTHING, list(DEFAULT_CHANNELS), []),
    ],
)
def test_resolve_channels(wanted, categories, category, priority, contacts, routed, suppressed):
    # Given a notification and a user's preferences and contacts
    # When channels are resolved
    decision = decide(wanted, categories, category, priority, **contacts)
    # Then exactly the expected channels are routed and the rest suppressed
    assert [route.channel for route in decision.routes] == routed
    assert [skip.channel for skip in decision.suppressed] == suppressed


def test_routes_carry_the_channel_address():
    decision = decide(["email", "sms", "inapp", "push"], **EVERYTHING)
    assert {r.channel: r.address for r in decision.routes} == {
        "email": "a@example.org", "sms": "+33612345678", "inapp": "u-1", "push": "u-1"}


def test_suppression_reasons_say_why():
    decision = decide(["email", "sms"], {"account": {"sms": False}}, phone="+33612345678")
    reasons = {s.channel: s.reason for s in decision.suppressed}
    assert reasons == {"email": "no email address for the user",
                       "sms": "opted out of account on sms"}


@pytest.mark.parametrize(("wanted", "expected"),
                         [(["inapp"], False), (["inapp", "email"], True), (None, True)])
def test_needs_address(wanted, expected):
    assert needs_address(wanted) is expected


@pytest.mark.parametrize(("wanted", "online", "both", "routed"), [
    (["push", "inapp"], True, False, ["inapp"]),
    (["push", "inapp"], True, True, ["push", "inapp"]),
    (["push", "inapp"], False, False, ["push", "inapp"]),
    (["push"], True, False, ["push"]),          # no in-app wanted: push still goes
    (["inapp", "email"], True, False, ["inapp", "email"]),
])
def test_presence_picks_inapp_for_online_users(wanted, online, both, routed):
    # Given channels resolved for a user with a push token
    decision = decide(wanted, **EVERYTHING)
    # When presence is applied
    after = apply_presence(decision, online=online, push_when_online=both)
    # Then an online user gets in-app instead of push unless they asked for both
    assert [r.channel for r in after.routes] == routed
    if "push" in wanted and "push" not in routed:
        assert after.suppressed[-1].reason == "user is online: delivered in-app instead"
