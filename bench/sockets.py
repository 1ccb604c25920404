"""Part 3: many concurrent WebSocket sessions on one worker; memory and fan-out time."""

from __future__ import annotations

import asyncio
import json
import resource
import time
from pathlib import Path
from typing import Any, Callable

from aiokafka import AIOKafkaProducer

from bench import gateway
from bench.processes import Stack, Worker, rss_kib
from bench.throughput import preload
from bench.workload import make_users, now_iso

Echo = Callable[[str], None]
SECRET = "bench-jwt-secret-that-is-at-least-32-bytes-long"
#: Descriptors a worker (Kafka, RocksDB, PostgreSQL, logs) and the client
#: process need besides one per session.
FD_RESERVE = 1000


def raise_fd_limit(wanted: int) -> int:
    """Lift this process's (and so its children's) open-file limit as far as allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard == resource.RLIM_INFINITY else min(max(wanted, soft), hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


async def _measure(worker: Worker, user_ids: list[str], online: int,
                   bootstrap: str) -> dict[str, Any]:
    before = rss_kib(worker.pid)
    opened = time.monotonic()
    errors: list[BaseException] = []
    clients = await gateway.connect(worker.web_port, SECRET, user_ids, errors=errors)
    connect_s = time.monotonic() - opened
    try:
        await asyncio.sleep(2)  # let the worker's per-session allocations settle
        after = rss_kib(worker.pid)
        targets = user_ids[:online]
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            started = time.time()
            for i, uid in enumerate(targets):
                value = {"id": f"sock-{started:.0f}-{i}", "user_id": uid, "title": "Ping",
                         "body": "One for everyone online", "channels": ["inapp"],
                         "created_at": now_iso()}
                await producer.send("notifications", key=uid.encode(),
                                    value=json.dumps(value).encode())
            await producer.flush()
        finally:
            await producer.stop()
        deadline = time.monotonic() + 120
        while len(clients.received) < len(targets) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        last = max(clients.received.values(), default=started)
        return {"sessions": len(clients.sockets), "failed_sessions": len(errors),
                "first_failure": f"{type(errors[0]).__name__}: {errors[0]}"[:300] if errors
                else None,
                "connect_s": connect_s,
                "rss_before_kib": before, "rss_after_kib": after,
                "rss_kib_per_session": (after - before) / max(1, len(clients.sockets)),
                "online_users": len(targets), "delivered": len(clients.received),
                "fanout_seconds": last - started}
    finally:
        await clients.close()


def run(stack: Stack, workdir: Path, sessions: int, online: int, echo: Echo) -> dict[str, Any]:
    if not gateway.available():
        return {"skipped": gateway.UNAVAILABLE, "sessions": sessions, "online_users": online}
    limit = raise_fd_limit(sessions + FD_RESERVE)
    wanted = sessions
    # The worker holds one descriptor per session, the client one too, each
    # process under the same limit: beyond it the handshakes just fail.
    sessions = min(sessions, limit - FD_RESERVE)
    env = stack.fresh()
    env = {**env, "HERALD_JWT_SECRET": SECRET,
           "HERALD_CHANNELS": env["HERALD_CHANNELS"].replace("inapp=noop", "inapp=gateway")}
    users = make_users(sessions, seed=23)
    worker = Worker(env, workdir / "sockets-worker.log", data_dir=workdir / "sockets-data").start()
    try:
        preload(env, worker, users)
        worker.wait_ready()
        echo(f"sockets: opening {sessions:,} sessions (fd limit {limit:,} per process"
             f"{f', so not the {wanted:,} asked for' if sessions < wanted else ''})")
        result = asyncio.run(_measure(worker, [u.user_id for u in users], online,
                                      stack.bootstrap))
    finally:
        worker.stop()
    return {**result, "fd_limit": limit, "asked_sessions": wanted}
