"""Part 1 (and 5): how fast a backlog drains through herald, and through the references.

Every measurement drains a backlog that was produced before the processor
started, and is timed from the processor's own output records (Kafka
timestamps written by the processor): first output → last output. So the
producer never competes with the processor for the two cores, and start-up
(Faust boot, rebalance, table recovery) is not counted. herald is timed from
its first ``delivery-events`` record to its last SENT one.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench import kafka
from bench.processes import ROOT, Stack, Worker, cpu_seconds, free_port
from bench.report import rate, ratio
from bench.workload import Batch, User, changelog_records, encode
from tables.declarations import changelog_topic_name

DELIVERY_EVENTS = "delivery-events"
SENT, DEAD = b'"SENT"', b'"DEAD"'
PARTITIONS = 8
Echo = Callable[[str], None]


def preload(env: dict[str, str], worker: Worker, users: list[User]) -> dict[str, Any]:
    """Feed ``users`` through ``user-updates`` to a running worker; wait for its tables."""
    bootstrap = env["HERALD_KAFKA_BOOTSTRAP"]
    changelog = changelog_topic_name(env.get("HERALD_APP_ID", "herald"), "contacts")
    before = asyncio.run(kafka.end_offsets(bootstrap, [changelog]))
    records = [(u.user_id.encode(), encode(u.update)) for u in users]
    seconds = asyncio.run(kafka.produce_all(bootstrap, "user-updates", records))
    # Every user's row, not a count of rows: a pool's rebalance repeats some updates.
    asyncio.run(kafka.wait_for_keys(bootstrap, before, (key for key, _ in records),
                                    alive=worker.alive))
    return {"users": len(users), "produce_s": seconds,
            "changelog_format_matches": asyncio.run(_changelog_matches(bootstrap, changelog,
                                                                       users))}


async def _changelog_matches(bootstrap: str, changelog: str, users: list[User]) -> bool:
    """Whether the worker wrote a user's contacts exactly as the recovery part encodes them."""
    import json

    by_id = {u.user_id.encode(): u for u in users}
    consumer = AIOKafkaConsumer(changelog, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=5000, max_records=50)
        checked = [json.loads(r.value) == json.loads(changelog_records(by_id[r.key])
                                                     ["contacts"][1])
                   for records in batches.values() for r in records if r.key in by_id]
        return bool(checked) and all(checked)
    finally:
        await consumer.stop()


def herald_drain(env: dict[str, str], workdir: Path, users: list[User], batch: Batch, *,
                 workers: int | None = None, profile: Path | None = None) -> dict[str, Any]:
    """Preload users, stop the worker(s), produce the backlog, start again, time the drain."""
    bootstrap = env["HERALD_KAFKA_BOOTSTRAP"]
    name = f"workers-{workers}" if workers else "worker"
    worker = Worker(env, workdir / f"{name}.log", data_dir=workdir / f"{name}-data",
                    pool=workers).start()
    try:
        loaded = preload(env, worker, users)
    finally:
        worker.stop()
    start = asyncio.run(kafka.end_offsets(bootstrap, [DELIVERY_EVENTS]))
    produce_s = asyncio.run(kafka.produce_all(bootstrap, "notifications", batch.records))
    worker.start()
    spy = _profiler(worker.pid, profile) if profile else None
    try:
        asyncio.run(kafka.wait_for_count(bootstrap, [DELIVERY_EVENTS],
                                         sum(start.values()) + batch.events, alive=worker.alive))
        drained_s = time.monotonic() - worker.started
        cpu_s = cpu_seconds(worker.pid)
    finally:
        worker.stop()
        if spy:
            spy.wait(60)
    stop = asyncio.run(kafka.end_offsets(bootstrap, [DELIVERY_EVENTS]))
    tally = asyncio.run(kafka.read_range(bootstrap, start, stop, markers=(SENT, DEAD)))
    sent = tally.marked.get(SENT, 0)
    seconds = ((tally.last_marked_ms.get(SENT, 0) - (tally.first_ms or 0)) / 1000) if sent else None
    return {"notifications": len(batch.records), "expected_sent": batch.sent, "sent": sent,
            "dead": tally.marked.get(DEAD, 0), "events": tally.records,
            "expected_events": batch.events, "seconds": seconds,
            "per_second": rate(len(batch.records), seconds),
            "deliveries_per_second": rate(sent, seconds), "backlog_produce_s": produce_s,
            "start_to_drained_s": drained_s, "worker_cpu_s": cpu_s,
            "worker_cpu_percent": round(100 * cpu_s / drained_s, 1), "preload": loaded}


def _profiler(pid: int, output: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling ``pid`` until it exits, as collapsed stacks.

    Only the thread holding the GIL is sampled (``--gil``): the profile shows
    where the worker's Python CPU goes, not threads waiting in I/O. Blocking
    sampling (the default) reads consistent stacks; ``--nonblocking`` gave
    torn ones under load.
    """
    spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen([str(spy), "record", "--pid", str(pid), "--rate", "100", "--gil",
                             "--format", "raw", "--output", str(output)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _drain_seconds(bootstrap: str, topic: str, count: int) -> tuple[int, float | None]:
    stop = asyncio.run(kafka.end_offsets(bootstrap, [topic]))
    tally = asyncio.run(kafka.read_range(bootstrap, {}, stop))
    if not tally.records or tally.first_ms is None or tally.last_ms is None:
        return tally.records, None
    return tally.records, (tally.last_ms - tally.first_ms) / 1000


def faust_passthrough(bootstrap: str, workdir: Path, batch: Batch, run: str) -> dict[str, Any]:
    """The same backlog through a Faust agent that only forwards each record."""
    records, seconds = _faust_reference("passthrough", len(batch.records), bootstrap, workdir,
                                        batch, run)
    return {"records": records, "seconds": seconds, "per_second": rate(records, seconds)}


def faust_skeleton(bootstrap: str, workdir: Path, batch: Batch, run: str) -> dict[str, Any]:
    """The same backlog through herald's hops on Faust with no decisions (bench/skeleton.py)."""
    return _per_notification(*_faust_reference("skeleton", 2 * len(batch.records), bootstrap,
                                               workdir, batch, run))


def _faust_reference(module: str, expected: int, bootstrap: str, workdir: Path, batch: Batch,
                     run: str) -> tuple[int, float | None]:
    """Drain the backlog through the Faust app of ``bench.<module>`` until its sink holds
    ``expected`` records: the sink's record count and seconds from its first to its last."""
    source, middle, sink = (f"bench.{run}.{module}.{part}" for part in ("in", "mid", "out"))
    asyncio.run(kafka.create_topics(bootstrap, [source, middle, sink], PARTITIONS))
    asyncio.run(kafka.produce_all(bootstrap, source, batch.records))
    env = {**os.environ, "BENCH_BOOTSTRAP": bootstrap, "BENCH_SOURCE": source,
           "BENCH_MIDDLE": middle, "BENCH_SINK": sink, "BENCH_APP_ID": f"bench-{run}-{module}",
           "BENCH_WEB_PORT": str(free_port()),
           "BENCH_DATA_DIR": str(workdir / f"faust-{module}-data")}
    with open(workdir / f"faust-{module}.log", "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", f"bench.{module}"], cwd=ROOT,
                                   env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        asyncio.run(kafka.wait_for_count(bootstrap, [sink], expected,
                                         alive=lambda: process.poll() is None))
    finally:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return _drain_seconds(bootstrap, sink, expected)


def _per_notification(records: int, seconds: float | None) -> dict[str, Any]:
    """A skeleton's figures: it writes two status events (QUEUED, SENT) per notification."""
    return {"records": records, "notifications": records // 2, "seconds": seconds,
            "per_second": rate(records // 2, seconds)}


async def _loop(bootstrap: str, source: str, sink: str, count: int, group: str) -> None:
    consumer = AIOKafkaConsumer(source, bootstrap_servers=bootstrap, group_id=group,
                                auto_offset_reset="earliest")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await consumer.start()
    await producer.start()
    try:
        forwarded = 0
        while forwarded < count:
            batches = await consumer.getmany(timeout_ms=1000)
            sends = [await producer.send(sink, key=r.key, value=r.value)
                     for records in batches.values() for r in records]
            await asyncio.gather(*sends)
            forwarded += len(sends)
    finally:
        await producer.stop()
        await consumer.stop()


def aiokafka_loop(bootstrap: str, batch: Batch, run: str) -> dict[str, Any]:
    """The same backlog through a plain aiokafka consume → produce loop (in this process)."""
    source, sink = f"bench.{run}.aiokafka.in", f"bench.{run}.aiokafka.out"
    asyncio.run(kafka.create_topics(bootstrap, [source, sink], PARTITIONS))
    asyncio.run(kafka.produce_all(bootstrap, source, batch.records))
    asyncio.run(asyncio.wait_for(_loop(bootstrap, source, sink, len(batch.records),
                                       f"bench-{run}-aiokafka"), timeout=600))
    records, seconds = _drain_seconds(bootstrap, sink, len(batch.records))
    return {"records": records, "seconds": seconds, "per_second": rate(records, seconds)}


def aiokafka_skeleton(bootstrap: str, workdir: Path, batch: Batch, run: str) -> dict[str, Any]:
    """The same backlog through herald's hops with no decisions, off Faust (in this process)."""
    from bench import skeleton_aiokafka

    topics = {part: f"bench.{run}.plain-skeleton.{part}"
              for part in ("in", "mid", "out", "dedup-changelog", "sends-changelog")}
    asyncio.run(kafka.create_topics(bootstrap, topics.values(), PARTITIONS))
    asyncio.run(kafka.produce_all(bootstrap, topics["in"], batch.records))
    folder = workdir / "plain-skeleton-data"
    folder.mkdir(parents=True, exist_ok=True)
    expected = 2 * len(batch.records)
    asyncio.run(asyncio.wait_for(skeleton_aiokafka.run(bootstrap, topics, expected, folder,
                                                       f"bench-{run}-plain-skeleton"),
                                 timeout=600))
    return _per_notification(*_drain_seconds(bootstrap, topics["out"], expected))


def producer_performance(stack: Stack, workdir: Path, batch: Batch, run: str) -> dict[str, Any]:
    """Kafka's own ProducerPerformance with herald's payloads (acks=all): the broker's ceiling."""
    tools = _kafka_tools(stack)
    payloads = workdir / "payloads.txt"
    payloads.write_bytes(b"\n".join(value for _, value in batch.records[:10000]))
    topic = f"bench.{run}.perf"
    asyncio.run(kafka.create_topics(stack.bootstrap, [topic], PARTITIONS))
    result = subprocess.run(
        ["java", "-cp", f"{stack.libs}/*:{tools}", "org.apache.kafka.tools.ProducerPerformance",
         "--topic", topic, "--num-records", str(len(batch.records)), "--throughput", "-1",
         "--payload-file", str(payloads), "--producer-props",
         f"bootstrap.servers={stack.bootstrap}", "acks=all"],
        capture_output=True, text=True, timeout=900)
    summary = [line for line in result.stdout.splitlines() if "records sent" in line]
    if result.returncode != 0 or not summary:
        return {"error": f"ProducerPerformance failed: {result.stderr[-500:]}"}
    fields = summary[-1].split(",")
    return {"records": int(fields[0].split()[0]),
            "per_second": float(fields[1].split()[0]), "summary": summary[-1].strip()}


def _kafka_tools(stack: Stack) -> Path:
    """The kafka-tools jar (not in the broker's runtime classpath), resolved with mvn once."""
    folder = stack.root / "tools"
    jar = folder / "kafka-tools.jar"
    if not jar.exists():
        from app.devstack import KAFKA_VERSION

        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mvn", "-q", "-B", "dependency:copy",
                        f"-Dartifact=org.apache.kafka:kafka-tools:{KAFKA_VERSION}",
                        f"-DoutputDirectory={folder}", "-Dmdep.stripVersion=true"],
                       check=True, capture_output=True, timeout=600)
    return jar


def run(stack: Stack, workdir: Path, users: list[User], batch: Batch, run_id: str,
        echo: Echo, profile: Path | None = None, references: bool = True) -> dict[str, Any]:
    """The whole throughput part: herald, then the five references over the same records.

    ``references=False`` measures herald alone (iterating on an optimisation).
    """
    env = stack.fresh()
    result: dict[str, Any] = {"record_bytes": batch.mean_size, "users": len(users)}
    echo(f"throughput: herald, {len(batch.records):,} notifications, {len(users):,} users")
    result["herald"] = herald_drain(env, workdir, users, batch, profile=profile)
    echo(f"  herald {result['herald']['per_second'] or 0:,.0f}/s")
    if not references:
        return result
    for name, measure in (
        ("aiokafka", lambda: aiokafka_loop(stack.bootstrap, batch, run_id)),
        ("faust", lambda: faust_passthrough(stack.bootstrap, workdir, batch, run_id)),
        ("faust_skeleton", lambda: faust_skeleton(stack.bootstrap, workdir, batch, run_id)),
        ("aiokafka_skeleton", lambda: aiokafka_skeleton(stack.bootstrap, workdir, batch,
                                                        run_id)),
        ("producer_perf", lambda: producer_performance(stack, workdir, batch, run_id)),
    ):
        try:
            result[name] = measure()
        except Exception as exc:  # noqa: BLE001 - one failed reference must not lose the run
            result[name] = {"error": f"{type(exc).__name__}: {exc}"}
        echo(f"  {name} {result[name].get('per_second') or 0:,.0f}/s")
    herald_rate = result["herald"]["per_second"]
    result["herald_vs_faust"] = ratio(herald_rate, result["faust"].get("per_second"))
    result["herald_vs_aiokafka"] = ratio(herald_rate, result["aiokafka"].get("per_second"))
    result["skeleton_vs_faust"] = ratio(result["faust_skeleton"].get("per_second"),
                                        result["faust"].get("per_second"))
    result["plain_skeleton_vs_faust"] = ratio(result["aiokafka_skeleton"].get("per_second"),
                                              result["faust"].get("per_second"))
    return result
