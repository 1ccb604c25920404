"""The metrics herald exports parse as Prometheus text and count what happened."""

from datetime import datetime, timedelta, timezone

from prometheus_client.parser import text_string_to_metric_families

from app import metrics


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
