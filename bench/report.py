"""Summaries of raw measurements, the results file and the Markdown table (pure)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence


def percentiles(samples: Iterable[float]) -> dict[str, float] | None:
    """p50/p95/p99/max (nearest rank) and the count, in milliseconds; ``None`` if empty."""
    ordered = sorted(samples)
    if not ordered:
        return None

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]

    return {"count": len(ordered), "p50_ms": rank(50) * 1000, "p95_ms": rank(95) * 1000,
            "p99_ms": rank(99) * 1000, "max_ms": ordered[-1] * 1000}


def rate(count: int, seconds: float | None) -> float | None:
    return count / seconds if seconds and seconds > 0 else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator and denominator else None


def write(results: dict[str, Any], folder: Path, stamp: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stamp}.json"
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return path


def _n(value: Any, digits: int = 0, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, (int, float)):
        return f"{value:,.{digits}f}{unit}"
    return str(value)


def _cpu(run: dict[str, Any]) -> str:
    if "worker_cpu_percent" not in run:
        return ""
    return (f"; worker CPU {run['worker_cpu_percent']} % of a core, "
            f"{run['worker_cpu_ms_per_notification']} ms per notification")


def _latency(stats: dict[str, float] | None) -> str:
    if not stats:
        return "n/a"
    return (f"p50 {stats['p50_ms']:.1f} / p95 {stats['p95_ms']:.1f} / "
            f"p99 {stats['p99_ms']:.1f} / max {stats['max_ms']:.1f} ms")


def _skipped(part: dict[str, Any]) -> str | None:
    return f"skipped: {part['skipped']}" if "skipped" in part else (
        f"failed: {part['error']}" if "error" in part else None)


def markdown(results: dict[str, Any]) -> str:
    """The summary table the harness prints and the README shows."""
    rows: list[Sequence[str]] = []
    parts = results.get("parts", {})
    t = parts.get("throughput")
    if t:
        why = _skipped(t)
        if why:
            rows.append(("throughput", why, ""))
        else:
            h = t["herald"]
            rows.append(("throughput: herald, end to end",
                         f"{_n(h['per_second'])} notifications/s",
                         f"{_n(h['notifications'])} notifications, {_n(h['sent'])} deliveries "
                         f"SENT ({_n(h['deliveries_per_second'])}/s), {_n(t['record_bytes'])} B "
                         f"records"))
            for name, label, unit in (
                    ("faust", "Faust pass-through", "records"),
                    ("faust_skeleton", "herald's hops on Faust, no decisions", "notifications"),
                    ("aiokafka_skeleton", "the same hops on aiokafka and RocksDB",
                     "notifications"),
                    ("aiokafka", "raw aiokafka consume → produce", "records"),
                    ("producer_perf", "Kafka ProducerPerformance", "records")):
                if name not in t:
                    continue
                ref = t[name]
                rows.append((f"throughput: {label}", _skipped(ref) or
                             f"{_n(ref.get('per_second'))} {unit}/s", ""))
            if "herald_vs_faust" in t:
                rows.append(("ratio herald / Faust pass-through", _n(t["herald_vs_faust"], 2),
                             "target ≥ 0.5"))
                rows.append(("ratio herald / raw aiokafka", _n(t["herald_vs_aiokafka"], 2), ""))
            if t.get("skeleton_vs_faust") is not None:
                rows.append(("ratio hops with no decisions / Faust pass-through",
                             _n(t["skeleton_vs_faust"], 2), "what any herald on Faust can reach"))
            if t.get("plain_skeleton_vs_faust") is not None:
                rows.append(("ratio the same hops off Faust / Faust pass-through",
                             _n(t["plain_skeleton_vs_faust"], 2), ""))
    lat = parts.get("latency")
    if lat:
        why = _skipped(lat)
        if why:
            rows.append(("latency", why, ""))
        for run in lat.get("runs", []):
            r = run["rate"]
            rows.append((f"latency at {r:,}/s: created → provider call",
                         _latency(run.get("provider_call")),
                         run.get("not_sustained") or f"{run['seconds']:.0f} s, "
                         f"{_n(run.get('deliveries'))} deliveries" + _cpu(run)))
            rows.append((f"latency at {r:,}/s: produce → WebSocket frame",
                         _skipped(run.get("websocket", {})) or _latency(run.get("websocket")),
                         "target at 1,000/s: p50 ≤ 10, p99 ≤ 50 ms"))
            rows.append((f"latency at {r:,}/s: raw aiokafka produce → consume",
                         _latency(run.get("aiokafka")), ""))
    s = parts.get("sockets")
    if s:
        notes = ["target ≤ 50 KiB per session"]
        tried = s.get("sessions", 0) + s.get("failed_sessions", 0)
        if tried < s.get("asked_sessions", tried):
            notes.append(f"{_n(s['asked_sessions'])} asked for; this machine's open-file limit "
                         f"({_n(s['fd_limit'])} per process, hard) leaves room for {_n(tried)}")
        if s.get("failed_sessions"):
            notes.append(f"{_n(s['failed_sessions'])} of {_n(tried)} could not be opened "
                         f"({s['first_failure']})")
        rows.append(("sockets", _skipped(s) or
                     f"{_n(s['sessions'])} sessions, {_n(s.get('rss_kib_per_session'), 1)} KiB "
                     f"per session, 1 notification to each of {_n(s['online_users'])} users in "
                     f"{_n(s.get('fanout_seconds'), 2)} s", "; ".join(notes)))
    rec = parts.get("recovery")
    if rec:
        why = _skipped(rec)
        if why:
            rows.append(("recovery", why, ""))
        else:
            users = f"{_n(rec['users'])} users, {_n(rec['changelog_records'])} changelog records"
            for name, label in (("restore_empty", "changelog restore (empty data dir)"),
                                ("reopen_kept", "RocksDB reopen (data dir kept, after SIGKILL)"),
                                ("restore_after_kill", "changelog restore after SIGKILL")):
                run = rec.get(name)
                if run:
                    rows.append((f"recovery: {label}", f"{_n(run['routing_resumed_s'], 1)} s "
                                 f"to a SENT probe", f"{users}; ready after "
                                 f"{_n(run.get('ready_s'), 1)} s"))
            rows.append(("recovery: raw read of the changelogs (aiokafka)",
                         f"{_n(rec['raw_read_s'], 1)} s",
                         f"{_n(rec.get('raw_read_per_second'))} records/s; target ≤ 30 s"))
    sc = parts.get("scaling")
    if sc:
        why = _skipped(sc)
        if why:
            rows.append(("scaling", why, ""))
        for run in sc.get("runs", []):
            rows.append((f"scaling: {run['workers']} worker(s)",
                         _skipped(run) or f"{_n(run.get('per_second'))} notifications/s",
                         f"{_n(run.get('notifications'))} notifications; "
                         f"{results.get('machine', {}).get('cores', '?')} cores"))
    lines = ["| measurement | result | notes |", "| --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)
