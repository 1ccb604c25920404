"""Chaos run: notifications through a two-worker pool while the harness breaks things.

``python -m bench.chaos --notifications 100000`` (or ``--small``) starts a
stack of its own (``herald dev up --fresh``), the SendGrid, SMTP, Twilio and
APNs fakes in this process (the workers' real provider SDKs talk to them),
preloads users through ``user-updates`` and runs ``herald pool -n 2``. It
then produces the notifications evenly over a window while it injects:

- SIGKILL of a pool worker, three times at random moments (the pool restarts it);
- one Kafka broker restart;
- SendGrid answering 503 for a while (email fails over to SMTP);
- Twilio not answering within the provider timeout for a while;
- PostgreSQL stopped for a while.

Once the app's consumer group has no lag and every (notification, channel)
has a final status, it reconciles three sources: what was produced, what
the fakes (and the in-app frames topic) received, and PostgreSQL's
``deliveries`` plus the DLQ. The report (JSON in ``bench/results/`` and a
Markdown summary) gives the share of notifications accounted for
(delivered, suppressed, or dead-lettered with a reason), duplicate sends
per (notification, channel) at the providers, and the time to drain after
the last fault.

How each provider carries herald's notification id: SendGrid
``custom_args.herald_notification_id``, SMTP header
``X-Herald-Notification-Id``, APNs payload ``herald.notification_id``,
Twilio the ``StatusCallback`` URL (``HERALD_PUBLIC_URL`` set), in-app the
frame's ``id`` on ``gateway.frames``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Mapping, Sequence
from urllib.parse import parse_qs, urlsplit

from agents.recorder import group_id as recorder_group
from app.topics import DELIVERY_EVENTS
from testing.polling import eventually

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
CHANNELS = ("push", "email", "sms", "inapp")
#: Final statuses: a (notification, channel) with one of these is accounted for.
DELIVERED = frozenset({"SENT", "DELIVERED", "READ"})
GIVEN_UP = frozenset({"SUPPRESSED", "DEAD", "FAILED"})
#: The provider call timeout (providers.base.Provider); the "timing out" fault answers later.
PROVIDER_TIMEOUT_SECONDS = 10.0
#: Topics the workers write to all the time (the housekeeping tick): never without lag.
ALWAYS_BUSY = frozenset({"herald.ticks"})
STARTED = re.compile(r"worker (\d+) started \(pid (\d+), port (\d+)\)")

Echo = Callable[[str], None]


@dataclass(frozen=True)
class Scale:
    """How big a run is and how long its faults last (seconds)."""

    name: str
    notifications: int
    users: int
    #: Notifications are produced evenly over this window; every fault starts inside it.
    window: float
    outage: float
    slow: float
    pg_down: float
    drain_deadline: float
    retry_delays: str


SCALES = {
    "full": Scale("full", 100_000, 2_000, window=300, outage=60, slow=60, pg_down=30,
                  drain_deadline=1800, retry_delays="2,5,15,30,60"),
    "small": Scale("small", 300, 40, window=60, outage=10, slow=12, pg_down=8,
                   drain_deadline=150, retry_delays="1,2,4,8,15"),
}


@dataclass(frozen=True)
class Fault:
    """One fault: when it starts (seconds into the window), what, for how long, on whom."""

    at: float
    kind: str
    duration: float = 0.0
    target: int | None = None


def plan_faults(scale: Scale, rng: random.Random, workers: int = 2) -> list[Fault]:
    """The faults of a run, in time order.

    Each SIGKILL falls at a random moment of its own third of the window, so
    the restarted worker is back before the next one; the other faults start
    at fixed points so that they overlap the kills but not each other.
    """
    w = scale.window
    kills = [Fault(rng.uniform((0.05 + i * 0.3) * w, (0.3 + i * 0.3) * w), "worker_sigkill",
                   target=rng.randrange(workers)) for i in range(3)]
    others = [Fault(0.10 * w, "sendgrid_503", scale.outage),
              Fault(0.30 * w, "twilio_timeout", scale.slow),
              Fault(0.55 * w, "kafka_restart"),
              Fault(0.75 * w, "postgres_stop", scale.pg_down)]
    return sorted(kills + others, key=lambda fault: fault.at)


def make_notifications(count: int, users: int, rng: random.Random) -> list[dict[str, Any]]:
    """``count`` notifications over ``users`` users, each on a random non-empty set of channels."""
    made = []
    for i in range(count):
        channels = [c for c in CHANNELS if rng.random() < 0.5] or [rng.choice(CHANNELS)]
        made.append({"id": f"chaos-{i:06d}", "user_id": f"cu-{rng.randrange(users):05d}",
                     "category": "chaos", "priority": "high" if rng.random() < 0.1 else "normal",
                     "title": f"Chaos {i}", "body": f"Notification {i} of the chaos run",
                     "channels": channels})
    return made


def user_update(index: int) -> dict[str, Any]:
    """The contacts of chaos user ``index``: email, phone and one APNs token."""
    return {"user_id": f"cu-{index:05d}", "email": f"cu-{index:05d}@example.org",
            "phone": f"+1555{index:07d}",
            "push_tokens": [{"token": f"{index:064x}", "platform": "apns"}]}


# -- reconciliation (pure) ----------------------------------------------------


def received_ids(provider: str, message: Mapping[str, Any]) -> str | None:
    """The notification id a fake's recorded message carries, by provider."""
    if provider == "sendgrid":
        return message.get("custom_args", {}).get("herald_notification_id")
    if provider == "smtp":
        return message.get("headers", {}).get("X-Herald-Notification-Id")
    if provider == "apns":
        return message.get("payload", {}).get("herald", {}).get("notification_id")
    if provider == "twilio":
        callback = message.get("form", {}).get("StatusCallback")
        return parse_qs(urlsplit(callback).query).get("notification_id", [None])[0] \
            if callback else None
    if provider == "gateway":
        return message.get("id")
    raise ValueError(f"unknown provider {provider!r}")


PROVIDER_CHANNEL = {"sendgrid": "email", "smtp": "email", "apns": "push", "twilio": "sms",
                    "gateway": "inapp"}


def reconcile(produced: Sequence[Mapping[str, Any]],
              rows: Iterable[Mapping[str, Any]],
              received: Mapping[str, Iterable[Mapping[str, Any]]],
              dead_letters: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Compare what was produced, what PostgreSQL says and what the providers got.

    ``rows`` are ``deliveries`` rows (notification_id, channel, status, reason);
    ``received`` maps a provider name to its recorded messages; ``dead_letters``
    are ``deliveries.dlq`` records. A (notification, channel) is accounted
    for when it is delivered (a delivered status and a message at a provider),
    suppressed with a reason, or dead with a reason and a DLQ record; a
    notification when all its channels are.
    """
    wanted = {n["id"]: set(n["channels"]) for n in produced}
    status = {(r["notification_id"], r["channel"]): r for r in rows if r["notification_id"] in wanted}
    sends: Counter[tuple[str, str]] = Counter()
    per_provider: Counter[str] = Counter()
    unidentified = 0
    for provider, messages in received.items():
        for message in messages:
            nid = received_ids(provider, message)
            per_provider[provider] += 1
            if nid is None:
                unidentified += 1
            else:
                sends[nid, PROVIDER_CHANNEL[provider]] += 1
    dead = Counter()
    dlq_reasons: Counter[str] = Counter()
    for letter in dead_letters:
        dlq_reasons[letter.get("reason") or "(none)"] += 1
        delivery = letter.get("delivery") or {}
        if delivery.get("notification_id"):
            dead[delivery["notification_id"], delivery.get("channel")] += 1

    outcome: Counter[str] = Counter()
    problems: dict[str, list[list[str]]] = {"missing": [], "not_final": [], "sent_not_received": [],
                                            "dead_without_reason": [], "dead_not_in_dlq": []}
    unaccounted: set[str] = set()
    unknown_but_received = 0
    for nid, channels in wanted.items():
        whole = status.get((nid, "*"))
        for channel in sorted(channels):
            row = whole if whole is not None and whole["status"] == "SUPPRESSED" \
                else status.get((nid, channel))
            problem = None
            if row is None:
                problem = "missing"
            elif row["status"] in DELIVERED:
                problem = None if sends[nid, channel] else "sent_not_received"
            elif row["status"] in GIVEN_UP:
                if not row.get("reason"):
                    problem = "dead_without_reason"
                elif row["status"] == "DEAD" and not dead[nid, channel]:
                    problem = "dead_not_in_dlq"
                elif row["reason"] == "outcome unknown" and sends[nid, channel]:
                    unknown_but_received += 1
            else:
                problem = "not_final"
            outcome[row["status"] if row is not None else "(no row)"] += 1
            if problem:
                problems[problem].append([nid, channel, row["status"] if row else ""])
                unaccounted.add(nid)
    duplicates = sorted([nid, channel, count] for (nid, channel), count in sends.items()
                        if count > 1)
    stray = sorted(f"{nid}/{channel}" for nid, channel in sends
                   if nid not in wanted or channel not in wanted[nid])
    pairs = sum(len(c) for c in wanted.values())
    return {
        "notifications": len(wanted),
        "pairs": pairs,
        "accounted": len(wanted) - len(unaccounted),
        "accounted_pct": round(100.0 * (len(wanted) - len(unaccounted)) / max(len(wanted), 1), 4),
        "duplicate_sends": sum(count - 1 for _, _, count in duplicates),
        "duplicates": duplicates[:50],
        "statuses": dict(sorted(outcome.items())),
        "dlq_reasons": dict(sorted(dlq_reasons.items())),
        "received_per_provider": dict(sorted(per_provider.items())),
        "unidentified_messages": unidentified,
        "stray_sends": stray[:50],
        "outcome_unknown_but_received": unknown_but_received,
        "problems": {name: {"count": len(found), "first": found[:20]}
                     for name, found in problems.items()},
    }


def markdown(report: Mapping[str, Any]) -> str:
    """A human summary of a chaos report."""
    r = report["reconciliation"]
    lines = [
        f"## Chaos run ({report['scale']['name']}, {report['scale']['notifications']:,} "
        f"notifications, {report['guarantee']})",
        "",
        f"- accounted for: **{r['accounted_pct']} %** ({r['accounted']:,} of {r['notifications']:,};"
        f" {r['pairs']:,} notification-channel pairs)",
        f"- duplicate sends at the providers: **{r['duplicate_sends']}**",
        f"- drained {report['drain_after_last_fault_seconds']} s after the last fault "
        f"({'within' if report['drained'] else 'NOT within'} the deadline); "
        f"{report['throughput_per_second']} notifications/s from the first produced to drained",
        "",
        "| fault | at (s) | lasted (s) | detail |",
        "| --- | ---: | ---: | --- |",
    ]
    for event in report["faults"]:
        lines.append(f"| {event['kind']} | {event['at']:.1f} | {event['lasted']:.1f} | "
                     f"{event.get('detail', '')} |")
    lines += ["", "| final status | pairs |", "| --- | ---: |"]
    lines += [f"| {status} | {count:,} |" for status, count in r["statuses"].items()]
    lines += ["", "| DLQ reason | records |", "| --- | ---: |"]
    lines += [f"| {reason} | {count:,} |" for reason, count in r["dlq_reasons"].items()]
    lines += ["", "| provider | messages |", "| --- | ---: |"]
    lines += [f"| {name} | {count:,} |" for name, count in r["received_per_provider"].items()]
    bad = {name: p for name, p in r["problems"].items() if p["count"]}
    if bad or r["duplicate_sends"]:
        lines += ["", "Problems: " + json.dumps({**bad, "duplicates": r["duplicates"][:10]})]
    return "\n".join(lines)


# -- the run ------------------------------------------------------------------


@dataclass
class Config:
    """Where and how a chaos run happens."""

    scale: Scale
    directory: Path
    kafka_port: int
    pg_port: int
    guarantee: str = "at_least_once"
    faults: bool = True
    seed: int = 0
    keep: bool = False
    results_dir: Path | None = RESULTS_DIR
    echo: Echo = field(default=lambda line: print(line, flush=True))


def herald_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "app.cli", *args]


def stack_args(config: Config) -> list[str]:
    return ["--dir", str(config.directory), "--kafka-port", str(config.kafka_port),
            "--pg-port", str(config.pg_port)]


async def run_quiet(cmd: list[str], timeout: float = 600) -> str:
    """Run ``cmd`` from the repository root; its output, or an error with it."""
    process = await asyncio.create_subprocess_exec(*cmd, cwd=ROOT, stdout=subprocess.PIPE,
                                                   stderr=subprocess.STDOUT)
    out, _ = await asyncio.wait_for(process.communicate(), timeout)
    text = out.decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({process.returncode}):\n{text[-3000:]}")
    return text


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = value.strip("'")
    return env


def free_ports(count: int) -> int:
    """A base port with ``count`` free ports from it."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count > 65535:
            continue
        try:
            for port in range(base, base + count):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return int(base)
    raise RuntimeError("no run of free ports")


class Fakes:
    """The provider fakes, served by this process, and the settings pointing at them."""

    def __init__(self, folder: Path) -> None:
        from testing.fakes.apns import FakeAPNs
        from testing.fakes.sendgrid import FakeSendGrid
        from testing.fakes.smtp import FakeSmtp
        from testing.fakes.twilio import FakeTwilio

        self.folder = folder
        self.sendgrid = FakeSendGrid(api_key="SG.chaos")
        self.twilio = FakeTwilio(auth_token="chaos-token")
        self.smtp = FakeSmtp()
        self.apns = FakeAPNs()

    @property
    def all(self) -> dict[str, Any]:
        return {"sendgrid": self.sendgrid, "smtp": self.smtp, "apns": self.apns,
                "twilio": self.twilio}

    async def start(self) -> dict[str, str]:
        from testing.fakes.apns import DEFAULT_KEY_ID, DEFAULT_TEAM_ID, DEFAULT_TOPIC
        from testing.fakes.twilio import DEFAULT_ACCOUNT_SID

        self.folder.mkdir(parents=True, exist_ok=True)
        for fake in self.all.values():
            await fake.start()
        key = self.apns.write_key(self.folder / "apns-key.p8")
        ca = self.apns.write_ca(self.folder / "apns-ca.pem")
        return {
            "HERALD_CHANNELS": "push=apns;email=sendgrid>smtp;sms=twilio;inapp=gateway",
            "HERALD_EMAIL_FROM": "herald@example.org", "HERALD_SMS_FROM": "+15005550006",
            "HERALD_SENDGRID_API_KEY": "SG.chaos", "HERALD_SENDGRID_BASE_URL": self.sendgrid.url,
            "HERALD_TWILIO_ACCOUNT_SID": DEFAULT_ACCOUNT_SID,
            "HERALD_TWILIO_AUTH_TOKEN": "chaos-token", "HERALD_TWILIO_BASE_URL": self.twilio.url,
            "HERALD_SMTP_HOST": "127.0.0.1", "HERALD_SMTP_PORT": str(self.smtp.port),
            "HERALD_SMTP_STARTTLS": "false",
            "HERALD_APNS_BASE_URL": self.apns.url, "HERALD_APNS_KEY": str(key),
            "HERALD_APNS_CA_FILE": str(ca), "HERALD_APNS_KEY_ID": DEFAULT_KEY_ID,
            "HERALD_APNS_TEAM_ID": DEFAULT_TEAM_ID, "HERALD_APNS_TOPIC": DEFAULT_TOPIC,
        }

    def received(self) -> dict[str, list[dict[str, Any]]]:
        return {name: fake.received for name, fake in self.all.items()}

    async def stop(self) -> None:
        for fake in self.all.values():
            await fake.stop()


class PoolProcess:
    """``herald pool -n 2`` in a process of its own, and the worker pids it reports."""

    def __init__(self, env: dict[str, str], log: Path, base_port: int, size: int = 2) -> None:
        self.env, self.log, self.base_port, self.size = env, log, base_port, size
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "wb") as out:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                herald_command("pool", "-n", str(self.size), "--base-port", str(self.base_port)),
                cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)

    def workers(self) -> dict[int, int]:
        """The latest pid of each worker index, from the pool's own log."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return {int(i): int(pid) for i, pid, _ in STARTED.findall(text)}

    def ready(self, index: int) -> bool:
        try:
            url = f"http://127.0.0.1:{self.base_port + index}/readyz"
            with urllib.request.urlopen(url, timeout=3) as response:
                return bool(response.status == 200)
        except (OSError, ValueError):
            return False

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 120) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


async def group_lag(bootstrap: str, group: str, per_partition_allowance: int = 0,
                    topic: str | None = None) -> int | None:
    """Records the consumer group has not committed yet (``None`` if Kafka does not answer).

    With ``topic``, every partition of that topic counts, those the group
    never committed from their first record.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await admin.start()
        await consumer.start()
        committed = {tp: meta.offset for tp, meta in
                     (await admin.list_consumer_group_offsets(group)).items() if meta.offset >= 0}
        if topic is not None:
            described = await admin.describe_topics([topic])
            partitions = [TopicPartition(topic, p["partition"])
                          for d in described for p in d["partitions"]]
            starts = await consumer.beginning_offsets(partitions) if partitions else {}
            committed = {tp: committed.get(tp, starts[tp]) for tp in partitions}
        if not committed:
            return None
        ends = await consumer.end_offsets(list(committed))
        return sum(max(0, ends[tp] - offset - per_partition_allowance)
                   for tp, offset in committed.items() if tp.topic not in ALWAYS_BUSY)
    except Exception:  # noqa: BLE001 - the broker is restarting: ask again later
        return None
    finally:
        await consumer.stop()
        await admin.close()


async def read_topic(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Every committed JSON record of ``topic``, from the beginning to its current end."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from app.admin import rewind

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                isolation_level="read_committed")
    await consumer.start()
    try:
        metadata = await consumer._client.fetch_all_metadata()
        parts = [TopicPartition(topic, p) for p in sorted(metadata.partitions_for_topic(topic) or ())]
        if not parts:
            return []
        consumer.assign(parts)
        await rewind(consumer, parts)
        ends = await consumer.end_offsets(parts)
        records: list[dict[str, Any]] = []
        while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for batch in batches.values():
                records.extend(json.loads(record.value) for record in batch if record.value)
        return records
    finally:
        await consumer.stop()


async def produce(bootstrap: str, topic: str, items: Sequence[tuple[str, dict[str, Any]]],
                  window: float) -> dict[str, Any]:
    """Produce ``items`` (key, value) evenly over ``window`` seconds, each until acked."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                                linger_ms=5, request_timeout_ms=120_000)
    await producer.start()
    resent = 0
    started = time.monotonic()
    try:
        pending = []
        for i, (key, value) in enumerate(items):
            ahead = started + window * i / max(len(items), 1) - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
            pending.append((key, value, await producer.send(
                topic, json.dumps(value).encode(), key=key.encode())))
        for key, value, future in pending:
            while True:
                try:
                    await future
                    break
                except KafkaError:
                    resent += 1
                    future = await producer.send(topic, json.dumps(value).encode(), key=key.encode())
    finally:
        await producer.stop()
    return {"seconds": round(time.monotonic() - started, 1), "resent": resent}


async def deliveries_rows(database_url: str) -> list[dict[str, Any]]:
    import asyncpg

    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        found = await conn.fetch("SELECT notification_id, channel, status, reason FROM deliveries")
        return [dict(row) for row in found]
    finally:
        await conn.close()


async def final_pairs(database_url: str) -> int | None:
    """How many (notification, channel) rows have a final status (``None`` if PostgreSQL is away)."""
    import asyncpg

    try:
        conn = await asyncpg.connect(database_url, timeout=5)
    except Exception:  # noqa: BLE001 - PostgreSQL is being restarted
        return None
    try:
        return int(await conn.fetchval(
            "SELECT count(*) FROM deliveries WHERE channel <> '*' AND status = ANY($1)",
            sorted(DELIVERED | GIVEN_UP)))
    finally:
        await conn.close()


class Chaos:
    """One chaos run: stack, fakes, pool, traffic, faults, drain, reconciliation."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.echo = config.echo
        self.rng = random.Random(config.seed)
        self.events: list[dict[str, Any]] = []
        self.t0 = 0.0

    def now(self) -> float:
        return time.monotonic() - self.t0

    async def run(self) -> dict[str, Any]:
        c = self.config
        echo = self.echo
        echo(f"chaos: fresh stack in {c.directory} (Kafka {c.kafka_port}, PostgreSQL {c.pg_port})")
        await run_quiet(herald_command("dev", "up", "--fresh", *stack_args(c)))
        stack = read_env_file(c.directory / "herald.env")
        fakes = Fakes(c.directory / "fakes")
        pool: PoolProcess | None = None
        try:
            base = free_ports(2)
            env = {**os.environ, **stack, **await fakes.start(),
                   "HERALD_APP_ID": "herald-chaos", "HERALD_DATA_DIR": str(c.directory / "data" / "pool"),
                   "HERALD_LOG_LEVEL": "warning", "HERALD_PROCESSING_GUARANTEE": c.guarantee,
                   "HERALD_RATE_LIMITS": "default=1000000/minute:defer",
                   "HERALD_RETRY_DELAYS": c.scale.retry_delays,
                   "HERALD_BREAKER_FAILURES": "5", "HERALD_BREAKER_OPEN_SECONDS": "10",
                   "HERALD_PUBLIC_URL": f"http://127.0.0.1:{base}"}
            bootstrap = stack["HERALD_KAFKA_BOOTSTRAP"]
            users = [(f"cu-{i:05d}", user_update(i)) for i in range(c.scale.users)]
            await produce(bootstrap, "user-updates", users, window=0)
            pool = PoolProcess(env, c.directory / "pool.log", base)
            pool.start()
            await eventually(self._ready(pool), timeout=300, interval=1, what="both workers ready")
            allowance = 1 if c.guarantee == "exactly_once" else 0
            await eventually(lambda: self._no_lag(bootstrap, allowance), timeout=300, interval=1,
                             what="users loaded")
            echo(f"chaos: pool ready ({pool.workers()}), {c.scale.users} users loaded")
            notifications = make_notifications(c.scale.notifications, c.scale.users, self.rng)
            report = await self._traffic(pool, fakes, stack, notifications, allowance)
        finally:
            if pool is not None:
                code = pool.stop()
                echo(f"chaos: pool stopped (exit {code})")
            await fakes.stop()
            if not c.keep:
                await run_quiet(herald_command("dev", "down", "--dir", str(c.directory)))
        if c.results_dir is not None:
            c.results_dir.mkdir(parents=True, exist_ok=True)
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            path = c.results_dir / f"chaos-{stamp}.json"
            path.write_text(json.dumps(report, indent=2) + "\n")
            report["path"] = str(path)
        return report

    def _ready(self, pool: PoolProcess) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            if not pool.alive():
                raise RuntimeError(f"pool exited:\n{pool.log.read_text()[-3000:]}")
            return all(pool.ready(i) for i in range(pool.size))
        return check

    async def _no_lag(self, bootstrap: str, allowance: int) -> bool:
        """Neither the workers' group nor the recorder's has records left to commit."""
        return (await group_lag(bootstrap, "herald-chaos", allowance) == 0
                and await group_lag(bootstrap, recorder_group("herald-chaos"), allowance,
                                    topic=DELIVERY_EVENTS) == 0)

    async def _traffic(self, pool: PoolProcess, fakes: Fakes, stack: Mapping[str, str],
                       notifications: list[dict[str, Any]], allowance: int) -> dict[str, Any]:
        c = self.config
        bootstrap, database_url = stack["HERALD_KAFKA_BOOTSTRAP"], stack["HERALD_DATABASE_URL"]
        faults = plan_faults(c.scale, self.rng) if c.faults else []
        self.t0 = time.monotonic()
        items = [(n["user_id"], n) for n in notifications]
        producing = asyncio.create_task(produce(bootstrap, "notifications", items, c.scale.window))
        injecting = [asyncio.create_task(self._inject(fault, pool, fakes)) for fault in faults]
        production = await producing
        await asyncio.gather(*injecting)
        last_fault = max((e["at"] + e["lasted"] for e in self.events), default=self.now())
        self.echo(f"chaos: produced {len(items)} in {production['seconds']}s; "
                  f"last fault over at {last_fault:.1f}s; draining")
        pairs = sum(len(n["channels"]) for n in notifications)
        drained = True
        try:
            await eventually(lambda: self._drained(bootstrap, database_url, pairs, allowance),
                             timeout=c.scale.drain_deadline, interval=2, what="drained")
        except TimeoutError as exc:
            self.echo(f"chaos: {exc}")
            drained = False
        drained_at = self.now()
        rows = await deliveries_rows(database_url)
        received = fakes.received()
        received["gateway"] = await read_topic(bootstrap, "gateway.frames")
        letters = await read_topic(bootstrap, "deliveries.dlq")
        reconciliation = reconcile(notifications, rows, received, letters)
        report = {
            "scale": asdict(c.scale), "guarantee": c.guarantee, "seed": c.seed,
            "faults_injected": c.faults, "faults": self.events, "production": production,
            "last_fault_over_at": round(last_fault, 1), "drained": drained,
            "drained_at": round(drained_at, 1),
            "drain_after_last_fault_seconds": round(max(0.0, drained_at - last_fault), 1),
            "throughput_per_second": round(len(notifications) / max(drained_at, 1e-9), 1),
            "restarts": pool.log.read_text(errors="replace").count(" started (pid ") - pool.size,
            "reconciliation": reconciliation,
            "load_average": os.getloadavg(),
        }
        self.echo(markdown(report))
        return report

    async def _drained(self, bootstrap: str, database_url: str, pairs: int,
                       allowance: int) -> bool:
        final = await final_pairs(database_url)
        if final is None or final < pairs:
            return False
        return await self._no_lag(bootstrap, allowance)

    async def _inject(self, fault: Fault, pool: PoolProcess, fakes: Fakes) -> None:
        wait = fault.at - self.now()
        if wait > 0:
            await asyncio.sleep(wait)
        started = self.now()
        detail = await self._apply(fault, pool, fakes)
        event = {"kind": fault.kind, "at": round(started, 1),
                 "lasted": round(self.now() - started, 1), "detail": detail}
        self.events.append(event)
        self.echo(f"chaos: {fault.kind} at {started:.1f}s for {event['lasted']}s: {detail}")

    async def _apply(self, fault: Fault, pool: PoolProcess, fakes: Fakes) -> str:
        c = self.config
        from app.devstack import DevStack

        stack = DevStack(root=c.directory, kafka_port=c.kafka_port, pg_port=c.pg_port)
        if fault.kind == "worker_sigkill":
            assert fault.target is not None
            # A worker still starting up after the previous kill is not yet delivering.
            await eventually(lambda: asyncio.to_thread(pool.ready, fault.target), timeout=120,
                             interval=0.5, what=f"worker {fault.target} ready before its kill")
            pid = pool.workers()[fault.target]
            os.kill(pid, signal.SIGKILL)
            return f"worker {fault.target} (pid {pid})"
        if fault.kind == "sendgrid_503":
            fakes.sendgrid.script.fail_for(fault.duration, status=503)
            await asyncio.sleep(fault.duration)
            return f"SendGrid answered 503 for {fault.duration:.0f}s"
        if fault.kind == "twilio_timeout":
            fakes.twilio.script.slow(PROVIDER_TIMEOUT_SECONDS + 5)
            await asyncio.sleep(fault.duration)
            fakes.twilio.script.slow(0)
            return (f"Twilio answered after {PROVIDER_TIMEOUT_SECONDS + 5:.0f}s (> the "
                    f"{PROVIDER_TIMEOUT_SECONDS:.0f}s timeout) for {fault.duration:.0f}s")
        if fault.kind == "kafka_restart":
            await asyncio.to_thread(stack.stop_kafka, echo=lambda line: None)
            await run_quiet(herald_command("dev", "up", *stack_args(c)))
            return "broker stopped (SIGTERM) and started again"
        if fault.kind == "postgres_stop":
            await asyncio.to_thread(stack.stop_postgres, echo=lambda line: None)
            await asyncio.sleep(fault.duration)
            await run_quiet(herald_command("dev", "up", *stack_args(c)))
            return f"PostgreSQL stopped for {fault.duration:.0f}s, then started"
        raise ValueError(f"unknown fault {fault.kind}")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.chaos [--small | --notifications N]``: run, report, exit 1 on a failure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="the small preset (300, faults in seconds)")
    parser.add_argument("--notifications", type=int, help="how many notifications (default: the preset's)")
    parser.add_argument("--users", type=int, help="how many users (default: the preset's)")
    parser.add_argument("--window", type=float, help="seconds to produce over (default: the preset's)")
    parser.add_argument("--guarantee", choices=["at_least_once", "exactly_once"],
                        default="at_least_once")
    parser.add_argument("--no-faults", action="store_true", help="a fault-free baseline run")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--dir", default=str(ROOT / ".local" / "chaos"))
    parser.add_argument("--kafka-port", type=int, default=61092)
    parser.add_argument("--pg-port", type=int, default=61432)
    parser.add_argument("--keep", action="store_true", help="leave the stack running afterwards")
    args = parser.parse_args(argv)
    # aiokafka logs every refused connection while the broker restarts: that is the fault.
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    scale = SCALES["small" if args.small else "full"]
    scale = replace(scale, notifications=args.notifications or scale.notifications,
                    users=args.users or scale.users, window=args.window or scale.window)
    config = Config(scale=scale, directory=Path(args.dir).resolve(), kafka_port=args.kafka_port,
                    pg_port=args.pg_port, guarantee=args.guarantee, faults=not args.no_faults,
                    seed=args.seed, keep=args.keep)
    # SIGTERM unwinds like Ctrl-C, so the pool, the fakes and the stack are stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    report = asyncio.run(Chaos(config).run())
    r = report["reconciliation"]
    return 0 if r["accounted_pct"] == 100.0 and r["duplicate_sends"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
