"""Operations commands against the real stack: pool, tables get, offsets reset."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from tests.integration.conftest import (
    KAFKA_PORT,
    PG_PORT,
    ROOT,
    STACK_DIR,
    eventually,
    free_port,
    fresh_stack,
    Worker,
    herald_command,
    kafka_producer,
    produce,
    read_matching,
)


@pytest.fixture(scope="module")
def pool_stack_env():
    """A stack of the pool test's own: a new consumer group on the shared stack would
    start by consuming every earlier test's backlog, which says nothing about the pool."""
    with fresh_stack(STACK_DIR.parent / f"{STACK_DIR.name}-pool", KAFKA_PORT + 100,
                     PG_PORT + 100) as env:
        yield env


pytestmark = pytest.mark.integration

STARTED = re.compile(r"worker (\d+) started \(pid (\d+), port (\d+)\)")


def herald(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(herald_command(*args), cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def consecutive_free_ports(count: int) -> int:
    """A base port such that ``base .. base+count-1`` are free right now."""
    import socket

    def free(port: int) -> bool:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
            return True

    for _ in range(50):
        base = free_port()
        if base + count - 1 <= 65535 and all(free(p) for p in range(base + 1, base + count)):
            return base
    raise AssertionError("no run of free ports")


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=3) as response:
            return response.status == 200
    except (OSError, ValueError):
        return False


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie awaiting its parent's wait() is gone for every practical purpose.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def started_workers(log: Path) -> list[tuple[int, int, int]]:
    """(index, pid, port) of every "worker i started" line so far."""
    text = log.read_text(errors="replace") if log.exists() else ""
    return [(int(i), int(pid), int(port)) for i, pid, port in STARTED.findall(text)]


@pytest.mark.timeout(480)
async def test_the_pool_restarts_a_killed_worker_and_stops_all_on_sigterm(pool_stack_env,
                                                                          tmp_path, unique):
    # Given a pool of two workers in a consumer group of its own
    base = consecutive_free_ports(2)
    env = {**pool_stack_env, "HERALD_APP_ID": f"herald-pool-{unique}",
           "HERALD_DATA_DIR": str(tmp_path / "data"), "HERALD_LOG_LEVEL": "warning"}
    log = tmp_path / "pool.log"
    with open(log, "ab") as out:  # the child keeps its own descriptor
        pool = subprocess.Popen(herald_command("pool", "-n", "2", "--base-port", str(base)),
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    seen: set[int] = set()
    try:
        async def both_ready():
            assert pool.poll() is None, f"pool exited:\n{log.read_text()[-3000:]}"
            return ready(base) and ready(base + 1)
        await eventually(both_ready, timeout=180, interval=0.5, what="both workers ready")
        started = started_workers(log)
        seen.update(pid for _, pid, _ in started)
        assert sorted((i, port) for i, _, port in started) == [(0, base), (1, base + 1)]
        victim = next(pid for i, pid, _ in started if i == 0)

        # When worker 0 is killed as a crash would
        os.kill(victim, signal.SIGKILL)

        # Then the pool starts it again and it becomes ready on its port
        async def restarted():
            again = [pid for i, pid, _ in started_workers(log) if i == 0 and pid != victim]
            return again if again and ready(base) else None
        seen.update(await eventually(restarted, timeout=180, interval=0.5,
                                     what="worker 0 restarted and ready"))
        text = log.read_text(errors="replace")
        assert "worker 0 killed by SIGKILL; restarting in" in text

        # And SIGTERM stops the pool and every worker, exiting 0
        pool.send_signal(signal.SIGTERM)
        assert pool.wait(timeout=90) == 0, log.read_text()[-3000:]
        seen.update(pid for _, pid, _ in started_workers(log))

        async def all_gone():
            return not any(alive(pid) for pid in seen)
        await eventually(all_gone, timeout=10, what="no worker process left")
        assert "pool stopped" in log.read_text(errors="replace")
    finally:
        if pool.poll() is None:
            pool.kill()
            pool.wait()
        seen.update(pid for _, pid, _ in started_workers(log))
        for pid in seen:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


async def test_tables_get_prints_a_users_contacts_and_fails_on_an_unknown_key(
        worker, worker_env, producer, unique):
    # Given a user's contact details went through the worker
    user = f"u-{unique}"
    address = f"{user}@example.org"
    await produce(producer, "user-updates", user, {"user_id": user, "email": address})

    # When an operator asks any worker for the key
    async def found():
        result = herald("tables", "get", "contacts", user, "--url", worker.url, env=worker_env)
        return result if result.returncode == 0 else None
    result = await eventually(found, timeout=60, interval=0.5, what="the contacts key")

    # Then the value is printed as JSON
    assert json.loads(result.stdout)["email"] == address
    # And an unknown key is one line on stderr and exit 1
    missing = herald("tables", "get", "contacts", f"nobody-{unique}", "--url", worker.url,
                     env=worker_env)
    assert missing.returncode == 1
    assert f"no key 'nobody-{unique}' in table 'contacts'" in missing.stderr
    # And a URL where no worker listens is named
    gone = f"http://127.0.0.1:{free_port()}"
    unreachable = herald("tables", "get", "contacts", user, "--url", gone, env=worker_env)
    assert unreachable.returncode == 1 and f"no worker answers at {gone}" in unreachable.stderr


async def test_offsets_reset_moves_an_idle_group_to_a_time_and_refuses_a_running_one(
        worker, worker_env, producer, unique):
    # Given three records on one partition, a second apart, and a group with no members
    group = f"herald-offsets-{unique}"
    key = f"u-{unique}".encode()
    t0 = int(time.time() * 1000)
    metadata = [await producer.send_and_wait("notifications", key=key, value=b"{}",
                                             timestamp_ms=t0 + 1000 * i) for i in range(3)]
    tp = TopicPartition("notifications", metadata[0].partition)
    second = metadata[1].offset
    before_second = datetime.fromtimestamp((t0 + 500) / 1000, timezone.utc).isoformat()
    env = {**worker_env, "HERALD_APP_ID": group}

    # When a dry run, then a reset to a time between the first and second record, runs
    dry = herald("offsets", "reset", "--to-time", before_second, "--topic", "notifications",
                 "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert f"notifications[{tp.partition}]: none -> {second}" in dry.stdout
    done = herald("offsets", "reset", "--to-time", before_second, "--topic", "notifications",
                  env=env)
    assert done.returncode == 0, done.stderr
    assert f"of the hot path's group {group}-hotpath" in done.stdout

    # Then the group's committed offset on that partition is the second record's
    consumer = AIOKafkaConsumer(bootstrap_servers=worker_env["HERALD_KAFKA_BOOTSTRAP"],
                                group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        assert await consumer.committed(tp) == second
    finally:
        await consumer.stop()
    # And so is the hot path's group (agents/hotpath.py), which reads notifications
    hot = AIOKafkaConsumer(bootstrap_servers=worker_env["HERALD_KAFKA_BOOTSTRAP"],
                           group_id=f"{group}-hotpath", enable_auto_commit=False)
    await hot.start()
    try:
        assert await hot.committed(tp) == second
    finally:
        await hot.stop()

    # And the running worker's group is refused
    refused = herald("offsets", "reset", "--to-time", before_second, "--topic", "notifications",
                     env=worker_env)
    assert refused.returncode == 1
    assert "workers are running in group herald" in refused.stderr
    # And a time that is not one exits 2
    bad = herald("offsets", "reset", "--to-time", "yesterday", env=env)
    assert bad.returncode == 2 and "not an ISO-8601 time" in bad.stderr


@pytest.mark.timeout(420)
async def test_switching_to_the_aiokafka_hot_path_neither_skips_nor_repeats(pool_stack_env,
                                                                            tmp_path, unique):
    # Given a worker whose Faust agents read the hot topics (HERALD_HOT_PATH=faust)
    env = {**pool_stack_env, "HERALD_APP_ID": f"herald-switch-{unique}",
           "HERALD_DATA_DIR": str(tmp_path / "data"), "HERALD_WEB_PORT": str(free_port()),
           "HERALD_LOG_LEVEL": "info"}
    bootstrap = env["HERALD_KAFKA_BOOTSTRAP"]
    user = f"u-switch-{unique}"
    worker = Worker({**env, "HERALD_HOT_PATH": "faust"}, tmp_path / "worker.log")

    def notification(name: str) -> dict[str, object]:
        return {"id": f"{name}-{unique}", "user_id": user, "title": name, "body": name,
                "channels": ["inapp"]}

    async def sent(name: str, wanted: int = 1, timeout: float = 90) -> list[dict[str, object]]:
        return await read_matching(bootstrap, "delivery-events",
                                   lambda e: e.get("notification_id") == f"{name}-{unique}"
                                   and e.get("status") == "SENT", wanted=wanted, timeout=timeout)

    worker.start()
    try:
        async with kafka_producer(bootstrap) as client:
            await produce(client, "notifications", user, notification("before"))
            assert len(await sent("before")) == 1, worker.log_tail()
            # When it stops (committing), a notification arrives, and it starts again with
            # the default hot path: plain aiokafka loops in a group that never committed
            worker.stop()
            await produce(client, "notifications", user, notification("after"))
        worker.env = env
        worker.start()

        # Then the one that arrived while it was down is sent
        assert len(await sent("after")) == 1, worker.log_tail()
        # And the one sent before is not handled again: it sits before "after" on the same
        # partitions of every hop, so a re-read would have emitted its SENT event again by now
        assert len(await sent("before", wanted=2, timeout=3)) == 1
        assert "hot path" in worker.log_path.read_text(errors="replace")
    finally:
        worker.stop()
