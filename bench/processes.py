"""The processes under test: the local stack, herald workers and pools, and their memory."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from app.devstack import DevStack

ROOT = Path(__file__).resolve().parents[1]

#: Settings of every benchmarked worker: no-op providers, rate limits out of reach.
WORKER_SETTINGS = {
    "HERALD_CHANNELS": "push=noop;email=noop;sms=noop;inapp=noop",
    "HERALD_RATE_LIMITS": "default=1000000/minute:defer",
    "HERALD_LOG_LEVEL": "warning",
    # Static membership: a killed worker that comes back keeps its partitions
    # instead of waiting out the dead member's session (as in production).
    "HERALD_NODE_ID": "bench-worker",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Stack:
    """The benchmark's own Kafka + PostgreSQL (``herald dev up`` in a folder of its own)."""

    root: Path
    kafka_port: int
    pg_port: int
    #: Worker settings on top of :data:`WORKER_SETTINGS` (``--worker-env``, for experiments).
    extra_env: tuple[tuple[str, str], ...] = ()

    @property
    def dev(self) -> DevStack:
        return DevStack(self.root, self.kafka_port, self.pg_port)

    @property
    def bootstrap(self) -> str:
        return self.dev.bootstrap

    @property
    def libs(self) -> Path:
        return self.dev.kafka_dir / "libs"

    def fresh(self) -> dict[str, str]:
        """Empty Kafka and PostgreSQL; the environment a worker needs to use them."""
        self.dev.up(fresh=True, echo=lambda line: None)
        return {**os.environ, **self.dev.settings(), **WORKER_SETTINGS, **dict(self.extra_env)}

    def down(self) -> None:
        self.dev.down(echo=lambda line: None)


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` in KiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ValueError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of ``pid`` and its live children, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


class Worker:
    """One ``herald worker`` (or ``herald pool``) process the benchmark starts and stops."""

    def __init__(self, env: Mapping[str, str], log: Path, *, data_dir: Path,
                 pool: int | None = None) -> None:
        self.web_port = free_port()
        self.env = {**env, "HERALD_WEB_PORT": str(self.web_port), "HERALD_DATA_DIR": str(data_dir)}
        self.log, self.data_dir, self.pool = log, data_dir, pool
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.started_wall = 0.0

    def start(self) -> "Worker":
        args = ["worker"] if self.pool is None else [
            "pool", "-n", str(self.pool), "--base-port", str(self.web_port)]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.started, self.started_wall = time.monotonic(), time.time()
            self.process = subprocess.Popen([sys.executable, "-m", "app.cli", *args], cwd=ROOT,
                                            env=self.env, stdout=log, stderr=subprocess.STDOUT)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/readyz",
                                        timeout=2) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def wait_ready(self, timeout: float = 180.0) -> float:
        """Seconds from start until /readyz answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"worker exited; see {self.log}")
            if self.ready():
                return time.monotonic() - self.started
            time.sleep(0.1)
        raise RuntimeError(f"worker not ready within {timeout:.0f}s; see {self.log}")

    def stop(self, timeout: float = 90.0) -> None:
        """SIGTERM (a pool drains its workers), SIGKILL if it does not stop in time."""
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash would: no commit, no flush, no goodbye."""
        if self.alive():
            assert self.process is not None
            self.process.kill()
            self.process.wait()

    def wipe(self) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)
