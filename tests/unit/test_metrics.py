"""The metrics herald exports parse as Prometheus text and count what happened."""

from datetime import datetime, timedelta, timezone

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app import logs, metrics
from app.errors import PermanentDeliveryError, TransientDeliveryError
from providers.base import Provider, Receipt
from providers.channel import ChannelSender, provider_of
from schemas.records import Delivery


def samples() -> dict[tuple[str, tuple], float]:
    text = metrics.exposition().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_status_changes_are_counted_and_sent_latency_observed():
    # Given a notification created 2 s ago and now sent by email
    created = (datetime.now(timezone.utc) - timedelta(seconds=2)).isoformat()
    counter = ("herald_status_changes_total", (("channel", "email"), ("status", "SENT")))
    under_1s = ("herald_sent_latency_seconds_bucket", (("channel", "email"), ("le", "1.0")))
    under_2_5s = ("herald_sent_latency_seconds_bucket", (("channel", "email"), ("le", "2.5")))
    before = samples()
    metrics.status_changed("email", "SENT", created)
    after = samples()
    # Then the counter moved by one and the latency landed under 2.5 s, not under 1 s
    assert after[counter] == before.get(counter, 0.0) + 1
    assert after[under_2_5s] == before.get(under_2_5s, 0.0) + 1
    assert after[under_1s] == before.get(under_1s, 0.0)


def test_circuit_state_is_exported_by_provider():
    metrics.circuit_changed("sendgrid", "open")
    assert samples()[("herald_circuit_state", (("provider", "sendgrid"),))] == 2.0
    metrics.circuit_changed("sendgrid", "closed")
    assert samples()[("herald_circuit_state", (("provider", "sendgrid"),))] == 0.0


class Scripted(Provider):
    """A provider answering from a script: a receipt, or an error to raise."""

    def __init__(self, name, answers):
        super().__init__()
        self.name = name
        self.answers = list(answers)

    async def _send(self, delivery):
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return Receipt(self.name, answer)


def delivery():
    return Delivery(notification_id="n-1", user_id="u-1", channel="email", address="a@example.org",
                    title="Hi", body="there", category="account", priority="normal",
                    created_at="2020-01-01T00:00:00+00:00")


def outcome(provider, result):
    key = ("herald_deliveries_total",
           (("channel", "email"), ("outcome", result), ("provider", provider)))
    return samples().get(key, 0.0)


async def test_channel_sender_counts_each_provider_answer_and_marks_who_failed():
    # Given SendGrid failing transiently once then accepting
    sender = ChannelSender("email", [Scripted("sg-test", [TransientDeliveryError("503"), "m-1"])])
    failed_before, sent_before = outcome("sg-test", "failed"), outcome("sg-test", "sent")

    # When two sends are tried
    with pytest.raises(TransientDeliveryError) as raised:
        await sender.send(delivery())
    await sender.send(delivery())

    # Then one failure and one success are counted against the provider,
    # and the error says which provider it came from
    assert outcome("sg-test", "failed") == failed_before + 1
    assert outcome("sg-test", "sent") == sent_before + 1
    assert provider_of(raised.value) == "sg-test"
    assert provider_of(TransientDeliveryError("no provider answered")) == "none"


async def test_permanent_failures_are_counted_as_failed_too():
    sender = ChannelSender("email", [Scripted("sg-perm", [PermanentDeliveryError("400")])])
    before = outcome("sg-perm", "failed")
    with pytest.raises(PermanentDeliveryError):
        await sender.send(delivery())
    assert outcome("sg-perm", "failed") == before + 1


def test_delivered_latency_is_observed_only_with_a_creation_time():
    count = ("herald_delivered_latency_seconds_count", (("channel", "inapp"),))
    before = samples().get(count, 0.0)
    metrics.status_changed("inapp", "DELIVERED")
    metrics.status_changed("inapp", "DELIVERED",
                           (datetime.now(timezone.utc) - timedelta(seconds=1)).isoformat())
    assert samples()[count] == before + 1


def test_agent_events_and_dead_letters_are_counted_with_bounded_labels():
    metrics.event_in("router-bulk", 3)
    metrics.agent_failed("router-bulk")
    metrics.dead_lettered("notifications", "invalid notification")
    found = samples()
    assert found[("herald_agent_events_in_total", (("agent", "router-bulk"),))] >= 3
    assert found[("herald_agent_errors_total", (("agent", "router-bulk"),))] >= 1
    assert found[("herald_dead_letters_total",
                  (("reason", "invalid notification"), ("topic", "notifications")))] >= 1


def test_produced_records_are_attributed_to_the_agent_in_hand():
    sensor = metrics.ProducedRecords()
    key = ("herald_agent_events_out_total", (("agent", "intake"), ("topic", "notifications.bulk")))
    outside = ("herald_agent_events_out_total", (("agent", "-"), ("topic", "herald.ticks")))
    before, before_outside = samples().get(key, 0.0), samples().get(outside, 0.0)
    with logs.event_context(agent="intake", notification_id="n-1"):
        sensor.on_send_initiated(None, "notifications.bulk", None, 0, 0)
    sensor.on_send_initiated(None, "herald.ticks", None, 0, 0)
    assert samples()[key] == before + 1
    assert samples()[outside] == before_outside + 1


def test_table_keys_counts_a_memory_table():
    class MemoryTable(dict):
        data = {}

    assert metrics.table_keys(MemoryTable(a=1, b=2)) == 2


def test_recorder_batches_are_observed():
    before = samples().get(("herald_recorder_batch_size_count", ()), 0.0)
    metrics.recorded(42, 0.003)
    assert samples()[("herald_recorder_batch_size_count", ())] == before + 1
