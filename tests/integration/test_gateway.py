"""The real-time gateway against a real worker, broker and database:
WebSocket, SSE and GraphQL subscriptions, ACK/read, resume, presence, heartbeats, auth."""

from __future__ import annotations

import json
import time
from typing import Any, AsyncIterator

import aiohttp
import pytest

from tests.integration.conftest import eventually, produce
from tests.integration.test_api import ADMIN, INGEST, user_token, wait_status

pytestmark = pytest.mark.integration

@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


def token_of(worker_env: dict[str, str], user: str, expires_in: float = 300) -> str:
    return user_token(worker_env, user, expires_in)["Authorization"].removeprefix("Bearer ")


async def connect(http: aiohttp.ClientSession, worker, worker_env, user: str,
                  **params: str) -> aiohttp.ClientWebSocketResponse:
    """An authenticated gateway WebSocket for ``user``, past its welcome frame."""
    ws = await http.ws_connect(worker.url + "/v1/ws",
                               params={"access_token": token_of(worker_env, user), **params})
    welcome = await ws.receive_json(timeout=30)
    assert welcome["type"] == "welcome" and welcome["user_id"] == user, welcome
    return ws


async def next_frame(ws: aiohttp.ClientWebSocketResponse, kind: str = "notification",
                     timeout: float = 60) -> dict[str, Any]:
    """The next frame of type ``kind`` (others, like pongs, are skipped)."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        frame = await ws.receive_json(timeout=left)
        if frame["type"] == kind:
            return frame
    raise AssertionError(f"no {kind} frame within {timeout}s")


async def send_inapp(producer, user: str, title: str, **extra: Any) -> str:
    """Produce an in-app notification for ``user`` onto ``notifications``; its id."""
    nid = f"n-{user}-{title}-{time.monotonic_ns()}"
    await produce(producer, "notifications", user,
                  {"id": nid, "user_id": user, "title": title, "body": f"body of {title}",
                   "channels": ["inapp"], **extra})
    return nid


async def known_user(producer, worker, user: str) -> None:
    """Give ``user`` a profile, so their notifications never wait for one (profile grace)."""
    await produce(producer, "user-updates", user, {"user_id": user, "timezone": "UTC"})
    await eventually(lambda: _has(worker, "contacts", user), what=f"{user}'s profile")


async def _has(worker, table: str, key: str) -> bool:
    return worker.get(f"/v1/tables/{table}/{key}")[0] == 200


async def test_live_frames_in_order_then_ack_and_read(worker, worker_env, producer, db, http,
                                                      unique):
    # Given a user with an open WebSocket
    user = f"ws-{unique}"
    await known_user(producer, worker, user)
    ws = await connect(http, worker, worker_env, user)
    # When in-app notifications are produced, one after another
    sent, latencies = [], []
    for i in range(5):
        started = time.monotonic()
        nid = await send_inapp(producer, user, f"live{i}")
        frame = await next_frame(ws)
        latencies.append(time.monotonic() - started)
        sent.append(nid)
        # Then each arrives live, as the inbox item would show it
        assert frame["id"] == nid and frame["title"] == f"live{i}", frame
        assert frame["body"] == f"body of live{i}" and frame["created_at"]
    # (indicative, shown with -s: produce → frame through every agent and the broker)
    print(f"produce → WebSocket frame: {', '.join(f'{t * 1000:.0f} ms' for t in latencies)}")
    # When the client acknowledges one and reads another
    await ws.send_json({"type": "ack", "id": sent[0]})
    await ws.send_json({"type": "read", "id": sent[1]})
    # Then PostgreSQL records DELIVERED and READ for the in-app channel
    await wait_status(db, sent[0], "inapp", "DELIVERED")
    await wait_status(db, sent[1], "inapp", "READ")
    # And an application ping is answered
    await ws.send_json({"type": "ping"})
    assert (await next_frame(ws, "pong"))["at"]
    await ws.close()


async def test_bad_client_messages_get_errors_and_the_session_goes_on(worker, worker_env, http,
                                                                      producer, db, unique):
    user, other = f"ws-{unique}", f"ws-other-{unique}"
    await known_user(producer, worker, other)
    theirs = await send_inapp(producer, other, "theirs")
    await wait_status(db, theirs, "inapp", "SENT")
    ws = await connect(http, worker, worker_env, user)
    # When the client sends garbage, an unknown type and someone else's id
    await ws.send_str("not json")
    assert "not JSON" in (await next_frame(ws, "error"))["error"]
    await ws.send_json({"type": "subscribe"})
    assert "unknown message type" in (await next_frame(ws, "error"))["error"]
    await ws.send_json({"type": "ack", "id": theirs})
    refused = await next_frame(ws, "error")
    # Then each is refused with a reason, and the other user's notification is untouched
    assert refused["id"] == theirs and "not in the inbox" in refused["error"]
    await ws.send_json({"type": "ping"})
    await next_frame(ws, "pong")
    assert await db.fetchval("SELECT status FROM deliveries WHERE notification_id = $1"
                             " AND channel = 'inapp'", theirs) == "SENT"
    await ws.close()


async def test_resume_gets_the_missed_ones_in_order_then_live_without_duplicates(
        worker, worker_env, producer, db, http, unique):
    user = f"ws-{unique}"
    await known_user(producer, worker, user)
    # Given a client that saw the first notification, then went away
    ws = await connect(http, worker, worker_env, user)
    first = await send_inapp(producer, user, "first")
    assert (await next_frame(ws))["id"] == first
    await ws.close()
    # While it was away, two more were sent and recorded
    missed = [await send_inapp(producer, user, f"missed{i}") for i in range(2)]
    for nid in missed:
        await wait_status(db, nid, "inapp", "SENT")
    # When it reconnects with the last id it saw
    ws = await connect(http, worker, worker_env, user, last_id=first)
    # Then it gets what it missed, in order, from PostgreSQL (with their status) ...
    replayed = [await next_frame(ws) for _ in missed]
    assert [frame["id"] for frame in replayed] == missed
    assert all(frame["status"] == "SENT" for frame in replayed)
    resumed = await next_frame(ws, "resumed")
    assert resumed["missed"] == 2 and resumed["last_id"] == first
    # ... then live ones, and nothing twice
    live = await send_inapp(producer, user, "live")
    assert (await next_frame(ws))["id"] == live
    await ws.send_json({"type": "ping"})
    await next_frame(ws, "pong")  # any duplicate would have come before the pong
    await ws.close()
    # And an id the user never had cannot be resumed from
    ws = await connect(http, worker, worker_env, user, last_id="no-such-id")
    assert "cannot resume" in (await next_frame(ws, "error"))["error"]
    await ws.close()


async def test_sse_streams_live_and_resumes_from_last_event_id(worker, worker_env, producer, db,
                                                               http, unique):
    user = f"sse-{unique}"
    await known_user(producer, worker, user)
    auth = user_token(worker_env, user)

    async def events(response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, str]]:
        event: dict[str, str] = {}
        async for raw in response.content:
            line = raw.decode().rstrip("\n")
            if not line:
                if event:
                    yield event
                event = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                event[name] = value

    async def next_event(stream: AsyncIterator[dict[str, str]], kind: str) -> dict[str, str]:
        async for event in stream:
            if event.get("event") == kind:
                return event
        raise AssertionError(f"stream ended before a {kind} event")

    # Given an EventSource-like client
    async with http.get(worker.url + "/v1/sse", headers=auth) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        stream = events(response)
        assert json.loads((await next_event(stream, "welcome"))["data"])["user_id"] == user
        # When a notification is sent, it arrives as an event with its id
        first = await send_inapp(producer, user, "first")
        event = await next_event(stream, "notification")
        assert event["id"] == first and json.loads(event["data"])["title"] == "first"
    # When the stream drops and one more is sent meanwhile
    missed = await send_inapp(producer, user, "missed")
    await wait_status(db, missed, "inapp", "SENT")
    # Then reconnecting with Last-Event-ID replays it
    async with http.get(worker.url + "/v1/sse",
                        headers={**auth, "Last-Event-ID": first}) as response:
        stream = events(response)
        assert (await next_event(stream, "notification"))["id"] == missed
        assert json.loads((await next_event(stream, "resumed"))["data"])["missed"] == 1
    # And an SSE client acknowledges through the REST route
    async with http.post(worker.url + f"/v1/users/{user}/notifications/{missed}/delivered",
                         headers=auth) as response:
        assert response.status == 202, await response.text()
    await wait_status(db, missed, "inapp", "DELIVERED")


async def test_sessions_need_valid_credentials_for_their_own_user(worker, worker_env, http,
                                                                  unique):
    user = f"auth-{unique}"

    async def handshake(path: str, **kwargs: Any) -> tuple[int, Any]:
        async with http.get(worker.url + path, **kwargs) as response:
            return response.status, await response.json(content_type=None)

    # No credentials, a bad token, an expired token: 401 with a reason
    status, body = await handshake("/v1/ws")
    assert status == 401 and "missing credentials" in body["error"]
    status, body = await handshake("/v1/ws", params={"access_token": "nonsense.not.jwt"})
    assert status == 401, body
    expired = token_of(worker_env, user, expires_in=-3600)
    status, body = await handshake("/v1/sse", params={"access_token": expired})
    assert status == 401 and "expired" in body["error"]
    # A user's token for another user's session: 403
    status, body = await handshake("/v1/ws", params={"access_token": token_of(worker_env, user),
                                                     "user_id": "someone-else"})
    assert status == 403 and "may not access" in body["error"]
    # An ingest key cannot open sessions; an admin key opens the one it names
    status, body = await handshake("/v1/ws", headers=INGEST, params={"user_id": user})
    assert status == 403 and "admin" in body["error"]
    ws = await http.ws_connect(worker.url + "/v1/ws", headers=ADMIN, params={"user_id": user})
    assert (await ws.receive_json(timeout=30))["user_id"] == user
    await ws.close()


async def test_presence_follows_the_session_and_online_users_get_inapp_instead_of_push(
        worker, worker_env, producer, db, http, unique):
    user = f"presence-{unique}"
    await produce(producer, "user-updates", user,
                  {"user_id": user, "push_tokens": [{"token": "ab" * 32, "platform": "apns"}]})
    await eventually(lambda: _has(worker, "contacts", user), what="contacts")
    # When the user connects, presence names this worker's node
    ws = await connect(http, worker, worker_env, user)
    node = f"127.0.0.1:{worker.web_port}"

    async def online() -> bool:
        status, body = worker.get(f"/v1/tables/presence/{user}")
        return status == 200 and node in body["value"]
    await eventually(online, what="presence connect")
    # And a notification for push and in-app goes in-app only
    nid = f"n-{unique}"
    await produce(producer, "notifications", user,
                  {"id": nid, "user_id": user, "title": "Hi", "channels": ["push", "inapp"]})
    assert (await next_frame(ws))["id"] == nid
    await wait_status(db, nid, "push", "SUPPRESSED")
    # When the user disconnects, presence drops the node
    await ws.close()

    async def offline() -> bool:
        status, body = worker.get(f"/v1/tables/presence/{user}")
        return status == 200 and node not in body["value"]
    await eventually(offline, what="presence disconnect")


def heartbeat_disconnects(worker) -> float:
    """``herald_ws_disconnects_total{reason="heartbeat"}`` from the worker's /metrics."""
    import urllib.request

    with urllib.request.urlopen(worker.url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    prefix = 'herald_ws_disconnects_total{reason="heartbeat"} '
    return sum(float(line[len(prefix):]) for line in text.splitlines() if line.startswith(prefix))


async def test_a_client_that_stops_answering_pings_is_dropped(worker, worker_env, http, unique):
    before = heartbeat_disconnects(worker)
    # Given a client that never answers the server's pings (HERALD_WS_HEARTBEAT_SECONDS=3)
    ws = await http.ws_connect(worker.url + "/v1/ws", autoping=False,
                               params={"access_token": token_of(worker_env, f"dead-{unique}")})
    # Then the server closes the session, and counts it as a heartbeat disconnect
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        message = await ws.receive(timeout=30)
        if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                            aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR):
            break
    else:
        raise AssertionError("the server kept a silent session open")

    async def counted() -> bool:
        return heartbeat_disconnects(worker) > before
    await eventually(counted, what="heartbeat disconnect counted")


async def test_graphql_subscription_over_graphql_transport_ws(worker, worker_env, producer, db,
                                                              http, unique):
    user = f"gql-{unique}"
    await known_user(producer, worker, user)
    ws = await http.ws_connect(worker.url + "/v1/ws", protocols=("graphql-transport-ws",))
    assert ws.protocol == "graphql-transport-ws"
    # connection_init with the user's token → connection_ack
    await ws.send_json({"type": "connection_init", "payload": {"token": token_of(worker_env, user)}})
    assert (await ws.receive_json(timeout=30))["type"] == "connection_ack"
    # A subscription to the user's notifications receives them as `next`
    await ws.send_json({"id": "1", "type": "subscribe", "payload": {
        "query": "subscription($u: ID!) { notifications(userId: $u) { id title createdAt } }",
        "variables": {"u": user}}})
    # Someone else's notifications: an error for that operation only
    await ws.send_json({"id": "2", "type": "subscribe", "payload": {
        "query": 'subscription { notifications(userId: "not-me") { id } }'}})
    refused = await ws.receive_json(timeout=30)
    assert refused["type"] == "error" and refused["id"] == "2", refused
    assert "may not subscribe" in refused["payload"][0]["message"]
    await eventually(lambda: _presence_of(worker, user), what="subscription registered")
    nid = await send_inapp(producer, user, "graphql")
    message = await ws.receive_json(timeout=60)
    assert message["type"] == "next" and message["id"] == "1", message
    assert message["payload"]["data"]["notifications"]["id"] == nid
    # A mutation acknowledges it: DELIVERED
    await ws.send_json({"id": "3", "type": "subscribe", "payload": {
        "query": "mutation($id: ID!) { ack(id: $id) }", "variables": {"id": nid}}})
    answer = await ws.receive_json(timeout=30)
    assert answer == {"type": "next", "id": "3", "payload": {"data": {"ack": True}}}, answer
    assert (await ws.receive_json(timeout=30)) == {"type": "complete", "id": "3"}
    await wait_status(db, nid, "inapp", "DELIVERED")
    # Completing the subscription ends it; ping/pong works
    await ws.send_json({"id": "1", "type": "complete"})
    await ws.send_json({"type": "ping"})
    assert (await ws.receive_json(timeout=30))["type"] == "pong"
    await ws.close()


async def test_graphql_without_connection_init_is_closed_4401(worker, http):
    ws = await http.ws_connect(worker.url + "/v1/ws", protocols=("graphql-transport-ws",))
    await ws.send_json({"id": "1", "type": "subscribe",
                        "payload": {"query": "subscription { notifications(userId: \"x\") { id } }"}})
    message = await ws.receive(timeout=30)
    assert message.type == aiohttp.WSMsgType.CLOSE and message.data == 4401, message


async def _presence_of(worker, user: str) -> bool:
    status, body = worker.get(f"/v1/tables/presence/{user}")
    return status == 200 and bool(body["value"])
