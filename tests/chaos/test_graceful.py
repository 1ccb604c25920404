"""Graceful shutdown: SIGTERM drains in-flight deliveries and commits; a rolling restart of a
two-worker pool sends nothing twice. Real Kafka and PostgreSQL, real provider SDKs against
the fakes (served by the test process)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from bench.chaos import Fakes, PoolProcess, free_ports, received_ids, user_update
from tests.integration.conftest import (
    KAFKA_PORT, PG_PORT, STACK_DIR, Worker, eventually, free_port, fresh_stack, kafka_producer,
    produce,
)

pytestmark = pytest.mark.integration

FINAL = ("SENT", "DELIVERED", "DEAD", "SUPPRESSED", "FAILED")


@pytest.fixture(scope="module")
def graceful_stack() -> Iterator[dict[str, str]]:
    """A stack of these tests' own: each test runs a consumer group of its own from offset 0."""
    with fresh_stack(STACK_DIR.parent / f"{STACK_DIR.name}-graceful", KAFKA_PORT + 300,
                     PG_PORT + 300) as env:
        yield {k: v for k, v in env.items() if k.startswith("HERALD_")}


@pytest.fixture
async def fakes(tmp_path: Path) -> AsyncIterator[tuple[Fakes, dict[str, str]]]:
    running = Fakes(tmp_path / "fakes")
    settings = await running.start()
    yield running, settings
    await running.stop()


@pytest.fixture
def env(graceful_stack: dict[str, str], fakes: tuple[Fakes, dict[str, str]], tmp_path: Path,
        unique: str) -> dict[str, str]:
    return {**os.environ, **graceful_stack, **fakes[1], "HERALD_APP_ID": f"herald-graceful-{unique}",
            "HERALD_DATA_DIR": str(tmp_path / "data"), "HERALD_LOG_LEVEL": "info",
            "HERALD_RATE_LIMITS": "default=100000/minute:defer", "HERALD_RETRY_DELAYS": "1,2,4",
            # Twilio carries the notification id in its status callback URL.
            "HERALD_PUBLIC_URL": "http://127.0.0.1:6066"}


@pytest.fixture
async def producer(graceful_stack: dict[str, str]) -> AsyncIterator[AIOKafkaProducer]:
    async with kafka_producer(graceful_stack["HERALD_KAFKA_BOOTSTRAP"]) as client:
        yield client


async def statuses(database_url: str, nids: list[str]) -> dict[tuple[str, str], dict[str, Any]]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT notification_id, channel, status, reason FROM deliveries"
                                " WHERE notification_id = ANY($1)", nids)
    finally:
        await conn.close()
    return {(r["notification_id"], r["channel"]): dict(r) for r in rows}


def sends(fakes: Fakes) -> Counter[str]:
    """How many messages the fakes got per notification id (any provider)."""
    return Counter(received_ids(name, message) for name, messages in fakes.received().items()
                   for message in messages)


async def all_final(database_url: str, pairs: set[tuple[str, str]]
                    ) -> dict[tuple[str, str], dict[str, Any]] | None:
    found = await statuses(database_url, sorted({nid for nid, _ in pairs}))
    done = all(found.get(pair, {}).get("status") in FINAL for pair in pairs)
    return found if done else None


@pytest.mark.timeout(300)
async def test_sigterm_lets_in_flight_deliveries_finish_and_commits(
        env, fakes, producer, tmp_path, unique):
    fake, _ = fakes
    worker = Worker({**env, "HERALD_WEB_PORT": str(free_port()), "HERALD_NODE_ID": "graceful-0"},
                    tmp_path / "worker.log")
    # The fakes answer on this event loop: the worker is waited for in a thread.
    await asyncio.to_thread(worker.start)
    try:
        # Given a user, and SendGrid taking 3 s to answer each email
        user = f"g-{unique}"
        await produce(producer, "user-updates", user, {**user_update(0), "user_id": user})
        fake.sendgrid.script.slow(3)
        nids = [f"g-{unique}-{i}" for i in range(3)]
        for nid in nids:
            await produce(producer, "notifications", user, {
                "id": nid, "user_id": user, "title": "Hello", "body": nid, "channels": ["email"]})

        # When the worker gets SIGTERM while the first email is at SendGrid
        await eventually(lambda: asyncio.sleep(0, fake.sendgrid.script.requests >= 1),
                         timeout=90, what="an email in flight")
        assert worker.process is not None
        worker.process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(worker.process.wait, 120)

        # Then it stopped cleanly after the in-flight email was accepted
        assert code == 0, worker.log_tail()
        before = sends(fake)
        assert before[nids[0]] == 1, before

        # And once a worker runs again, every email is sent exactly once, none left "unknown"
        fake.sendgrid.script.slow(0)
        await asyncio.to_thread(worker.start)
        found = await eventually(lambda: all_final(env["HERALD_DATABASE_URL"],
                                                   {(nid, "email") for nid in nids}),
                                 timeout=120, what="every email final")
        assert {pair: row["status"] for pair, row in found.items()} == {
            (nid, "email"): "SENT" for nid in nids}, found
        assert {nid: sends(fake)[nid] for nid in nids} == {nid: 1 for nid in nids}
    finally:
        await asyncio.to_thread(worker.stop)


@pytest.mark.timeout(480)
async def test_rolling_restart_of_a_two_worker_pool_sends_nothing_twice(
        env, fakes, producer, tmp_path, unique):
    fake, _ = fakes
    base = free_ports(2)
    pool = PoolProcess({**env, "HERALD_LOG_LEVEL": "warning"}, tmp_path / "pool.log", base)
    pool.start()

    async def ready(index: int) -> bool:
        assert pool.alive(), pool.log.read_text()[-3000:]
        return await asyncio.to_thread(pool.ready, index)
    try:
        await eventually(lambda: _both(ready), timeout=240, interval=1, what="both workers ready")
        # Given users with an email, a phone and a device, and providers that take a moment
        users = [f"r-{unique}-{i}" for i in range(12)]
        for i, user in enumerate(users):
            await produce(producer, "user-updates", user, {**user_update(i), "user_id": user})
        fake.twilio.script.slow(0.5)
        fake.sendgrid.script.slow(0.3)
        notifications = [{"id": f"r-{unique}-n{i}", "user_id": users[i % len(users)],
                          "title": "Rolling", "body": f"n{i}", "channels": ["email", "sms", "push"]}
                         for i in range(90)]

        async def traffic() -> None:
            for n in notifications:
                await produce(producer, "notifications", n["user_id"], n)
                await asyncio.sleep(0.3)
        producing = asyncio.create_task(traffic())

        def provider_calls() -> int:
            return fake.sendgrid.script.requests + fake.twilio.script.requests

        # When each worker in turn gets SIGTERM, with deliveries under way, and the
        # pool brings it back
        for index in (0, 1):
            seen = provider_calls()
            await eventually(lambda seen=seen: asyncio.sleep(0, provider_calls() >= seen + 5),
                             timeout=120, what="deliveries under way before the restart")
            old = pool.workers()[index]
            os.kill(old, signal.SIGTERM)

            async def back(index: int = index, old: int = old) -> bool:
                return pool.workers()[index] != old and await ready(index)
            await eventually(back, timeout=180, interval=1, what=f"worker {index} back")
        await producing

        # Then every (notification, channel) is sent, exactly once
        pairs = {(n["id"], c) for n in notifications for c in n["channels"]}
        found = await eventually(lambda: all_final(env["HERALD_DATABASE_URL"], pairs),
                                 timeout=180, interval=1, what="every delivery final")
        assert Counter(row["status"] for row in found.values()) == Counter({"SENT": len(pairs)}), \
            [row for row in found.values() if row["status"] != "SENT"][:10]
        per_pair = Counter((received_ids(name, m), channel) for name, channel in
                           (("sendgrid", "email"), ("smtp", "email"), ("twilio", "sms"),
                            ("apns", "push")) for m in fake.received()[name])
        assert {pair: per_pair[pair] for pair in pairs} == {pair: 1 for pair in pairs}, \
            json.dumps({f"{k}": v for k, v in per_pair.items() if v != 1})
        restarted = pool.log.read_text()
        assert "worker 0 exited with code 0" in restarted and "worker 1 exited with code 0" in restarted
    finally:
        pool.stop()


async def _both(ready: Any) -> bool:
    return bool(await ready(0) and await ready(1))
