"""The chaos run's pure parts: the fault plan, reading ids off provider messages, reconciliation;
and the two fixes the chaos run led to (table changelog keys, Twilio carrying herald's id)."""

from __future__ import annotations

import random
from urllib.parse import parse_qs, urlsplit

from bench.chaos import SCALES, plan_faults, received_ids, reconcile
from providers.twilio import TwilioProvider
from tests.providers.support import sms


def produced(*specs: tuple[str, list[str]]) -> list[dict]:
    return [{"id": nid, "channels": channels} for nid, channels in specs]


def row(nid: str, channel: str, status: str, reason: str | None = None) -> dict:
    return {"notification_id": nid, "channel": channel, "status": status, "reason": reason}


def test_every_fault_is_planned_inside_the_window_with_three_kills_apart():
    scale = SCALES["small"]
    for seed in range(20):
        faults = plan_faults(scale, random.Random(seed))
        kinds = [f.kind for f in faults]
        assert sorted(set(kinds)) == ["kafka_restart", "postgres_stop", "sendgrid_503",
                                      "twilio_timeout", "worker_sigkill"]
        kills = [f.at for f in faults if f.kind == "worker_sigkill"]
        assert len(kills) == 3 and all(0 < at < scale.window for at in kills)
        assert all(b > a for a, b in zip(kills, kills[1:]))
        assert [f.at for f in faults] == sorted(f.at for f in faults)


def test_ids_are_read_from_each_providers_message():
    callback = "http://h/v1/webhooks/twilio?notification_id=n-4&channel=sms"
    assert received_ids("sendgrid", {"custom_args": {"herald_notification_id": "n-1"}}) == "n-1"
    assert received_ids("smtp", {"headers": {"X-Herald-Notification-Id": "n-2"}}) == "n-2"
    assert received_ids("apns", {"payload": {"herald": {"notification_id": "n-3"}}}) == "n-3"
    assert received_ids("twilio", {"form": {"StatusCallback": callback}}) == "n-4"
    assert received_ids("gateway", {"id": "n-5"}) == "n-5"
    assert received_ids("twilio", {"form": {}}) is None


def test_delivered_suppressed_and_dead_lettered_are_accounted_for():
    report = reconcile(
        produced(("n-1", ["email", "sms"]), ("n-2", ["push"])),
        [row("n-1", "email", "SENT"), row("n-1", "sms", "DEAD", "outcome unknown"),
         row("n-2", "push", "SUPPRESSED", "no push address for the user")],
        {"sendgrid": [{"custom_args": {"herald_notification_id": "n-1"}}]},
        [{"reason": "outcome unknown", "delivery": {"notification_id": "n-1", "channel": "sms"}}])
    assert (report["accounted_pct"], report["duplicate_sends"]) == (100.0, 0)
    assert report["statuses"] == {"DEAD": 1, "SENT": 1, "SUPPRESSED": 1}
    assert report["dlq_reasons"] == {"outcome unknown": 1}


def test_a_second_message_for_one_channel_is_a_duplicate_across_failover_providers():
    report = reconcile(produced(("n-1", ["email"])), [row("n-1", "email", "SENT")],
                       {"sendgrid": [{"custom_args": {"herald_notification_id": "n-1"}}],
                        "smtp": [{"headers": {"X-Herald-Notification-Id": "n-1"}}]}, [])
    assert report["duplicate_sends"] == 1 and report["duplicates"] == [["n-1", "email", 2]]


def test_missing_unfinished_unsent_and_undead_letters_are_not_accounted_for():
    report = reconcile(
        produced(("n-1", ["email"]), ("n-2", ["sms"]), ("n-3", ["push"]), ("n-4", ["inapp"])),
        [row("n-2", "sms", "QUEUED"), row("n-3", "push", "SENT"),
         row("n-4", "inapp", "DEAD", "retries exhausted")], {}, [])
    assert report["accounted"] == 0
    assert {name: p["count"] for name, p in report["problems"].items()} == {
        "missing": 1, "not_final": 1, "sent_not_received": 1, "dead_without_reason": 0,
        "dead_not_in_dlq": 1}


def test_twilio_carries_the_notification_id_in_its_status_callback_when_herald_is_reachable():
    delivery = sms(notification_id="n 1/é")
    provider = TwilioProvider("AC" + "1" * 32, "t", "+15005550006",
                              public_url="https://herald.example.org/")
    url = urlsplit(provider.status_callback(delivery))
    assert (url.netloc, url.path) == ("herald.example.org", "/v1/webhooks/twilio")
    assert parse_qs(url.query) == {"notification_id": ["n 1/é"], "channel": ["sms"]}
    assert TwilioProvider.from_env({"HERALD_TWILIO_ACCOUNT_SID": "AC" + "1" * 32,
                                    "HERALD_TWILIO_AUTH_TOKEN": "t",
                                    "HERALD_SMS_FROM": "+15005550006"}).public_url is None


def test_table_changelogs_decode_the_raw_keys_they_are_written_with():
    # Regression: the changelog topics kept Faust's JSON key codec, so recovery
    # failed on every record and a worker taking over a partition had empty tables.
    from app.factory import create_herald
    from app.settings import Settings

    herald = create_herald(Settings.from_env({
        "HERALD_KAFKA_BOOTSTRAP": "127.0.0.1:1", "HERALD_DATABASE_URL": "postgresql://x@h/d",
        "HERALD_STORE": "memory", "HERALD_DATA_DIR": "/tmp/herald-chaos-unit"}))
    for name, table in herald.tables.by_name().items():
        topic = table.changelog_topic
        assert topic.key_serializer == "raw", name
        assert herald.app.serializers.loads_key(topic.key_type, b"u-42",
                                                serializer=topic.key_serializer) == "u-42"
        assert herald.app.tables._changelogs[topic.get_topic_name()] is table
