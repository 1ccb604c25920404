"""A supervised pool of ``herald worker`` processes on one host.

Each worker gets its own web port, data folder and node id (so Kafka static
membership keeps its partitions across a restart) and inherits the rest of
the environment. A worker that exits while the pool is not stopping is
restarted after an exponential backoff, which starts again from the bottom
once the worker has stayed up for :data:`STABLE_SECONDS`. SIGTERM or SIGINT
stops every worker gracefully (SIGTERM, then SIGKILL after the drain timeout).

The decisions (each worker's environment, the restart delay) are pure
functions; :class:`Pool` only runs processes and waits.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from rules.backoff import backoff_delay

#: A worker that stayed up this long is healthy again: its backoff resets.
STABLE_SECONDS = 60.0
#: The first restart delay and the longest one.
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 60.0
#: Where workers keep their state when HERALD_DATA_DIR is not set (as in app.settings).
DEFAULT_DATA_DIR = ".local/data/worker"

Echo = Callable[[str], None]


def worker_environment(env: Mapping[str, str], index: int, *, base_port: int,
                       hostname: str) -> dict[str, str]:
    """The environment of worker ``index``: ``env`` plus its own port, data folder and id."""
    data_dir = Path(env.get("HERALD_DATA_DIR") or DEFAULT_DATA_DIR) / f"worker-{index}"
    return {**env, "HERALD_WEB_PORT": str(base_port + index),
            "HERALD_DATA_DIR": str(data_dir), "HERALD_NODE_ID": f"{hostname}-{index}"}


@dataclass(frozen=True)
class Restart:
    """What to do after a worker exited: wait ``delay`` seconds, counting ``failures``."""

    delay: float
    failures: int
    reason: str


def describe_exit(exit_code: int) -> str:
    """``exit_code`` as an operator reads it (a negative code is the killing signal)."""
    if exit_code < 0:
        try:
            return f"killed by {signal.Signals(-exit_code).name}"
        except ValueError:
            return f"killed by signal {-exit_code}"
    return f"exited with code {exit_code}"


def restart_delay(exit_code: int, uptime: float, failures: int, *,
                  jitter: float = 0.2) -> Restart:
    """The wait before restarting a worker that exited after ``uptime`` seconds.

    ``failures`` counts the quick exits before this one. A worker that had
    stayed up :data:`STABLE_SECONDS` starts the count again, so one crash
    after a day of service is retried at once-ish, not after the cap. Every
    unexpected exit is restarted, whatever its code: the pool is only stopped
    by its own signals.
    """
    count = 1 if uptime >= STABLE_SECONDS else failures + 1
    delay = backoff_delay(count, base=BACKOFF_BASE_SECONDS, cap=BACKOFF_CAP_SECONDS,
                          jitter=jitter)
    return Restart(delay=delay, failures=count, reason=describe_exit(exit_code))


def worker_command() -> list[str]:
    """How a pool starts one worker: this interpreter, herald's CLI."""
    return [sys.executable, "-m", "app.cli", "worker"]


class Pool:
    """Runs ``size`` workers until :meth:`stop`; restarts those that exit meanwhile."""

    def __init__(self, size: int, *, base_port: int, env: Mapping[str, str],
                 drain_seconds: float = 60.0, echo: Echo = print,
                 hostname: str | None = None) -> None:
        self.size = size
        self.base_port = base_port
        self.env = dict(env)
        self.drain_seconds = drain_seconds
        self.echo = echo
        self.hostname = hostname or socket.gethostname()
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Ask every worker to stop; :meth:`run` returns once they have."""
        if not self._stopping.is_set():
            self.echo("pool stopping")
            self._stopping.set()

    async def run(self) -> None:
        """Supervise the workers until :meth:`stop`, then stop them gracefully."""
        await asyncio.gather(*(self._supervise(i) for i in range(self.size)))
        self.echo("pool stopped")

    async def _supervise(self, index: int) -> None:
        env = worker_environment(self.env, index, base_port=self.base_port,
                                 hostname=self.hostname)
        Path(env["HERALD_DATA_DIR"]).mkdir(parents=True, exist_ok=True)
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            failures = 0
            while not self._stopping.is_set():
                started = time.monotonic()
                # A session of its own: a terminal's Ctrl-C reaches the pool only,
                # which then stops the workers itself instead of seeing them "crash".
                process = await asyncio.create_subprocess_exec(
                    *worker_command(), env=env, stdin=asyncio.subprocess.DEVNULL,
                    start_new_session=True)
                self.echo(f"worker {index} started (pid {process.pid}, "
                          f"port {env['HERALD_WEB_PORT']})")
                exited = asyncio.create_task(process.wait())
                await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if self._stopping.is_set():
                    await self._drain(index, process, exited)
                    return
                decision = restart_delay(exited.result(), time.monotonic() - started, failures)
                failures = decision.failures
                self.echo(f"worker {index} {decision.reason}; "
                          f"restarting in {decision.delay:.1f}s")
                await asyncio.wait({stopping}, timeout=decision.delay)
        finally:
            stopping.cancel()
            await asyncio.gather(stopping, return_exceptions=True)

    async def _drain(self, index: int, process: asyncio.subprocess.Process,
                     exited: "asyncio.Task[int]") -> None:
        if not exited.done():
            _signal(process, signal.SIGTERM)
            await asyncio.wait({exited}, timeout=self.drain_seconds)
        if not exited.done():
            self.echo(f"worker {index} did not stop within {self.drain_seconds:.0f}s; "
                      f"killing it")
            _signal(process, signal.SIGKILL)
        self.echo(f"worker {index} {describe_exit(await exited)}")


def _signal(process: asyncio.subprocess.Process, signum: signal.Signals) -> None:
    try:
        process.send_signal(signum)
    except ProcessLookupError:
        pass  # it exited meanwhile


def run_pool(size: int, *, base_port: int, drain_seconds: float, echo: Echo = print) -> None:
    """Run a pool in this process until SIGTERM or SIGINT."""

    async def main() -> None:
        pool = Pool(size, base_port=base_port, env=os.environ, drain_seconds=drain_seconds,
                    echo=echo)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, pool.stop)
        await pool.run()

    asyncio.run(main())
