"""The real-time gateway: in-app notifications over WebSocket (``/v1/ws``) and SSE (``/v1/sse``).

How a notification reaches an open app, wherever it is connected:

- the ``gateway`` provider publishes each in-app delivery to ``gateway.frames``;
- every worker's :class:`Gateway` reads that topic from its end and hands each
  frame to the sessions it holds for the user (:class:`Hub`), so the worker
  that processed the user's partition and the one holding the socket need
  not be the same;
- sessions are announced in ``presence`` (connect, heartbeat, disconnect,
  with this worker's node id), which the router reads to prefer in-app over
  push for online users.

A client that reconnects with the last id it saw (``?last_id=`` on the
WebSocket, ``Last-Event-ID`` on SSE) first gets what it missed, from
PostgreSQL and the worker's recent frames (:mod:`rules.resume`), then the
live ones, in order and each once. The client acknowledges with
``{"type": "ack", "id": ...}`` (DELIVERED) and ``{"type": "read", "id": ...}``
(READ); SSE clients use the REST routes for that.

Wire protocol (JSON text frames), server → client: ``welcome``,
``notification``, ``resumed`` (after the backlog), ``pong``, ``error``;
client → server: ``ack``, ``read``, ``ping``. GraphQL subscriptions
(graphql-transport-ws) share the endpoint: see :mod:`app.subscriptions`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict, deque
from datetime import datetime
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping

import asyncpg
from aiohttp import WSMsgType, web
from aiokafka import AIOKafkaConsumer
from faust.web import Request, View
from mode import Service

from agents.emitters import emit_status
from app import inbox, metrics
from app.auth import AuthConfig, AuthError, authenticate, authorize
from app.context import Herald
from providers.gateway import FRAMES_TOPIC
from rules.resume import Frame, missed, moment
from app.errors import InvalidEvent
from schemas.parsing import check_id, now_iso

logger = logging.getLogger("herald.gateway")

GRAPHQL_PROTOCOL = "graphql-transport-ws"
#: Frames waiting for one slow session; past this it is closed and resumes later.
SESSION_QUEUE = 1000
#: Ids a session remembers having sent (duplicates dropped, ACKs checked).
SENT_MEMORY = 2000
#: Recent frames kept per user, and for how long, to close the gap between
#: "published" and "recorded in PostgreSQL" when a client resumes.
RECENT_PER_USER = 100
RECENT_SECONDS = 300.0
#: Notifications one resume replays at most; the rest are in the inbox API.
RESUME_LIMIT = 500
#: The largest client message accepted (ack, read and ping are tiny).
MAX_CLIENT_MESSAGE = 16 * 1024
SSE_PING_SECONDS = 15.0
#: WebSocket close codes when the server ends a session.
CLOSE_CODES = {"overflow": 1013, "shutdown": 1001}

_STOP: Frame = {"type": "stop"}


class Session:
    """One open client connection of one user: the frames waiting for it and what it got."""

    def __init__(self, user_id: str, transport: str) -> None:
        self.user_id, self.transport = user_id, transport
        self.queue: asyncio.Queue[Frame] = asyncio.Queue(maxsize=SESSION_QUEUE)
        self.sent: OrderedDict[str, str] = OrderedDict()
        self.stopped: str | None = None

    def offer(self, frame: Frame) -> None:
        """Queue a live frame; a session too slow to keep up is stopped (it resumes later)."""
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.stop("overflow")

    def stop(self, reason: str) -> None:
        """End the session's stream: what is queued is dropped, the client resumes it."""
        if self.stopped is None:
            self.stopped = reason
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(_STOP)

    def first_time(self, frame: Frame) -> bool:
        """Whether ``frame`` is new to this session (and remember it if so)."""
        frame_id = str(frame["id"])
        if frame_id in self.sent:
            return False
        self.sent[frame_id] = str(frame["created_at"])
        if len(self.sent) > SENT_MEMORY:
            self.sent.popitem(last=False)
        return True


class Hub:
    """This worker's sessions by user, and the recent frames of each user."""

    def __init__(self) -> None:
        self.sessions: dict[str, set[Session]] = {}
        self.recent: dict[str, deque[tuple[float, Frame]]] = {}

    def attach(self, session: Session) -> bool:
        """Add a session; ``True`` when it is the user's first on this worker."""
        held = self.sessions.setdefault(session.user_id, set())
        held.add(session)
        return len(held) == 1

    def detach(self, session: Session) -> bool:
        """Remove a session; ``True`` when it was the user's last on this worker."""
        held = self.sessions.get(session.user_id, set())
        held.discard(session)
        if held:
            return False
        self.sessions.pop(session.user_id, None)
        return True

    def publish(self, frame: Frame, now: float) -> None:
        """Keep ``frame`` as recent and hand it to the user's sessions here."""
        user_id = str(frame["user_id"])
        self.recent.setdefault(user_id, deque(maxlen=RECENT_PER_USER)).append((now, frame))
        for session in self.sessions.get(user_id, ()):
            session.offer(frame)

    def recent_frames(self, user_id: str) -> list[Frame]:
        """The user's recent frames, oldest first."""
        return [frame for _, frame in self.recent.get(user_id, ())]

    def find_recent(self, user_id: str, frame_id: str) -> Frame | None:
        """The user's recent frame with ``frame_id``, if this worker saw it lately."""
        return next((f for f in self.recent_frames(user_id) if f["id"] == frame_id), None)

    def prune(self, now: float) -> None:
        """Forget recent frames older than :data:`RECENT_SECONDS`."""
        for user_id in list(self.recent):
            frames = self.recent[user_id]
            while frames and now - frames[0][0] > RECENT_SECONDS:
                frames.popleft()
            if not frames:
                del self.recent[user_id]

    def all_sessions(self) -> list[Session]:
        """Every open session."""
        return [session for held in self.sessions.values() for session in held]


def identifier(name: str, value: str | None) -> str | None:
    """``value`` if it can be an id (or is absent); ``ValueError`` naming ``name`` if not."""
    if value is None:
        return None
    try:
        return check_id(name, value)
    except InvalidEvent as exc:
        raise ValueError(str(exc)) from None


def session_user(config: AuthConfig, headers: Mapping[str, str],
                 query: Mapping[str, str]) -> str:
    """The user a gateway session is for, or :class:`AuthError`.

    Browsers cannot set headers on a WebSocket, so ``?access_token=`` is
    accepted in place of ``Authorization: Bearer``. A user's JWT opens that
    user's session; an API key with ``admin`` opens ``?user_id=``'s.
    """
    token = query.get("access_token")
    if token is not None:
        headers = {"Authorization": f"Bearer {token}"}
    try:
        wanted = identifier("user_id", query.get("user_id") or None)
    except ValueError as exc:
        raise AuthError(400, str(exc)) from None
    principal = (authorize(config, headers, user_id=wanted) if wanted
                 else authenticate(config, headers))
    if principal.kind == "user":
        try:
            return str(identifier("the token's sub", principal.name))
        except ValueError as exc:
            raise AuthError(400, str(exc)) from None
    if wanted is None:
        raise AuthError(400, "an API key opens a session only with ?user_id=<user>")
    if "admin" not in principal.scopes:
        raise AuthError(403, f"API key {principal.name!r} lacks the 'admin' scope")
    return wanted


def client_command(text: str) -> tuple[str, str | None]:
    """``(type, id)`` of a client message, or ``ValueError`` saying what is wrong."""
    try:
        obj = json.loads(text)
    except ValueError:
        raise ValueError('not JSON: send {"type": "ack" | "read", "id": "<notification id>"} '
                         'or {"type": "ping"}') from None
    if not isinstance(obj, dict):
        raise ValueError("expected a JSON object with a 'type'")
    kind = obj.get("type")
    if kind == "ping":
        return "ping", None
    if kind not in ("ack", "read"):
        raise ValueError(f"unknown message type {kind!r} (expected ack, read or ping)")
    frame_id = obj.get("id")
    if not isinstance(frame_id, str):
        raise ValueError("'id' must be the id of a notification received (a non-empty string)")
    return kind, identifier("id", frame_id)


def sse_event(frame: Frame) -> bytes:
    """One Server-Sent Event: the id (for ``Last-Event-ID``), the type and the JSON."""
    head = f"id: {frame['id']}\n" if frame.get("type") == "notification" else ""
    return f"{head}event: {frame['type']}\ndata: {json.dumps(frame)}\n\n".encode()


class Gateway(Service):
    """Reads ``gateway.frames`` into the hub and announces this worker's users in ``presence``."""

    def __init__(self, herald: Herald, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.herald = herald
        self.node = herald.settings.gateway_node
        self.hub = Hub()
        #: Open WebSockets (plain and GraphQL), closed when the worker stops.
        self.sockets: set[web.WebSocketResponse] = set()
        self.auth = herald.settings.auth

    async def on_start(self) -> None:
        self.add_future(self._read_frames())
        self.add_future(self._announce())

    async def on_stop(self) -> None:
        sessions = self.hub.all_sessions()
        for session in sessions:
            session.stop("shutdown")
        for ws in list(self.sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=CLOSE_CODES["shutdown"], message=b"worker shutting down")
        deadline = time.monotonic() + 5.0
        while self.hub.sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    # -- frames and presence -------------------------------------------------

    async def _read_frames(self) -> None:
        """Follow ``gateway.frames`` from its end, for as long as the worker runs.

        Without a group, aiokafka assigns every partition of the topic and
        ``latest`` starts at its end: each worker sees every frame.
        """
        while not self.should_stop:
            consumer = AIOKafkaConsumer(FRAMES_TOPIC,
                                        bootstrap_servers=self.herald.settings.kafka_bootstrap,
                                        group_id=None, enable_auto_commit=False,
                                        auto_offset_reset="latest",
                                        client_id=f"herald-gateway-{self.node}")
            try:
                await consumer.start()
                while not self.should_stop:
                    batches = await consumer.getmany(timeout_ms=500, max_records=1000)
                    now = time.time()
                    for records in batches.values():
                        for record in records:
                            self._publish(record.value, now)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the gateway must outlive broker trouble
                logger.warning("gateway frames reader failed (%r); retrying", exc)
                await self.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()

    def _publish(self, raw: bytes | None, now: float) -> None:
        try:
            frame = json.loads(raw or b"")
        except ValueError as exc:
            frame = {"error": repr(exc)}
        if not isinstance(frame, dict) or not {"id", "user_id", "created_at"} <= frame.keys():
            logger.warning("skipping a malformed gateway frame")
            return
        self.hub.publish(frame, now)

    async def _announce(self) -> None:
        """Re-announce this worker's users so presence does not age out; forget old frames."""
        interval = self.herald.settings.presence_interval_seconds
        while not self.should_stop:
            await self.sleep(interval)
            self.hub.prune(time.time())
            for user_id in list(self.hub.sessions):
                await self.presence(user_id, "heartbeat")

    async def presence(self, user_id: str, event: str) -> None:
        """Produce a ``presence`` record for ``user_id`` from this node."""
        record = {"user_id": user_id, "node_id": self.node, "event": event, "at": now_iso()}
        try:
            await self.herald.topics.presence.send(key=user_id, value=json.dumps(record).encode())
        except Exception as exc:  # noqa: BLE001 - presence is advisory; the session goes on
            logger.warning("presence %s for a user not produced: %r", event, exc)

    # -- sessions ------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def opened(self, session: Session) -> AsyncIterator[None]:
        """Hold ``session`` in the hub (and presence) while the block runs."""
        if self.hub.attach(session):
            await self.presence(session.user_id, "connect")
        metrics.WS_SESSIONS.labels(transport=session.transport).inc()
        try:
            yield
        finally:
            metrics.WS_SESSIONS.labels(transport=session.transport).dec()
            if self.hub.detach(session):
                await self.presence(session.user_id, "disconnect")

    async def stream(self, session: Session, last_id: str | None) -> AsyncIterator[Frame]:
        """What the session gets: the missed notifications after ``last_id``, then live ones."""
        async with self.opened(session):
            if last_id:
                backlog, problem = await self.missed(session.user_id, last_id)
                if problem:
                    yield {"type": "error", "error": problem}
                for frame in backlog:
                    if session.first_time(frame):
                        metrics.WS_FRAMES.labels(source="resume").inc()
                        yield frame
                yield {"type": "resumed", "last_id": last_id, "missed": len(backlog),
                       "more": len(backlog) >= RESUME_LIMIT}
            while (frame := await session.queue.get()) is not _STOP:
                if session.first_time(frame):
                    metrics.WS_FRAMES.labels(source="live").inc()
                    yield frame

    async def missed(self, user_id: str, last_id: str) -> tuple[list[Frame], str | None]:
        """The user's notifications after ``last_id``, and a problem to report, if any."""
        recent = self.hub.recent_frames(user_id)
        anchor = next((f for f in recent if f["id"] == last_id), None)
        when: datetime | None = moment(anchor["created_at"]) if anchor else None
        stored: list[Frame] = []
        problem = None
        try:
            pool = await self.herald.store.pool()
            when = when or await inbox.position(pool, user_id, last_id)
            if when is not None:
                stored = [{"type": "notification", **item} for item in
                          await inbox.after(pool, user_id, when, last_id, RESUME_LIMIT)]
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            logger.warning("resume from the inbox failed: %r", exc)
            problem = f"the inbox store is unavailable ({type(exc).__name__}); "
            problem += ("only the last minutes were replayed" if when else "cannot resume")
        if when is None:
            return [], problem or (f"cannot resume after {last_id!r}: not in the inbox of "
                                   f"user {user_id!r}; reload it with GET /v1/users/"
                                   f"{user_id}/notifications")
        return missed(stored, recent, (when, last_id))[:RESUME_LIMIT], problem

    async def acknowledge(self, session: Session | None, user_id: str, frame_id: str,
                          kind: str) -> str | None:
        """Record DELIVERED (``ack``) or READ (``read``); a problem message if refused."""
        created_at = session.sent.get(frame_id) if session else None
        recent = None if created_at else self.hub.find_recent(user_id, frame_id)
        created_at = created_at or (recent["created_at"] if recent else None)
        if created_at is None:
            try:
                pool = await self.herald.store.pool()
                if not await inbox.in_inbox(pool, user_id, frame_id):
                    return f"notification {frame_id!r} is not in the inbox of user {user_id!r}"
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                return f"the inbox store is unavailable ({type(exc).__name__}); try again"
        status = "DELIVERED" if kind == "ack" else "READ"
        await emit_status(self.herald, frame_id, "inapp", status, user_id=user_id,
                          reason=f"{kind} from a {session.transport if session else 'REST'} client",
                          created_at=created_at)
        return None

    async def answer(self, session: Session, text: str) -> Frame | None:
        """The reply to one client message (``None`` for a successful ack/read)."""
        try:
            kind, frame_id = client_command(text)
        except ValueError as exc:
            return {"type": "error", "error": str(exc)}
        if kind == "ping":
            return {"type": "pong", "at": now_iso()}
        assert frame_id is not None
        problem = await self.acknowledge(session, session.user_id, frame_id, kind)
        return {"type": "error", "id": frame_id, "error": problem} if problem else None

    def welcome(self, session: Session) -> Frame:
        """The first frame of a session."""
        return {"type": "welcome", "node_id": self.node, "user_id": session.user_id,
                "heartbeat_seconds": self.herald.settings.ws_heartbeat_seconds}


def disconnect_reason(session: Session, ws: web.WebSocketResponse) -> str:
    """Why a WebSocket session ended, for ``herald_ws_disconnects_total``."""
    if session.stopped:
        return session.stopped
    if isinstance(ws.exception(), (asyncio.TimeoutError, TimeoutError)) or ws.close_code == 1006:
        return "heartbeat"
    return "client"


def register(herald: Herald) -> Gateway:
    """Declare ``/v1/ws`` and ``/v1/sse`` on the app; the returned service must be started."""
    from app import subscriptions  # GraphQL (graphql-transport-ws) shares the endpoint

    gateway = Gateway(herald)
    app = herald.app

    def refused(exc: AuthError) -> web.Response:
        return web.json_response({"error": exc.message}, status=exc.status)

    @app.page("/v1/ws")
    class WebSocketGateway(View):
        """Live notifications over a WebSocket (JSON frames, or GraphQL subscriptions)."""

        async def get(self, request: Request) -> Any:
            offered = request.headers.get("Sec-WebSocket-Protocol", "")
            if GRAPHQL_PROTOCOL in (p.strip() for p in offered.split(",")):
                return await subscriptions.serve(gateway, request)
            try:
                user_id = session_user(gateway.auth, request.headers, request.query)
                last_id = identifier("last_id", request.query.get("last_id") or None)
            except AuthError as exc:
                return refused(exc)
            except ValueError as exc:
                return refused(AuthError(400, str(exc)))
            ws = web.WebSocketResponse(heartbeat=herald.settings.ws_heartbeat_seconds,
                                       max_msg_size=MAX_CLIENT_MESSAGE)
            await ws.prepare(request)
            gateway.sockets.add(ws)
            session = Session(user_id, "websocket")
            await ws.send_json(gateway.welcome(session))
            pump = asyncio.ensure_future(_pump(gateway, session, ws, last_id))
            try:
                async for message in ws:
                    if message.type == WSMsgType.TEXT:
                        reply = await gateway.answer(session, message.data)
                        if reply is not None:
                            await ws.send_json(reply)
            finally:
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pump
                gateway.sockets.discard(ws)
                metrics.WS_DISCONNECTS.labels(reason=disconnect_reason(session, ws)).inc()
            return ws

    @app.page("/v1/sse")
    class EventStreamGateway(View):
        """Live notifications as Server-Sent Events, resumable with ``Last-Event-ID``."""

        async def get(self, request: Request) -> Any:
            try:
                user_id = session_user(gateway.auth, request.headers, request.query)
                last_id = identifier("Last-Event-ID", request.headers.get("Last-Event-ID")
                                     or request.query.get("last_event_id") or None)
            except AuthError as exc:
                return refused(exc)
            except ValueError as exc:
                return refused(AuthError(400, str(exc)))
            response = web.StreamResponse(headers={
                "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no"})
            await response.prepare(request)
            session = Session(user_id, "sse")
            pinger = asyncio.ensure_future(_ping_sse(response, session))
            reason = "client"
            try:
                await response.write(b"retry: 2000\n\n" + sse_event(gateway.welcome(session)))
                async for frame in gateway.stream(session, last_id):
                    await response.write(sse_event(frame))
                reason = session.stopped or reason
            except (ConnectionResetError, asyncio.CancelledError):
                pass
            finally:
                pinger.cancel()
                metrics.WS_DISCONNECTS.labels(reason=reason).inc()
            return response

    return gateway


async def _pump(gateway: Gateway, session: Session, ws: web.WebSocketResponse,
                last_id: str | None) -> None:
    """Write the session's frames to the socket; close it if the server ended the session."""
    try:
        async for frame in gateway.stream(session, last_id):
            await ws.send_json(frame)
    except (ConnectionResetError, RuntimeError) as exc:  # the socket went away meanwhile
        logger.debug("session of a user ended while writing: %r", exc)
        return
    if session.stopped and not ws.closed:
        await ws.close(code=CLOSE_CODES.get(session.stopped, 1011),
                       message=f"session ended by the server ({session.stopped}); "
                               "reconnect with ?last_id=".encode())


async def _ping_sse(response: web.StreamResponse, session: Session) -> None:
    """A comment line now and then, so proxies keep the stream and a gone client is found."""
    try:
        while True:
            await asyncio.sleep(SSE_PING_SECONDS)
            await response.write(b": ping\n\n")
    except (ConnectionResetError, RuntimeError):
        session.stop("client")
