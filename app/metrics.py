"""Prometheus metrics herald exports on ``/metrics``.

Counted where the thing happens: agents' events in ``handle_each``, records
produced in a Faust sensor (attributed to the agent whose event was being
handled), provider answers in the channel sender, retries and dead letters
in the delivery agent, status changes in ``emit_status``. Consumer lag and
table sizes are sampled when Prometheus scrapes (:func:`sample`).

Labels stay bounded: agent, topic, partition, channel, provider, status,
outcome, table, and dead-letter reasons (a fixed set in the code). Never a
user id or a notification id.
"""

from __future__ import annotations

import functools
import logging
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from faust.sensors import Sensor
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from app import logs
from rules.breaker import STATE_VALUES

if TYPE_CHECKING:
    from app.context import Herald

logger = logging.getLogger("herald.metrics")

REGISTRY = CollectorRegistry()

#: End-to-end latencies: from seconds (in-app, push) to half an hour (a long retry).
LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
#: Outside any agent (web views, timers, the producer's own buffer).
NO_AGENT = "-"

CIRCUIT_STATE = Gauge(
    "herald_circuit_state", "Circuit breaker per provider: 0 closed, 1 half-open, 2 open",
    ["provider"], registry=REGISTRY)

STATUS_CHANGES = Counter(
    "herald_status_changes", "Status changes herald recorded, per channel and status",
    ["channel", "status"], registry=REGISTRY)

SENT_LATENCY = Histogram(
    "herald_sent_latency_seconds",
    "From a notification's creation to a provider accepting it (held notifications excluded)",
    ["channel"], registry=REGISTRY, buckets=LATENCY_BUCKETS)

DELIVERED_LATENCY = Histogram(
    "herald_delivered_latency_seconds",
    "From a notification's creation to the device or provider confirming delivery",
    ["channel"], registry=REGISTRY, buckets=LATENCY_BUCKETS)

EVENTS_IN = Counter(
    "herald_agent_events_in", "Events an agent took from its topic", ["agent"], registry=REGISTRY)

EVENTS_OUT = Counter(
    "herald_agent_events_out", "Records produced, per agent that produced them and topic",
    ["agent", "topic"], registry=REGISTRY)

AGENT_ERRORS = Counter(
    "herald_agent_errors", "Events whose handling raised (each one dead-lettered)",
    ["agent"], registry=REGISTRY)

DELIVERIES = Counter(
    "herald_deliveries",
    "Delivery outcomes per channel and provider: sent, failed (a provider call that "
    "failed), retried, dead_lettered",
    ["channel", "provider", "outcome"], registry=REGISTRY)

DEAD_LETTERS = Counter(
    "herald_dead_letters", "Records produced to deliveries.dlq, per source topic and reason",
    ["topic", "reason"], registry=REGISTRY)

CONSUMER_LAG = Gauge(
    "herald_consumer_lag",
    "Records behind the end of each partition this worker consumes (end offset minus "
    "committed offset)", ["topic", "partition"], registry=REGISTRY)

TABLE_KEYS = Gauge(
    "herald_table_keys", "Keys of each table on this worker's active partitions "
    "(RocksDB's estimate)", ["table"], registry=REGISTRY)

RECORDER_BATCH = Histogram(
    "herald_recorder_batch_size", "Status events per batch the recorder writes",
    registry=REGISTRY, buckets=(1, 5, 10, 25, 50, 100, 250, 500))

RECORDER_WRITE = Histogram(
    "herald_recorder_write_seconds", "Time one batch write to PostgreSQL took",
    registry=REGISTRY, buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5))

RECORDER_RETRIES = Counter(
    "herald_recorder_retries", "Batch writes retried because PostgreSQL was unavailable",
    registry=REGISTRY)


def _age(created_at: str) -> float:
    return max(0.0, (datetime.now(timezone.utc)
                     - datetime.fromisoformat(created_at)).total_seconds())


def status_changed(channel: str, status: str, created_at: str | None = None) -> None:
    """Count a status change; SENT and DELIVERED with ``created_at`` observe the latency."""
    _child(STATUS_CHANGES, channel, status).inc()
    if created_at and status == "SENT":
        _child(SENT_LATENCY, channel).observe(_age(created_at))
    elif created_at and status == "DELIVERED":
        _child(DELIVERED_LATENCY, channel).observe(_age(created_at))


def circuit_changed(provider: str, state: str) -> None:
    """Export a provider's breaker state."""
    CIRCUIT_STATE.labels(provider=provider).set(STATE_VALUES[state])


def delivery_outcome(channel: str, provider: str, outcome: str) -> None:
    """Count one delivery outcome (sent, failed, retried, dead_lettered)."""
    _child(DELIVERIES, channel, provider, outcome).inc()


def dead_lettered(topic: str, reason: str) -> None:
    """Count a record given up on."""
    DEAD_LETTERS.labels(topic=topic, reason=reason).inc()


def event_in(agent: str, count: int = 1) -> None:
    """Count events an agent took."""
    _child(EVENTS_IN, agent).inc(count)


def agent_failed(agent: str, count: int = 1) -> None:
    """Count events whose handling raised."""
    AGENT_ERRORS.labels(agent=agent).inc(count)


def recorded(batch_size: int, seconds: float) -> None:
    """Observe one successful recorder write."""
    RECORDER_BATCH.observe(batch_size)
    RECORDER_WRITE.observe(seconds)


def recorder_retried() -> None:
    """Count a batch write retried while PostgreSQL is unavailable."""
    RECORDER_RETRIES.inc()


def produced(topic: str, count: int = 1, agent: str | None = None) -> None:
    """Count records produced by ``agent``, by default the agent handling an event now."""
    _child(EVENTS_OUT, agent or logs.current("agent") or NO_AGENT, topic).inc(count)


def producing_agent() -> str:
    """The agent handling an event now, as :func:`produced` labels it."""
    return logs.current("agent") or NO_AGENT


@functools.lru_cache(maxsize=4096)
def _child(metric: Any, *values: str) -> Any:
    """``metric``'s child for these label values (in declaration order), made once.

    ``labels()`` validates and locks on every call: a measurable cost per
    record. Only for metrics whose children are never removed.
    """
    return metric.labels(*values)


class ProducedRecords(Sensor):
    """Counts every record produced through Faust (table writes, Faust's own sends)."""

    def on_send_initiated(self, producer: Any, topic: str, message: Any,
                          keysize: int, valsize: int) -> Any:
        produced(topic)
        return None


def install(herald: "Herald") -> None:
    """Attach the produced-records sensor to the app."""
    herald.app.sensors.add(ProducedRecords())


def table_keys(table: Any) -> int:
    """Keys of a table on this worker: RocksDB's estimate (counting would scan every key)."""
    databases = getattr(table.data, "_dbs_for_actives", None)
    if databases is None:
        return len(table)
    return sum(int(db.property_int_value("rocksdb.estimate-num-keys") or 0)
               for db in databases())


async def sample(herald: "Herald") -> None:
    """Refresh the gauges read from the worker's state: consumer lag and table sizes.

    Lag is the partition's end offset minus the group's committed offset
    (what Kafka's own tools and KEDA report), for the partitions this worker
    consumes; changelog partitions, read only during recovery, are left out.
    Sampling never fails a scrape: what cannot be read is left as it was.
    """
    app = herald.app
    try:
        for name, table in herald.tables.by_name().items():
            TABLE_KEYS.labels(table=name).set(table_keys(table))
    except Exception as exc:  # noqa: BLE001 - a scrape must not fail on a rebalance
        logger.debug("table sizes not sampled: %r", exc)
    try:
        changelogs = app.tables.changelog_topics
        tps = sorted(tp for tp in app.consumer.assignment() if tp.topic not in changelogs)
        ends = await app.consumer.highwaters(*tps) if tps else {}
        # Faust's own record of the committed offsets: read from the broker when
        # partitions are assigned, updated on each commit. No public accessor.
        committed = getattr(app.consumer, "_committed_offset", {})
        # Never committed: everything from the log's start would be read again.
        starts = await app.consumer.earliest_offsets(*tps) if tps else {}
        lags = {}
        for tp in tps:
            done = committed.get(tp)
            if done is None:
                done = starts.get(tp)
            if ends.get(tp) is not None and done is not None:
                lags[tp] = max(0, ends[tp] - done)
        for source in herald.lag_sources:
            try:
                lags.update(await source())
            except Exception as exc:  # noqa: BLE001 - one source must not hide the others
                logger.debug("lag of %r not sampled: %r", source, exc)
        CONSUMER_LAG.clear()
        for tp, lag in lags.items():
            CONSUMER_LAG.labels(topic=tp.topic, partition=str(tp.partition)).set(lag)
    except Exception as exc:  # noqa: BLE001 - a scrape must not fail on a rebalance
        logger.debug("consumer lag not sampled: %r", exc)


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
