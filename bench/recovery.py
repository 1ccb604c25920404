"""Part 4: how long a killed worker takes to route again with a large profile table.

The ``contacts`` and ``preferences`` changelogs are filled directly, in the
exact format the worker writes (checked in the throughput part), which is
much faster than feeding a million ``user-updates`` through the worker. A
probe notification produced right after each start is timed from the start
to its SENT event. The reference is reading the same changelogs raw.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any, Callable, Iterator

from bench import kafka
from bench.processes import Stack, Worker
from bench.throughput import DELIVERY_EVENTS
from bench.workload import changelog_records, make_user, now_iso
from tables.declarations import changelog_topic_name

Echo = Callable[[str], None]
TABLES = ("contacts", "preferences")


def _records(users: int, table: str, seed: int = 31) -> Iterator[tuple[bytes, bytes]]:
    rng = random.Random(seed)
    for index in range(users):
        record = changelog_records(make_user(index, rng)).get(table)
        if record:
            yield record


async def _probe(bootstrap: str, worker: Worker, user_id: str, probe_id: str) -> float:
    """Produce a probe for ``user_id``; seconds from the worker's start to its SENT event."""
    start = await kafka.end_offsets(bootstrap, [DELIVERY_EVENTS])
    await kafka.produce_all(bootstrap, "notifications", [(user_id.encode(), json.dumps({
        "id": probe_id, "user_id": user_id, "title": "Probe", "body": "Routing again?",
        "channels": ["email"], "created_at": now_iso()}).encode())])
    marker = probe_id.encode()
    async with kafka.reading(bootstrap, start) as consumer:
        while worker.alive():
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    if marker in r.value and b'"SENT"' in r.value:
                        return r.timestamp / 1000 - worker.started_wall
    raise RuntimeError(f"worker exited before the probe was sent; see {worker.log}")


def _attempt(bootstrap: str, worker: Worker, user_id: str, probe_id: str) -> dict[str, Any]:
    worker.start()

    async def both() -> tuple[float, float]:
        ready = asyncio.create_task(asyncio.to_thread(worker.wait_ready, 1800.0))
        resumed = await asyncio.wait_for(_probe(bootstrap, worker, user_id, probe_id), 1800)
        return resumed, await ready

    resumed, ready = asyncio.run(both())
    return {"routing_resumed_s": resumed, "ready_s": ready}


def run(stack: Stack, workdir: Path, users: int, run_id: str, echo: Echo) -> dict[str, Any]:
    env = stack.fresh()
    bootstrap = stack.bootstrap
    app_id = env.get("HERALD_APP_ID", "herald")
    topics = [changelog_topic_name(app_id, table) for table in TABLES]
    echo(f"recovery: writing {users:,} users to {', '.join(topics)}")
    load_s = sum(asyncio.run(kafka.produce_all(bootstrap, topic, _records(users, table)))
                 for topic, table in zip(topics, TABLES))
    ends = asyncio.run(kafka.end_offsets(bootstrap, topics))
    records = sum(ends.values())
    worker = Worker(env, workdir / "recovery-worker.log", data_dir=workdir / "recovery-data")
    probe_user = f"bench-u{users - 1:07d}"
    result: dict[str, Any] = {"users": users, "changelog_records": records, "load_s": load_s}
    try:
        for name, wipe in (("restore_empty", True), ("reopen_kept", False),
                           ("restore_after_kill", True)):
            if wipe:
                worker.wipe()
            echo(f"recovery: {name.replace('_', ' ')}")
            result[name] = _attempt(bootstrap, worker, probe_user, f"{run_id}-probe-{name}")
            echo(f"  routing resumed after {result[name]['routing_resumed_s']:.1f}s")
            worker.kill()
    finally:
        worker.stop()
    tally = asyncio.run(kafka.read_range(bootstrap, {}, ends))
    result["raw_read_s"] = tally.seconds
    result["raw_read_records"] = tally.records
    result["raw_read_per_second"] = tally.records / tally.seconds if tally.seconds else None
    return result
