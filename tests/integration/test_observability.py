"""Observability against a real worker: /metrics checked by promtool and scraped by a
real Prometheus server, consumer lag that rises and falls, and JSON logs that
follow one notification through every agent.

The module runs its own stack and worker (JSON logs at debug level), so its
lag and log assertions see only its own records.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import pytest
import yaml
from aiokafka import AIOKafkaProducer

from tests.integration.conftest import (
    KAFKA_PORT,
    PG_PORT,
    ROOT,
    STACK_DIR,
    kafka_producer,
    Worker,
    eventually,
    free_port,
    fresh_stack,
    produce,
)

pytestmark = pytest.mark.integration

RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"


@pytest.fixture(scope="module")
def obs_env() -> Iterator[dict[str, str]]:
    with fresh_stack(STACK_DIR.parent / f"{STACK_DIR.name}-obs", KAFKA_PORT + 200,
                     PG_PORT + 200) as env:
        yield env


@pytest.fixture(scope="module")
def obs_worker(obs_env: dict[str, str],
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    env = {**obs_env, "HERALD_WEB_PORT": str(free_port()),
           "HERALD_DATA_DIR": str(tmp_path_factory.mktemp("obs-data")),
           "HERALD_LOG_FORMAT": "json", "HERALD_LOG_LEVEL": "debug",
           "HERALD_RETRY_DELAYS": "1,2,3"}
    running = Worker(env, tmp_path_factory.mktemp("obs-logs") / "worker.log")
    running.start()
    yield running
    running.stop()


@pytest.fixture
async def producer(obs_env: dict[str, str]) -> AsyncIterator[AIOKafkaProducer]:
    """A plain producer on this module's stack (the shared fixture's is another stack)."""
    async with kafka_producer(obs_env["HERALD_KAFKA_BOOTSTRAP"]) as client:
        yield client


def scrape(worker: Worker) -> str:
    with urllib.request.urlopen(worker.url + "/metrics", timeout=10) as response:
        return response.read().decode()


def sample(text: str, name: str, **labels: str) -> float | None:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and labels.items() <= found.labels.items():
                return float(found.value)
    return None


def log_lines(worker: Worker) -> list[dict[str, Any]]:
    return [json.loads(line) for line in worker.log_path.read_text().splitlines() if line.strip()]


def notification(nid: str, user: str) -> dict[str, Any]:
    return {"id": nid, "user_id": user, "title": "Hello", "body": "Observed",
            "channels": ["inapp"]}


async def test_one_notification_is_followed_through_every_agent_in_json_logs(
        obs_worker: Worker, producer: AIOKafkaProducer, unique: str) -> None:
    # Given a worker logging JSON
    nid = f"n-follow-{unique}"

    # When one notification goes through it
    await produce(producer, "notifications", f"u-{unique}", notification(nid, f"u-{unique}"))

    # Then its id is on the lines of intake, router, delivery and recorder
    async def agents_seen() -> set[str] | None:
        seen = {line.get("agent") for line in log_lines(obs_worker)
                if line.get("notification_id") == nid}
        wanted = {"intake", "router-bulk", "deliver-inapp-bulk", "recorder"}
        return seen if wanted <= seen else None

    await eventually(agents_seen, timeout=60, what=f"{nid} in the logs of every agent")

    # and every line of the worker's output is one JSON object, none
    # carrying a user id as a field
    lines = log_lines(obs_worker)
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    assert not [line for line in lines if "user_id" in line]


async def test_metrics_pass_promtool_and_count_what_happened(
        obs_worker: Worker, producer: AIOKafkaProducer, unique: str) -> None:
    # Given a notification delivered in-app
    await produce(producer, "notifications", f"u-{unique}",
                  notification(f"n-metrics-{unique}", f"u-{unique}"))

    async def counted() -> str | None:
        text = scrape(obs_worker)
        sent = sample(text, "herald_deliveries_total", channel="inapp", outcome="sent")
        recorded = sample(text, "herald_recorder_batch_size_count")
        return text if sent and recorded else None

    # When /metrics is scraped
    text = await eventually(counted, timeout=60, what="the delivery counted on /metrics")

    # Then promtool finds the exposition valid, and it carries the per-agent,
    # latency, lag and table figures
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert sample(text, "herald_agent_events_in_total", agent="intake") >= 1
    assert sample(text, "herald_agent_events_out_total", agent="intake",
                  topic="notifications.bulk") >= 1
    assert sample(text, "herald_sent_latency_seconds_count", channel="inapp") >= 1
    assert sample(text, "herald_consumer_lag", topic="notifications") is not None
    assert sample(text, "herald_table_keys", table="sends") is not None
    assert "u-" + unique not in text and f"n-metrics-{unique}" not in text


async def test_consumer_lag_rises_while_records_wait_and_falls_when_they_are_handled(
        obs_worker: Worker, producer: AIOKafkaProducer, unique: str) -> None:
    # Given five in-app retries due in 20 s on one partition of the last
    # retry stage: its agent holds the first until it is due, so none of the
    # five is committed meanwhile
    due = (datetime.now(timezone.utc) + timedelta(seconds=20)).isoformat()
    for i in range(5):
        await produce(producer, "deliveries.inapp.retry.3", f"u-{unique}", {
            "notification_id": f"n-lag-{unique}-{i}", "user_id": f"u-{unique}",
            "channel": "inapp", "address": f"u-{unique}", "title": "Late", "body": "Retry",
            "category": "account", "priority": "normal",
            "created_at": datetime.now(timezone.utc).isoformat(), "attempt": 4,
            "not_before": due}, partition=5)

    def lag() -> float:
        return sample(scrape(obs_worker), "herald_consumer_lag",
                      topic="deliveries.inapp.retry.3", partition="5") or 0.0

    # Then the lag of that partition shows them, then drops to 0 once they
    # were released and committed
    async def behind() -> bool:
        return lag() >= 4

    async def caught_up() -> bool:
        return lag() == 0

    await eventually(behind, timeout=15, what="lag of at least 4 on deliveries.inapp.retry.3[5]")
    await eventually(caught_up, timeout=60, what="lag back to 0")


@pytest.fixture(scope="module")
def prometheus(obs_worker: Worker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prometheus server (Debian's binary) scraping the worker every second."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is missing: run scripts/install (Debian package prometheus)")
    folder = tmp_path_factory.mktemp("prometheus")
    # A scrape samples the lag from the brokers (about 1 s on a busy box): 2 s to answer.
    config = {"global": {"scrape_interval": "2s", "scrape_timeout": "2s",
                         "evaluation_interval": "1s"},
              "rule_files": [str(RULES)],
              "scrape_configs": [{"job_name": "herald", "static_configs": [
                  {"targets": [f"127.0.0.1:{obs_worker.web_port}"]}]}]}
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    with open(folder / "prometheus.log", "wb") as log:
        process = subprocess.Popen(
            [binary, f"--config.file={folder / 'prometheus.yml'}",
             f"--storage.tsdb.path={folder / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def api(base: str, path: str, **params: str) -> Any:
    url = f"{base}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())["data"]
    except OSError:
        return None  # not listening yet


async def test_a_real_prometheus_scrapes_the_worker_and_loads_the_alert_rules(
        prometheus: str, obs_worker: Worker) -> None:
    # When Prometheus has scraped the worker
    async def scraped() -> list[Any] | None:
        data = api(prometheus, "query", query='sum(herald_agent_events_in_total{job="herald"})')
        return data["result"] if data and data["result"] else None

    async def up() -> bool:
        data = api(prometheus, "query", query='up{job="herald"}')
        return bool(data and data["result"] and data["result"][0]["value"][1] == "1")

    # Then herald's metrics are queryable, the target is up, and every alert
    # rule is loaded and evaluates without error
    result = await eventually(scraped, timeout=60, what="herald metrics in Prometheus")
    assert float(result[0]["value"][1]) > 0
    await eventually(up, timeout=30, what='up{job="herald"} == 1')

    async def rules_evaluated() -> list[Any] | None:
        data = api(prometheus, "rules")
        rules = [r for g in (data or {}).get("groups", []) for r in g["rules"]]
        return rules if rules and all(r.get("lastEvaluation", "").startswith("20")
                                      for r in rules) else None

    rules = await eventually(rules_evaluated, timeout=30, what="the alert rules evaluated")
    assert {r["health"] for r in rules} == {"ok"}, [r for r in rules if r["health"] != "ok"]
    assert "HeraldDeliveryFailureRateHigh" in {r["name"] for r in rules}
