"""Part 2: latency at fixed rates, herald against a raw aiokafka produce → consume.

Notifications are produced at a steady rate, each stamped with its
``created_at`` when it is handed to the producer. The noop provider records
created_at → provider call for every delivery (``HERALD_NOOP_LATENCY_FILE``);
connected WebSocket clients record created_at → frame received when the
gateway exists. The reference sends the same rate through plain aiokafka and
measures send → receive in one process.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench import gateway, kafka
from bench.processes import Stack, Worker, cpu_seconds
from bench.report import percentiles
from bench.throughput import PARTITIONS, preload
from bench.workload import User, make_notification, now_iso, routes

Echo = Callable[[str], None]
#: The pacing step: records due in each step are sent together.
STEP_SECONDS = 0.005


async def paced(rate: int, seconds: float, send: Callable[[int], Awaitable[None]]) -> int:
    """Call ``send(i)`` ``rate`` times a second for ``seconds``; return how many were sent."""
    loop = asyncio.get_running_loop()
    total, sent, started = int(rate * seconds), 0, loop.time()
    while sent < total:
        due = min(total, int((loop.time() - started) * rate) + 1)
        while sent < due:
            await send(sent)
            sent += 1
        await asyncio.sleep(STEP_SECONDS)
    return sent


async def _herald_rate(bootstrap: str, run: str, rate: int, seconds: float, users: list[User],
                       online: list[User], web_port: int, secret: str) -> dict[str, Any]:
    """Produce at ``rate``; online users' in-app notifications are timed to their frames."""
    rng = random.Random(rate)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    clients = await gateway.connect(web_port, secret, [u.user_id for u in online]) \
        if online else None
    try:
        expected = 0

        async def send(i: int) -> None:
            nonlocal expected
            if online and i % 10 == 0:  # one in ten goes in-app to a connected user
                user = online[i // 10 % len(online)]
                n = make_notification(f"{run}-{rate}", i, user, rng, created_at=now_iso())
                n["channels"] = ["inapp"]
            else:
                user = users[rng.randrange(len(users))]
                n = make_notification(f"{run}-{rate}", i, user, rng, created_at=now_iso())
            channels, _ = routes(n, user)
            expected += sum(1 for c in channels if not (online and c == "inapp"))
            await producer.send("notifications", key=user.user_id.encode(),
                                value=json.dumps(n).encode())

        started = time.time()
        count = await paced(rate, seconds, send)
        await producer.flush()
        frames = await clients.drain(settle=5.0) if clients else []
        return {"rate": rate, "seconds": seconds, "produced": count, "from": started,
                "until": time.time(), "frames": frames, "expected": expected}
    finally:
        if clients:
            await clients.close()
        await producer.stop()


async def _aiokafka_rate(bootstrap: str, topic: str, rate: int, seconds: float,
                         payload: bytes) -> dict[str, float] | None:
    """Send → receive through plain aiokafka at ``rate``, same record size."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="latest")
    await producer.start()
    await consumer.start()
    await consumer.seek_to_end()
    latencies: list[float] = []
    total = int(rate * seconds)

    async def receive() -> None:
        while len(latencies) < total:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                now = time.time()
                latencies.extend(now - float(r.value[:20]) for r in records)

    async def send(i: int) -> None:
        await producer.send(topic, key=str(i).encode(),
                            value=f"{time.time():<20.6f}".encode() + payload[20:])

    receiving = asyncio.create_task(receive())
    try:
        await paced(rate, seconds, send)
        await asyncio.wait_for(receiving, timeout=30)
    except asyncio.TimeoutError:
        pass
    finally:
        receiving.cancel()
        await producer.stop()
        await consumer.stop()
    return percentiles(latencies)


def read_latencies(path: Path, since: float, until: float) -> list[float]:
    """The noop provider's latencies of notifications created in [since, until)."""
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            created, _, latency = line.partition(" ")
            if since <= float(created) < until:
                out.append(float(latency))
    return out


def run(stack: Stack, workdir: Path, users: list[User], rates: list[int], seconds: float,
        run_id: str, echo: Echo) -> dict[str, Any]:
    env = stack.fresh()
    bootstrap = stack.bootstrap
    available = gateway.available()
    # Connected users get in-app instead of push (router step 4): the others
    # stay offline, so herald's channel rule still says what each one gets.
    online = users[: min(100, len(users) // 2)] if available else []
    offline = users[len(online):]
    latencies = workdir / "provider-latency.txt"
    secret = "bench-jwt-secret-that-is-at-least-32-bytes-long"
    env = {**env, "HERALD_NOOP_LATENCY_FILE": str(latencies), "HERALD_JWT_SECRET": secret}
    if available:
        env["HERALD_CHANNELS"] = env["HERALD_CHANNELS"].replace("inapp=noop", "inapp=gateway")
    worker = Worker(env, workdir / "latency-worker.log", data_dir=workdir / "latency-data").start()
    runs = []
    try:
        preload(env, worker, users)
        worker.wait_ready()
        # Only the user-updates above have produced nothing on delivery-events.
        for rate in rates:
            echo(f"latency: {rate:,}/s for {seconds:.0f}s")
            cpu_from, started = cpu_seconds(worker.pid), time.monotonic()
            measured = asyncio.run(_herald_rate(bootstrap, run_id, rate, seconds, offline, online,
                                                worker.web_port, secret))
            window = (measured["from"], measured["until"])
            limit = max(180.0, 4 * seconds)
            calls = _drained(latencies, window, measured["expected"], worker, limit=limit)
            cpu = cpu_seconds(worker.pid) - cpu_from
            entry = {"rate": rate, "seconds": seconds, "produced": measured["produced"],
                     "deliveries": measured["expected"], "provider_calls": len(calls),
                     "provider_call": percentiles(calls),
                     "websocket": percentiles(measured["frames"]) if available
                     else {"skipped": gateway.UNAVAILABLE},
                     # From the first send until every delivery was made (or given up on).
                     "worker_cpu_percent": round(100 * cpu / (time.monotonic() - started), 1),
                     "worker_cpu_ms_per_notification": round(1000 * cpu / measured["produced"], 2)}
            runs.append(entry)
            if len(calls) < measured["expected"]:
                entry["not_sustained"] = (f"{len(calls):,} of {measured['expected']:,} "
                                          f"deliveries made within {limit:.0f}s "
                                          f"after the window: herald fell behind this rate")
                echo(f"  {entry['not_sustained']}; higher rates skipped")
                break
    finally:
        worker.stop()
    topic = f"bench.{run_id}.latency"
    asyncio.run(kafka.create_topics(bootstrap, [topic], PARTITIONS))
    payload = json.dumps(make_notification(run_id, 0, users[0], random.Random(1))).encode()
    for entry in runs:
        echo(f"latency: raw aiokafka at {entry['rate']:,}/s")
        entry["aiokafka"] = asyncio.run(_aiokafka_rate(bootstrap, topic, entry["rate"], seconds,
                                                       payload.ljust(64)))
    return {"runs": runs, "gateway": available}


def _drained(path: Path, window: tuple[float, float], expected: int, worker: Worker,
             limit: float) -> list[float]:
    """The provider latencies of ``window`` once all ``expected`` are in (or ``limit`` passed)."""
    deadline = time.monotonic() + limit
    while True:
        calls = read_latencies(path, *window)
        if len(calls) >= expected or time.monotonic() > deadline or not worker.alive():
            return calls
        time.sleep(0.5)
