"""The chaos run at a small scale: a few hundred notifications through a two-worker pool
while workers are SIGKILLed, the broker restarts, SendGrid answers 503, Twilio times out
and PostgreSQL stops. Nothing lost, nothing sent twice (bench/chaos.py does the work)."""

from __future__ import annotations

import os

import pytest

from bench.chaos import SCALES, Chaos, Config
from tests.integration.conftest import ROOT

pytestmark = pytest.mark.integration

KAFKA_PORT = int(os.environ.get("HERALD_TEST_CHAOS_KAFKA_PORT", "62092"))
PG_PORT = int(os.environ.get("HERALD_TEST_CHAOS_PG_PORT", "62432"))


@pytest.mark.timeout(480)
async def test_small_chaos_run_accounts_for_everything_and_sends_nothing_twice(tmp_path):
    # Given a stack, the fakes and a pool of two workers, all of the run's own
    config = Config(scale=SCALES["small"], directory=ROOT / ".local" / "chaos-test",
                    kafka_port=KAFKA_PORT, pg_port=PG_PORT, seed=7, results_dir=tmp_path)

    # When 300 notifications go through while every fault is injected
    report = await Chaos(config).run()

    # Then each is delivered, suppressed or dead-lettered with a reason, none twice
    r = report["reconciliation"]
    assert [e["kind"] for e in report["faults"]].count("worker_sigkill") == 3
    assert {e["kind"] for e in report["faults"]} == {
        "worker_sigkill", "kafka_restart", "sendgrid_503", "twilio_timeout", "postgres_stop"}
    assert report["drained"], report["reconciliation"]["problems"]
    assert r["accounted_pct"] == 100.0, r["problems"]
    assert r["duplicate_sends"] == 0, r["duplicates"]
    assert r["unidentified_messages"] == 0 and not r["stray_sends"]
