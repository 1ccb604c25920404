"""What the fake providers share: a script of failures, a record of what they
received, and how an HTTP fake is served.

A test scripts the next answers before it sends::

    fake.script.fail_next(2)                 # two 503s, then normal answers
    fake.script.rate_limit_next(retry_after=2)
    fake.script.invalid("+15550000000")

and reads ``fake.script.received`` afterwards. The script is locked, so the
fake may run in another thread or process than the test that reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

#: Script methods the control endpoint of a standalone fake may call.
SCRIPT_ACTIONS = (
    "fail_next", "fail_for", "rate_limit_next", "slow", "invalid", "unregistered",
    "accept_then_hang", "reset",
)


@dataclass(frozen=True)
class Decision:
    """How a fake answers one request.

    ``kind`` is ``"accept"``, ``"fail"`` (answer ``status``), ``"rate_limit"``
    (429 with ``retry_after``), ``"invalid"`` or ``"unregistered"`` (a
    permanent rejection of the address). ``delay`` is waited before
    answering at all; ``hang`` after recording an accepted message.
    """

    kind: str = "accept"
    status: int = 200
    retry_after: float | None = None
    delay: float = 0.0
    hang: float = 0.0


class Script:
    """Scripted failures of one fake, and the messages it accepted.

    ``failure_status`` is what :meth:`fail_next` and :meth:`fail_for` answer
    unless told otherwise: 503 for HTTP fakes, 451 for SMTP.
    """

    def __init__(self, failure_status: int = 503) -> None:
        self.failure_status = failure_status
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget every scripted failure and everything received."""
        with self._lock:
            self._queued: deque[Decision] = deque()
            self._failing_until = 0.0
            self._failing_status = self.failure_status
            self._delay = 0.0
            self._hangs: deque[float] = deque()
            self._rejected: dict[str, str] = {}
            self._received: list[dict[str, Any]] = []
            self._requests = 0

    def fail_next(self, n: int = 1, status: int | None = None) -> None:
        """Answer the next ``n`` requests with ``status`` (default: the fake's transient failure)."""
        with self._lock:
            self._queued.extend([Decision("fail", status or self.failure_status)] * n)

    def fail_for(self, seconds: float, status: int | None = None) -> None:
        """Answer every request with ``status`` for the next ``seconds``: an outage."""
        with self._lock:
            self._failing_until = time.monotonic() + seconds
            self._failing_status = status or self.failure_status

    def rate_limit_next(self, n: int = 1, retry_after: float = 2) -> None:
        """Answer the next ``n`` requests with 429 and ``Retry-After: retry_after``."""
        with self._lock:
            self._queued.extend([Decision("rate_limit", 429, retry_after=retry_after)] * n)

    def slow(self, seconds: float) -> None:
        """Wait ``seconds`` before every answer from now on; ``slow(0)`` ends it."""
        with self._lock:
            self._delay = seconds

    def invalid(self, address: str) -> None:
        """Reject ``address`` permanently as malformed or not a real address."""
        with self._lock:
            self._rejected[address] = "invalid"

    def unregistered(self, address: str) -> None:
        """Reject ``address`` permanently as unknown to the network (no such user, not a mobile)."""
        with self._lock:
            self._rejected[address] = "unregistered"

    def accept_then_hang(self, seconds: float, n: int = 1) -> None:
        """Record the next ``n`` messages as received, then wait ``seconds`` before answering.

        The provider's caller times out although the message went out: the
        window between a provider's acceptance and the worker's commit.
        """
        with self._lock:
            self._hangs.extend([seconds] * n)

    def decide(self, address: str | None) -> Decision:
        """The answer to the request now arriving for ``address``; consumes one scripted step."""
        with self._lock:
            self._requests += 1
            delay = self._delay
            if self._queued:
                step = self._queued.popleft()
                return Decision(step.kind, step.status, step.retry_after, delay)
            if time.monotonic() < self._failing_until:
                return Decision("fail", self._failing_status, delay=delay)
            if address in self._rejected:
                return Decision(self._rejected[address], 400, delay=delay)
            hang = self._hangs.popleft() if self._hangs else 0.0
            return Decision("accept", delay=delay, hang=hang)

    def record(self, message: dict[str, Any]) -> None:
        """Keep an accepted message."""
        with self._lock:
            self._received.append(message)

    @property
    def received(self) -> list[dict[str, Any]]:
        """A copy of the messages accepted so far, oldest first."""
        with self._lock:
            return list(self._received)

    @property
    def count(self) -> int:
        """How many messages were accepted."""
        with self._lock:
            return len(self._received)

    @property
    def requests(self) -> int:
        """How many sends arrived, failed ones included."""
        with self._lock:
            return self._requests

    async def wait_for_count(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Wait until ``n`` messages were accepted (polling, with a deadline); return them."""
        deadline = time.monotonic() + timeout
        while self.count < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.count} of {n} messages received within {timeout}s")
            await asyncio.sleep(0.01)
        return self.received


class Servable(Protocol):
    """A fake that can be started on a local port and stopped."""

    async def start(self, port: int = 0) -> str: ...

    async def stop(self) -> None: ...


class HttpFake:
    """Serving an aiohttp fake on 127.0.0.1: start/stop or ``async with``.

    Besides the vendor routes of the subclass, the app answers
    ``GET /_fake/received`` and ``POST /_fake/script`` (``{"action":
    "fail_next", "n": 2}``) so a standalone fake can be scripted and
    inspected from another process.
    """

    def __init__(self, script: Script | None = None) -> None:
        self.script = script or Script()
        self.url = ""
        self._runner: web.AppRunner | None = None

    def routes(self) -> list[web.RouteDef]:
        """The vendor API routes of this fake."""
        raise NotImplementedError

    def make_app(self) -> web.Application:
        """The aiohttp application: vendor routes plus the control routes."""
        app = web.Application()
        app.add_routes(self.routes())
        app.add_routes([
            web.get("/_fake/received", self._control_received),
            web.post("/_fake/script", self._control_script),
        ])
        return app

    async def start(self, port: int = 0) -> str:
        """Serve on 127.0.0.1 (``port`` 0: a free one) and return the base URL."""
        # handler_cancellation: a client that gave up (a provider timeout)
        # must not leave a scripted sleep running until the fake stops.
        runner = web.AppRunner(self.make_app(), handler_cancellation=True, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        host, bound_port = runner.addresses[0][:2]
        self.url = f"http://{host}:{bound_port}"
        return self.url

    async def stop(self) -> None:
        """Stop serving and close every connection."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> "HttpFake":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def received(self) -> list[dict[str, Any]]:
        """The messages this fake accepted."""
        return self.script.received

    async def _control_received(self, request: web.Request) -> web.Response:
        return web.json_response(self.script.received)

    async def _control_script(self, request: web.Request) -> web.Response:
        try:
            step = await request.json()
        except ValueError:
            step = None
        if not isinstance(step, dict):
            return web.json_response({"error": 'expected {"action": ..., **arguments}'}, status=400)
        action = step.pop("action", None)
        if action not in SCRIPT_ACTIONS:
            return web.json_response({"error": f"action must be one of {SCRIPT_ACTIONS}"}, status=400)
        try:
            getattr(self.script, action)(**step)
        except TypeError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"ok": True})


async def serve_forever(fake: Servable, port: int) -> None:
    """Run ``fake`` on ``port`` until SIGINT or SIGTERM, printing its URL first."""
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopped.set)
    url = await fake.start(port=port)
    # The demo stack reads the first line of output to learn where the fake listens.
    print(url, flush=True)
    try:
        await stopped.wait()
    finally:
        await fake.stop()


def run_standalone(fake: Servable, port: int) -> None:
    """Blocking entry point of ``python -m testing.fakes.<name>``."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_forever(fake, port))
