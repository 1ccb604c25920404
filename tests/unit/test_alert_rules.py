"""The alert rules and the metrics pass Prometheus' own checker, promtool.

promtool comes with Debian's ``prometheus`` package, which scripts/install
installs. The alerts' behaviour (when they fire and when they stay quiet) is
tested by ``promtool test rules`` on deploy/prometheus/tests/alerts_test.yml.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from app import metrics

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"


def promtool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None:
        pytest.fail("promtool is missing: run scripts/install (Debian package prometheus)")
    return subprocess.run(["promtool", *args], input=stdin.decode() if stdin else None,
                          capture_output=True, text=True, timeout=60)


def test_alert_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", str(PROMETHEUS / "alerts.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_fire_and_stay_quiet_as_their_unit_tests_say() -> None:
    # failure rate, breaker open, lag, PostgreSQL-down and WebSocket-drop alerts, each with a
    # case where it must not fire
    result = promtool("test", "rules", str(PROMETHEUS / "tests" / "alerts_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_prometheus_config_passes_promtool_check(tmp_path: Path) -> None:
    # Given the compose Prometheus config with its rule file where the
    # container would find it, here next to it
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    config["rule_files"] = [str(PROMETHEUS / "alerts.yml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))

    # Then promtool accepts it
    result = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_exposition_passes_promtool_check_metrics() -> None:
    # Given every kind of metric herald exports, with values
    metrics.status_changed("email", "SENT", "2020-01-01T00:00:00+00:00")
    metrics.status_changed("inapp", "DELIVERED", "2020-01-01T00:00:00+00:00")
    metrics.delivery_outcome("email", "sendgrid", "failed")
    metrics.dead_lettered("deliveries.email", "retries exhausted")
    metrics.event_in("intake")
    metrics.agent_failed("intake")
    metrics.recorded(10, 0.01)
    metrics.recorder_retried()
    metrics.circuit_changed("twilio", "open")

    # When promtool lints the exposition
    result = promtool("check", "metrics", stdin=metrics.exposition())

    # Then it finds nothing wrong (names, units, help texts, counters)
    assert result.returncode == 0, result.stdout + result.stderr
