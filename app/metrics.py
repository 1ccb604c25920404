"""Prometheus metrics herald exports on ``/metrics``."""

from __future__ import annotations

from datetime import datetime, timezone

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from rules.breaker import STATE_VALUES

REGISTRY = CollectorRegistry()

CIRCUIT_STATE = Gauge(
    "herald_circuit_state", "Circuit breaker per provider: 0 closed, 1 half-open, 2 open",
    ["provider"], registry=REGISTRY)


STATUS_CHANGES = Counter(
    "herald_status_changes", "Status changes herald recorded, per channel and status",
    ["channel", "status"], registry=REGISTRY)

SENT_LATENCY = Histogram(
    "herald_sent_latency_seconds", "From a notification's creation to a provider accepting it",
    ["channel"], registry=REGISTRY,
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800))


def status_changed(channel: str, status: str, created_at: str | None = None) -> None:
    """Count a status change; a first SENT also observes the end-to-end latency."""
    STATUS_CHANGES.labels(channel=channel, status=status).inc()
    if status == "SENT" and created_at:
        age = datetime.now(timezone.utc) - datetime.fromisoformat(created_at)
        SENT_LATENCY.labels(channel=channel).observe(max(0.0, age.total_seconds()))


def circuit_changed(provider: str, state: str) -> None:
    """Export a provider's breaker state."""
    CIRCUIT_STATE.labels(provider=provider).set(STATE_VALUES[state])


def exposition() -> bytes:
    """The metrics in Prometheus' text format."""
    return generate_latest(REGISTRY)


WS_SESSIONS = Gauge(
    "herald_ws_sessions", "Open real-time gateway sessions on this worker, per transport",
    ["transport"], registry=REGISTRY)

WS_DISCONNECTS = Counter(
    "herald_ws_disconnects", "Gateway sessions ended, per reason (client, heartbeat, overflow, "
    "shutdown, error)", ["reason"], registry=REGISTRY)

WS_FRAMES = Counter(
    "herald_ws_frames", "Notification frames written to gateway sessions, live or from the "
    "resume backlog", ["source"], registry=REGISTRY)
