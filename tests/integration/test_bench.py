"""The benchmark harness at a tiny scale, so that it cannot rot.

It asserts what the harness measured (counts, ratios, shapes), never how
fast: timings on a shared machine prove nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import KAFKA_PORT, PG_PORT, ROOT, STACK_DIR, herald_command


@pytest.mark.timeout(1200)
def test_the_harness_measures_every_part_at_a_tiny_scale(tmp_path: Path) -> None:
    # Given the harness on a stack of its own (ports beside the test stack's)
    results = tmp_path / "results"
    args = ["bench", "--notifications", "300", "--users", "50", "--rates", "50",
            "--seconds", "3", "--sessions", "20", "--online-users", "5",
            "--recovery-users", "200", "--scaling-workers", "2",
            "--scaling-notifications", "100", "--dir", str(STACK_DIR.parent / "bench-test"),
            "--kafka-port", str(KAFKA_PORT + 300), "--pg-port", str(PG_PORT + 300),
            "--results", str(results)]

    # When it runs every part
    leftovers = set(ROOT.glob("*-data"))
    run = subprocess.run(herald_command(*args), cwd=ROOT, capture_output=True, text=True,
                         timeout=1150)

    # Then it wrote one results file and printed the summary table
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (path,) = results.glob("*.json")
    parts = json.loads(path.read_text())["parts"]
    assert "| throughput: herald, end to end |" in run.stdout
    assert set(ROOT.glob("*-data")) == leftovers, "a process wrote its data dir into the checkout"
    for name, part in parts.items():
        assert "error" not in part, f"{name}: {part['error']}"

    # Throughput: every notification routed and sent, the references over the same records
    t = parts["throughput"]
    herald = t["herald"]
    assert herald["notifications"] == 300
    assert herald["sent"] == herald["expected_sent"] > 0
    assert herald["events"] == herald["expected_events"]
    assert herald["dead"] == 0
    assert herald["preload"]["changelog_format_matches"] is True
    for reference in ("faust", "aiokafka", "producer_perf"):
        assert t[reference]["records"] == 300, (reference, t[reference])
    assert t["herald_vs_faust"] == pytest.approx(herald["per_second"] / t["faust"]["per_second"])
    assert t["herald_vs_aiokafka"] == pytest.approx(
        herald["per_second"] / t["aiokafka"]["per_second"])
    for name, share in (("faust_skeleton", "skeleton_vs_faust"),
                        ("aiokafka_skeleton", "plain_skeleton_vs_faust")):
        skeleton = t[name]
        assert skeleton["records"] == 600, skeleton  # a QUEUED and a SENT event per notification
        assert skeleton["per_second"] == pytest.approx(300 / skeleton["seconds"])
        assert t[share] == pytest.approx(skeleton["per_second"] / t["faust"]["per_second"])

    # Latency: every delivery of the window reached the provider and was timed
    (latency,) = parts["latency"]["runs"]
    assert latency["produced"] == 150
    assert latency["provider_calls"] == latency["deliveries"] > 0
    assert latency["provider_call"]["count"] == latency["deliveries"]
    assert latency["aiokafka"]["count"] == 150
    # and the worker's CPU over the window was read from /proc
    assert 0 < latency["worker_cpu_percent"] <= 100 * (os.cpu_count() or 1)
    assert latency["worker_cpu_ms_per_notification"] > 0
    assert "skipped" in latency["websocket"] or latency["websocket"]["count"] > 0

    # Sockets: measured once the gateway exists, said so until then
    sockets = parts["sockets"]
    assert "skipped" in sockets or sockets["sessions"] == 20

    # Recovery: the probe was sent after each restart; the raw read saw every record
    recovery = parts["recovery"]
    assert recovery["raw_read_records"] == recovery["changelog_records"] >= 200
    for attempt in ("restore_empty", "reopen_kept", "restore_after_kill"):
        assert recovery[attempt]["routing_resumed_s"] > 0

    # Scaling: the pool drained the same kind of backlog
    (scaling,) = parts["scaling"]["runs"]
    assert scaling["workers"] == 2
    assert scaling["sent"] == scaling["expected_sent"] > 0
