"""Prometheus metrics herald exports on ``/metrics``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from rules.breaker import STATE_VALUES

REGISTRY = CollectorRegistry()

CIRCUIT_STATE = Gauge(
    "herald_circuit_state", "Circuit breaker per provider: 0 closed, 1 half-open, 2 open",
    ["provider"], registry=REGISTRY)


def circuit_changed(provider: str, state: str) -> None:
    """Export a provider's breaker state."""
    CIRCUIT_STATE.labels(provider=provider).set(STATE_VALUES[state])


def exposition() -> bytes:
    """The metrics in Prometheus' text format."""
    return generate_latest(REGISTRY)
