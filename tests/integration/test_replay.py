"""herald replay: a range of a topic lands again, exactly."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from app.admin import partitions_of
from tests.integration.conftest import ROOT

pytestmark = pytest.mark.integration


def herald(env, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


async def records_of(bootstrap: str, topic: str, expected: int) -> list:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in await partitions_of(bootstrap, topic)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        found: list = []
        for _ in range(20):
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                found.extend(batch)
            if len(found) >= expected:
                break
        return found
    finally:
        await consumer.stop()


async def test_replay_of_an_offset_range_lands_exactly_those_records(
        worker_env, producer, unique):
    # Given five notifications for one user (one partition)
    user = f"u-{unique}"
    sent = []
    for i in range(5):
        meta = await producer.send_and_wait("notifications", key=user.encode(), value=json.dumps(
            {"id": f"n{i}-{unique}", "user_id": user, "title": f"#{i}", "channels": ["inapp"]}
        ).encode())
        sent.append(meta)
    partition = sent[0].partition
    scratch = f"replay-{unique}"
    bootstrap = worker_env["HERALD_KAFKA_BOOTSTRAP"]
    args = ["replay", "--topic", "notifications", "--partition", str(partition),
            "--from-offset", str(sent[1].offset), "--to-offset", str(sent[4].offset),
            "--into", scratch]
    # When a dry run is asked first, it counts and produces nothing
    dry = herald(worker_env, *args, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "3 records" in dry.stdout
    # And the real replay of [1, 4) lands records 1, 2 and 3, keys and values intact
    done = herald(worker_env, *args)
    assert done.returncode == 0, done.stderr
    assert "replayed 3" in done.stdout
    landed = await records_of(bootstrap, scratch, 3)
    assert [json.loads(r.value)["id"] for r in landed] == [f"n{i}-{unique}" for i in (1, 2, 3)]
    assert all(r.key == user.encode() for r in landed)
    assert dict(landed[0].headers)["herald-replayed-from"] == \
        f"notifications:{partition}:{sent[1].offset}".encode()


async def test_force_new_ids_strips_ids_for_a_deliberate_resend(worker_env, producer, unique):
    user = f"u-{unique}"
    meta = await producer.send_and_wait("notifications", key=user.encode(), value=json.dumps(
        {"id": f"n-{unique}", "idempotency_key": "k", "user_id": user, "title": "again"}).encode())
    scratch = f"resend-{unique}"
    done = herald(worker_env, "replay", "--topic", "notifications", "--partition",
                  str(meta.partition), "--from-offset", str(meta.offset), "--to-offset",
                  str(meta.offset + 1), "--into", scratch, "--force-new-ids")
    assert done.returncode == 0, done.stderr
    (landed,) = await records_of(worker_env["HERALD_KAFKA_BOOTSTRAP"], scratch, 1)
    assert json.loads(landed.value) == {"user_id": user, "title": "again"}


def test_bad_arguments_exit_2_with_one_line(worker_env):
    result = herald(worker_env, "replay", "--topic", "notifications")
    assert result.returncode == 2
    assert "--from-offset or --from-time" in result.stderr
