"""Integration fixtures: the real stack, a real worker, outside clients.

The stack is started by the project's own command (``herald dev up``) in a
folder and on ports of its own, so a developer's running stack is left
alone. Everything waits by polling a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from testing.fakes.apns import DEFAULT_KEY_ID as APNS_KEY_ID
from testing.fakes.apns import DEFAULT_TEAM_ID as APNS_TEAM_ID
from testing.fakes.apns import DEFAULT_TOPIC as APNS_TOPIC
from testing.polling import eventually  # noqa: F401 - the tests import it from here

ROOT = Path(__file__).resolve().parents[2]
STACK_DIR = Path(os.environ.get("HERALD_TEST_STACK_DIR", str(ROOT / ".local" / "test-stack")))
KAFKA_PORT = int(os.environ.get("HERALD_TEST_KAFKA_PORT", "19092"))
PG_PORT = int(os.environ.get("HERALD_TEST_PG_PORT", "15432"))


def herald_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "app.cli", *args]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Worker:
    """One ``herald worker`` process and how to reach it."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.web_port = int(env["HERALD_WEB_PORT"])
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def start(self) -> None:
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(herald_command("worker"), cwd=ROOT, env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT)
        self.wait_ready()

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        request = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited ({self.process.returncode}):\n{self.log_tail()}")
            try:
                if self.get("/readyz")[0] == 200:
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"worker not ready within {timeout}s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no commit, as a crash would."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def fresh_stack(folder: Path, kafka_port: int, pg_port: int,
                keep: bool = False) -> Iterator[dict[str, str]]:
    """A fresh stack from ``herald dev up --fresh``; yields the environment to use it.

    Stopped afterwards (and when it fails to come up) unless ``keep``.
    """
    args = ["--dir", str(folder), "--kafka-port", str(kafka_port), "--pg-port", str(pg_port)]
    up = subprocess.run(herald_command("dev", "up", "--fresh", *args), cwd=ROOT,
                        capture_output=True, text=True, timeout=600)
    try:
        assert up.returncode == 0, f"herald dev up failed:\n{up.stdout}\n{up.stderr}"
        env = dict(os.environ)
        for line in (folder / "herald.env").read_text().splitlines():
            name, _, value = line.removeprefix("export ").partition("=")
            env[name] = value.strip("'")
        yield env
    finally:
        if up.returncode != 0 or not keep:
            subprocess.run(herald_command("dev", "down", "--dir", str(folder)), cwd=ROOT,
                           capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def stack_env() -> Iterator[dict[str, str]]:
    """A fresh Kafka + PostgreSQL started by ``herald dev up``; stopped at the end."""
    with fresh_stack(STACK_DIR, KAFKA_PORT, PG_PORT,
                     keep=bool(os.environ.get("HERALD_TEST_KEEP_STACK"))) as env:
        yield env


#: The APNs fake answers 410 Unregistered for this device token.
GONE_APNS_TOKEN = "dead" * 16


class Fake:
    """A provider fake running as its own process, scripted over HTTP."""

    files: Path

    def __init__(self, module: str, *args: str) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", f"testing.fakes.{module}",
                                         "--port", "0", *args], cwd=ROOT,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                        text=True)
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()
        assert self.url, f"fake {module} did not start"

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    def script(self, action: str, **args: Any) -> None:
        self._call("POST", "/_fake/script", {"action": action, **args})

    def received(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/_fake/received"))

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        if self.process.stdout:
            self.process.stdout.close()


@pytest.fixture(scope="session")
def fakes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Fake]]:
    """SendGrid, Twilio and SMTP fakes speaking the vendors' wire APIs."""
    keys = tmp_path_factory.mktemp("apns")
    running = {"sendgrid": Fake("sendgrid", "--api-key", "SG.test"),
               "twilio": Fake("twilio", "--auth-token", "twilio-token"),
               "smtp": Fake("smtp"),
               "apns": Fake("apns", "--key-out", str(keys / "key.p8"), "--ca-out",
                            str(keys / "ca.pem"), "--unregistered", GONE_APNS_TOKEN)}
    running["apns"].files = keys
    yield running
    for fake in running.values():
        fake.stop()


@pytest.fixture(scope="session")
def webhook_key() -> Any:
    """The key pair SendGrid would sign its event webhook with."""
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="session")
def worker_env(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory,
               fakes: dict[str, Fake], webhook_key: Any) -> dict[str, str]:
    import base64

    from cryptography.hazmat.primitives import serialization

    public_der = webhook_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    smtp = urllib.parse.urlsplit(fakes["smtp"].url)
    return {**stack_env, "HERALD_WEB_PORT": str(free_port()),
            # Real providers (through their SDKs) against local fakes; short retries.
            "HERALD_CHANNELS": "push=apns;email=sendgrid>smtp;sms=twilio;inapp=gateway",
            "HERALD_APNS_KEY": str(fakes["apns"].files / "key.p8"),
            "HERALD_APNS_CA_FILE": str(fakes["apns"].files / "ca.pem"),
            "HERALD_APNS_BASE_URL": fakes["apns"].url, "HERALD_APNS_KEY_ID": APNS_KEY_ID,
            "HERALD_APNS_TEAM_ID": APNS_TEAM_ID, "HERALD_APNS_TOPIC": APNS_TOPIC,
            "HERALD_SENDGRID_API_KEY": "SG.test", "HERALD_SENDGRID_BASE_URL": fakes["sendgrid"].url,
            "HERALD_EMAIL_FROM": "herald@example.org",
            "HERALD_SMTP_HOST": smtp.hostname or "127.0.0.1", "HERALD_SMTP_PORT": str(smtp.port),
            "HERALD_SMTP_STARTTLS": "false",
            "HERALD_TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "HERALD_TWILIO_AUTH_TOKEN": "twilio-token",
            "HERALD_TWILIO_BASE_URL": fakes["twilio"].url, "HERALD_SMS_FROM": "+15005550006",
            "HERALD_SENDGRID_WEBHOOK_PUBLIC_KEY": base64.b64encode(public_der).decode(),
            "HERALD_RETRY_DELAYS": "1,2", "HERALD_BREAKER_FAILURES": "3",
            "HERALD_BREAKER_OPEN_SECONDS": "5",
            "HERALD_DATA_DIR": str(tmp_path_factory.mktemp("worker-data")),
            "HERALD_LOG_LEVEL": "info",
            # A gateway session that stops answering pings is dropped within seconds.
            "HERALD_WS_HEARTBEAT_SECONDS": "3", "HERALD_PRESENCE_INTERVAL_SECONDS": "3",
            # REST API credentials (tests/integration/test_api.py).
            "HERALD_API_KEYS": "test-admin:test-admin-key:ingest,admin;test-ingest:test-ingest-key:ingest"
                               ";test-limited:test-limited-key:ingest",
            "HERALD_INGEST_RATE": "test-limited=0.2,3",  # tests/integration/test_security.py
            "HERALD_JWT_SECRET": "test-jwt-secret-that-is-at-least-32-bytes-long",
            # Short windows so the timed rules show within a test's deadline.
            "HERALD_DIGEST_CATEGORIES": "digest-test=4",
            "HERALD_RATE_LIMITS": "default=1000/minute:defer; limited=2/minute:drop; slow=1/minute:defer"}


@pytest.fixture(scope="session")
def worker(worker_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """One herald worker, running for the whole session."""
    running = Worker(worker_env, tmp_path_factory.mktemp("logs") / "worker.log")
    running.start()
    yield running
    running.stop()


@pytest.fixture
def unique() -> str:
    """A fresh suffix, so tests never see each other's records."""
    return uuid.uuid4().hex[:12]


@contextlib.asynccontextmanager
async def kafka_producer(bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    """A plain aiokafka producer (acks=all), as any outside service would use."""
    client = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await client.start()
    try:
        yield client
    finally:
        await client.stop()


@pytest.fixture
async def producer(stack_env: dict[str, str]) -> AsyncIterator[AIOKafkaProducer]:
    """A producer on the shared test stack."""
    async with kafka_producer(stack_env["HERALD_KAFKA_BOOTSTRAP"]) as client:
        yield client


@pytest.fixture
async def db(stack_env: dict[str, str]) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(stack_env["HERALD_DATABASE_URL"])
    yield conn
    await conn.close()


async def produce(producer: AIOKafkaProducer, topic: str, key: str | None, value: Any,
                  partition: int | None = None) -> None:
    """Produce ``value`` (JSON unless bytes) and wait for the broker's ack."""
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    await producer.send_and_wait(topic, key=key.encode() if key is not None else None, value=raw,
                                 partition=partition)


async def read_matching(bootstrap: str, topic: str, match: Callable[[dict[str, Any]], bool], *,
                        wanted: int = 1, timeout: float = 60.0) -> list[dict[str, Any]]:
    """JSON records of ``topic`` (from the beginning) that ``match`` accepts, in order: as
    soon as ``wanted`` are found, or what was found when ``timeout`` ran out."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + timeout
        while len(found) < wanted and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                found += [value for value in (json.loads(r.value) for r in records)
                          if match(value)]
        return found
    finally:
        await consumer.stop()


async def read_topic(bootstrap: str, topic: str, match: Callable[[dict[str, Any]], bool], *,
                     timeout: float = 60.0) -> dict[str, Any]:
    """The first JSON record of ``topic`` (from the beginning) that ``match`` accepts."""
    found = await read_matching(bootstrap, topic, match, timeout=timeout)
    if not found:
        raise AssertionError(f"no matching record on {topic} within {timeout}s")
    return found[0]
