"""Security of the running worker (issue 8, item 4): authentication on every route,
cross-user access, key scopes, injection through every string parameter, size
limits, the ingest rate limit, and secrets kept out of the logs.

Token-level checks (expiry, signatures, alg=none, HS/RS confusion) and the
template sandbox are pure and live in tests/security/.
"""

from __future__ import annotations

import secrets
import time
import urllib.parse
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import jwt
import pytest

from app.inbox import encode_cursor
from app.openapi import ROUTES
from tests.integration.conftest import eventually, produce

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": "Bearer test-admin-key"}
INGEST = {"X-API-Key": "test-ingest-key"}
LIMITED = {"X-API-Key": "test-limited-key"}
#: The documented public routes: the OpenAPI document, nothing else.
PUBLIC = {"openapi"}


def token_for(worker_env: dict[str, str], user: str, **claims: Any) -> dict[str, str]:
    payload = {"sub": user, "exp": int(time.time() + 3600), **claims}
    return {"Authorization": "Bearer " + jwt.encode(payload, worker_env["HERALD_JWT_SECRET"],
                                                    algorithm="HS256")}


class Client:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session, self.base = session, base

    async def call(self, method: str, path: str, *, headers: dict[str, str] | None = None,
                   data: bytes | None = None, json: Any = None,
                   params: dict[str, str] | None = None) -> tuple[int, Any, Any]:
        async with self.session.request(method, self.base + path, headers=headers, data=data,
                                        json=json, params=params) as response:
            return response.status, await response.json(content_type=None), response.headers


@pytest.fixture
async def client(worker) -> AsyncIterator[Client]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield Client(session, worker.url)


def concrete(path: str, user: str = "u-victim", nid: str = "n-1") -> str:
    return path.replace("{user_id}", user).replace("{notification_id}", nid)


ROUTE_CALLS = [(name, method.upper(), path) for name, (path, methods) in ROUTES.items()
               for method in methods]


@pytest.mark.parametrize(("name", "method", "path"), ROUTE_CALLS,
                         ids=[name for name, _, _ in ROUTE_CALLS])
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"},
                                     {"X-API-Key": "nope"}, {"Authorization": "Basic dTpw"}],
                         ids=["none", "bad-bearer", "bad-key", "basic"])
async def test_every_route_requires_authentication(client, name, method, path, headers):
    # Iterating over ROUTES: a route added later is covered without editing this test.
    status, answer, _ = await client.call(method, concrete(path), headers=headers,
                                          json={"user_id": "u-victim", "title": "x"})
    if name in PUBLIC:
        assert status == 200
        return
    assert status == 401, (name, status, answer)
    assert answer["error"]


@pytest.mark.parametrize("path", ["/v1/webhooks/twilio", "/v1/webhooks/sendgrid"])
async def test_webhooks_refuse_an_unsigned_request(client, path):
    status, answer, _ = await client.call(
        "POST", path, data=b"MessageStatus=delivered&MessageSid=SM1",
        headers={"Content-Type": "application/x-www-form-urlencoded"}
        if "twilio" in path else {"Content-Type": "application/json"})
    assert status == 403 and "signature" in answer["error"].lower()


USER_ROUTES = [(name, method.upper(), path) for name, method, path in
               ((n, m, p) for n, (p, ms) in ROUTES.items() for m in ms) if "{user_id}" in path]
BODIES = {"preferences": {"locale": "fr"}, "contacts": {"email": "x@example.org"}}


@pytest.mark.parametrize(("name", "method", "path"), USER_ROUTES,
                         ids=[name for name, _, _ in USER_ROUTES])
async def test_a_user_cannot_touch_another_users_data(client, worker_env, name, method, path):
    status, answer, _ = await client.call(method, concrete(path, user="u-bob"),
                                          headers=token_for(worker_env, "u-alice"),
                                          json=BODIES.get(name))
    assert status == 403, (name, status, answer)
    assert "u-alice" in answer["error"] and "u-bob" in answer["error"]


@pytest.mark.parametrize(("name", "method", "path"), USER_ROUTES,
                         ids=[name for name, _, _ in USER_ROUTES])
async def test_an_ingest_key_cannot_read_or_change_user_data(client, name, method, path):
    status, answer, _ = await client.call(method, concrete(path), headers=INGEST,
                                          json=BODIES.get(name))
    assert status == 403 and "admin" in answer["error"], (name, answer)


async def test_an_admin_key_reads_any_inbox(client):
    status, answer, _ = await client.call("GET", "/v1/users/u-anyone/notifications",
                                          headers=ADMIN)
    assert status == 200 and answer["items"] == []


@pytest.mark.parametrize("claims", [{"exp": int(time.time()) - 3600},
                                    {"sub": "u-victim", "aud": "x", "exp": 1}],
                         ids=["expired", "expired-with-aud"])
async def test_an_expired_token_is_refused(client, worker_env, claims):
    status, answer, _ = await client.call("GET", "/v1/users/u-victim/notifications",
                                          headers=token_for(worker_env, "u-victim", **claims))
    assert status == 401 and "expired" in answer["error"]


async def test_a_token_signed_with_another_secret_or_unsigned_is_refused(client):
    forged = jwt.encode({"sub": "u-victim", "exp": int(time.time() + 3600)},
                        "another-secret-that-is-at-least-32-bytes!", algorithm="HS256")
    header, payload, _ = forged.split(".")
    for token, message in [(forged, "signature"), (f"{header}.{payload}.", "signature"),
                           (jwt.encode({"sub": "u-victim", "exp": int(time.time() + 3600)},
                                       None, algorithm="none"), "algorithm 'none'")]:
        status, answer, _ = await client.call("GET", "/v1/users/u-victim/notifications",
                                              headers={"Authorization": f"Bearer {token}"})
        assert status == 401 and message in answer["error"], answer


# --- injection ---------------------------------------------------------------------------

INJECTIONS = [
    "' OR '1'='1", "'; DROP TABLE notifications; --", "u-1' UNION SELECT id, user_id, "
    "category, priority, title, body, data::text, created_at, 'SENT', NULL FROM notifications--",
    "\\'; DELETE FROM deliveries; --", "1; UPDATE deliveries SET status='READ'", "%' OR 1=1 --",
    "$1", "a) OR (1=1", "' || pg_sleep(5) || '", "*/ SELECT 1 /*",
]


async def table_fingerprint(db) -> tuple[int, int, bool]:
    """Row counts (other tests' rows may still arrive: they only grow) and the schema."""
    return (await db.fetchval("SELECT count(*) FROM notifications"),
            await db.fetchval("SELECT count(*) FROM deliveries"),
            await db.fetchval("SELECT to_regclass('public.deliveries') IS NOT NULL"))


async def test_sql_injection_through_every_string_parameter_changes_nothing(
        client, worker_env, db, unique):
    # Given a user with one notification in the inbox, and another user's data
    victim = f"u-victim-{unique}"
    status, answer, _ = await client.call("POST", "/v1/notifications", headers=INGEST, json={
        "user_id": victim, "title": "secret", "body": "for the victim only",
        "channels": ["inapp"]})
    assert status == 202
    victim_note = answer["id"]

    async def listed():
        _, page, _ = await client.call("GET", f"/v1/users/{victim}/notifications",
                                       headers=ADMIN)
        return page["items"]
    await eventually(listed, what="the victim's notification in the inbox")
    before = await table_fingerprint(db)
    # When every string parameter carries injections
    for text in INJECTIONS:
        attacker = token_for(worker_env, text)
        calls = [
            ("GET", "/v1/users/{u}/notifications", {"q": text}, ADMIN),
            ("GET", "/v1/users/{u}/notifications", {"status": text}, ADMIN),
            ("GET", "/v1/users/{u}/notifications", {"limit": text}, ADMIN),
            ("GET", "/v1/users/{u}/notifications", {"cursor": text}, ADMIN),
            ("GET", "/v1/users/{u}/notifications",
             {"cursor": encode_cursor(datetime.now(timezone.utc), text)}, ADMIN),
            ("GET", "/v1/users/{u}/notifications/unread-count", None, ADMIN),
            ("POST", "/v1/users/{u}/notifications/{n}/read", None, ADMIN),
            ("POST", "/v1/users/{u}/notifications/read-all", None, ADMIN),
            ("GET", "/v1/users/{u}/notifications", {"q": text}, attacker),
        ]
        for method, template, params, headers in calls:
            quoted = urllib.parse.quote(text, safe="")
            path = template.replace("{u}", quoted).replace("{n}", quoted)
            status, answer, _ = await client.call(method, path, params=params,
                                                  headers=headers)
            # Then each is refused or answers an empty result, never someone's data
            assert status < 500, (method, path, params, status, answer)
            if status == 200 and "items" in answer:
                assert answer["items"] == [], (path, params, answer)
            if status == 200 and "unread" in answer:
                assert answer["unread"] == 0
            if status == 202:
                assert answer.get("marked", 0) == 0, (path, answer)
    # And the tables are intact: nothing deleted, nothing marked read, nothing dropped
    after = await table_fingerprint(db)
    assert after[0] >= before[0] and after[1] >= before[1] and after[2]
    assert await db.fetchval("SELECT title FROM notifications WHERE id = $1",
                             victim_note) == "secret"
    # And the victim's notification is still unread
    status, answer, _ = await client.call("GET", f"/v1/users/{victim}/notifications/unread-count",
                                          headers=ADMIN)
    assert answer == {"unread": 1}


# --- size limits ------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path", "headers"), [
    ("POST", "/v1/notifications", INGEST),
    ("PUT", "/v1/users/u-1/contacts", ADMIN),
    ("PUT", "/v1/users/u-1/preferences", ADMIN)])
async def test_a_body_over_the_limit_is_413_even_without_content_length(
        client, method, path, headers):
    big = b'{"user_id": "u-1", "title": "' + b"x" * 70_000 + b'"}'

    async def chunked():
        for start in range(0, len(big), 8192):
            yield big[start:start + 8192]
    for body in (big, chunked()):
        status, answer, _ = await client.call(method, path, headers=headers, data=body)
        assert status == 413 and "HERALD_MAX_BODY_BYTES" in answer["error"]


async def test_an_oversized_header_or_url_is_refused_by_the_server(worker):
    # aiohttp's parser limits a header field and the request line to 8190 bytes.
    async with aiohttp.ClientSession() as session:
        async with session.get(worker.url + "/v1/users/u-1/notifications",
                               headers={"Authorization": "Bearer " + "x" * 9000}) as answer:
            assert 400 <= answer.status < 500
        async with session.get(worker.url + "/v1/users/" + "u" * 9000) as answer:
            assert 400 <= answer.status < 500


# --- ingest rate limit ------------------------------------------------------------------

async def test_ingest_is_rate_limited_per_api_key(client, unique):
    # Given the key test-limited at 0.2 requests/s with a burst of 3 (conftest)
    body = {"user_id": f"u-{unique}", "title": "rate", "channels": ["inapp"]}
    answers = [await client.call("POST", "/v1/notifications", headers=LIMITED, json=body)
               for _ in range(4)]
    # Then the burst passes and the next is 429 with a Retry-After
    assert [status for status, _, _ in answers] == [202, 202, 202, 429]
    _, error, headers = answers[3]
    assert "test-limited" in error["error"] and "HERALD_INGEST_RATE" in error["error"]
    assert 1 <= int(headers["Retry-After"]) <= 5
    # And another key is not affected
    status, _, _ = await client.call("POST", "/v1/notifications", headers=INGEST, json=body)
    assert status == 202


# --- secrets in logs ----------------------------------------------------------------------

async def test_secrets_and_contact_details_never_reach_the_log(
        worker, worker_env, producer, db, unique, client, fakes):
    # Given a user with a phone number, an email address and a push token
    user = f"u-{unique}"
    phone = "+3361" + str(secrets.randbelow(10 ** 7)).zfill(7)
    email = f"secret-{unique}@example.org"
    push_token = secrets.token_hex(32)
    await produce(producer, "user-updates", user, {
        "user_id": user, "phone": phone, "email": email,
        "push_tokens": [{"token": push_token, "platform": "apns"}]})

    async def known():
        status, body = worker.get(f"/v1/tables/contacts/{user}")
        return status == 200 and body["value"]["phone"] == phone
    await eventually(known, what="the contacts applied")
    # When a notification goes out on every channel (real SDKs against the fakes),
    # one is refused for a bad phone, and the API is called with credentials
    nid = f"n-{unique}"
    await produce(producer, "notifications", user, {
        "id": nid, "user_id": user, "title": "Code", "body": "Your code is 424242",
        "channels": ["push", "email", "sms", "inapp"]})
    await produce(producer, "user-updates", f"bad-{unique}",
                  {"user_id": user, "phone": phone + "9999999"})
    # and the providers refuse another user's phone and email, quoting them in their errors
    refused_user, refused_nid = f"u-refused-{unique}", f"n-refused-{unique}"
    refused_phone = "+3362" + str(secrets.randbelow(10 ** 7)).zfill(7)
    refused_email = f"refused-{unique}@example.org"
    fakes["twilio"].script("invalid", address=refused_phone)
    fakes["sendgrid"].script("invalid", address=refused_email)
    await produce(producer, "user-updates", refused_user, {
        "user_id": refused_user, "phone": refused_phone, "email": refused_email})

    async def refused_known():
        status, body = worker.get(f"/v1/tables/contacts/{refused_user}")
        return status == 200 and body["value"]["email"] == refused_email
    await eventually(refused_known, what="the refused user's contacts applied")
    await produce(producer, "notifications", refused_user, {
        "id": refused_nid, "user_id": refused_user, "title": "Code", "channels": ["sms", "email"]})
    for headers in (ADMIN, INGEST, token_for(worker_env, user)):
        await client.call("GET", f"/v1/users/{user}/notifications/unread-count",
                          headers=headers)

    async def all_sent():
        rows = await db.fetch("SELECT channel, status FROM deliveries"
                              " WHERE notification_id = $1", nid)
        return {row["channel"]: row["status"] for row in rows} == {
            "push": "SENT", "email": "SENT", "sms": "SENT", "inapp": "SENT"}
    await eventually(all_sent, what="the notification SENT on every channel")

    async def refused_dead():
        rows = await db.fetch("SELECT channel, status, last_error FROM deliveries"
                              " WHERE notification_id = $1", refused_nid)
        return len(rows) == 2 and all(row["status"] == "DEAD" for row in rows) and rows
    rows = await eventually(refused_dead, what="the refused sms and email DEAD")
    # (the error still says which address, masked)
    assert any("+336***" in (row["last_error"] or "") for row in rows), rows
    # Then the worker's log holds no secret, token or full contact detail
    log = Path(worker.log_path).read_text(errors="replace")
    apns_key = Path(worker_env["HERALD_APNS_KEY"]).read_text()
    key_lines = [line for line in apns_key.splitlines() if line and "-----" not in line]
    forbidden = {
        "SendGrid API key": worker_env["HERALD_SENDGRID_API_KEY"],
        "Twilio auth token": worker_env["HERALD_TWILIO_AUTH_TOKEN"],
        "JWT secret": worker_env["HERALD_JWT_SECRET"],
        "admin API key": "test-admin-key", "ingest API key": "test-ingest-key",
        "phone number": phone, "phone digits": phone[1:], "email address": email,
        "refused phone": refused_phone[1:], "refused email": refused_email,
        "push token": push_token, "user JWT": token_for(worker_env, user)["Authorization"][7:],
        **{f"APNs key line {i}": line for i, line in enumerate(key_lines)},
    }
    leaks = {what: _context(log, value) for what, value in forbidden.items() if value in log}
    assert not leaks, leaks


def _context(log: str, value: str) -> str:
    at = log.index(value)
    return log[max(0, at - 120):at + len(value) + 40]


# --- the gateway (WebSocket, SSE, GraphQL) ------------------------------------------------

GATEWAY_PARAMS = ["access_token", "user_id", "last_id"]


@pytest.mark.parametrize("path", ["/v1/ws", "/v1/sse"])
async def test_gateway_handshakes_with_hostile_parameters_are_refused_not_failed(
        worker, worker_env, path):
    # Given hostile values in every parameter, with and without a valid token
    from tests.fuzz.strategies import NASTY_STRINGS
    valid = token_for(worker_env, "u-gw")["Authorization"][7:]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        for text in [t for t in NASTY_STRINGS if len(t) < 400] + ["\udcff"]:
            for name in GATEWAY_PARAMS:
                params = {"access_token": valid, name: text.encode(
                    "utf-8", "surrogatepass").decode("utf-8", "replace")}
                async with session.get(worker.url + path, params=params,
                                       headers={"Accept": "text/event-stream"}) as answer:
                    # Then each is a 4xx with a reason, or a session that opens (SSE)
                    assert answer.status < 500, (path, name, text, answer.status)
                    if answer.status >= 400:
                        assert (await answer.json(content_type=None))["error"]


async def test_a_user_cannot_mark_another_users_notification_over_a_socket(
        worker, worker_env, producer, db, unique):
    # Given alice's notification, SENT and in her inbox
    alice, bob = f"alice-{unique}", f"bob-{unique}"
    nid = f"n-alice-{unique}"
    await produce(producer, "notifications", alice, {"id": nid, "user_id": alice,
                                                     "title": "alice only",
                                                     "channels": ["inapp"]})

    async def sent():
        return await db.fetchval("SELECT status FROM deliveries WHERE notification_id = $1"
                                 " AND channel = 'inapp'", nid) == "SENT"
    await eventually(sent, what="alice's notification SENT")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        # When bob sends read for it on his WebSocket, and markRead over GraphQL
        bob_token = token_for(worker_env, bob)["Authorization"][7:]
        ws = await session.ws_connect(worker.url + "/v1/ws", params={"access_token": bob_token})
        assert (await ws.receive_json())["type"] == "welcome"
        await ws.send_json({"type": "read", "id": nid})
        frame = await ws.receive_json()
        while frame["type"] != "error":
            frame = await ws.receive_json()
        assert "not in the inbox" in frame["error"]
        await ws.close()
        gql = await session.ws_connect(worker.url + "/v1/ws",
                                       protocols=("graphql-transport-ws",))
        await gql.send_json({"type": "connection_init", "payload": {"token": bob_token}})
        assert (await gql.receive_json())["type"] == "connection_ack"
        await gql.send_json({"id": "1", "type": "subscribe", "payload": {
            "query": "mutation($id: ID!) { markRead(id: $id) }", "variables": {"id": nid}}})
        answer = await gql.receive_json()
        assert answer["type"] == "error" or answer["payload"].get("errors"), answer
        await gql.close()
    # Then alice's notification is still SENT (not READ)
    assert await db.fetchval("SELECT status FROM deliveries WHERE notification_id = $1"
                             " AND channel = 'inapp'", nid) == "SENT"


async def test_a_socket_token_in_the_query_string_is_not_logged(worker, worker_env, unique):
    token = token_for(worker_env, f"u-ws-{unique}")["Authorization"][7:]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        ws = await session.ws_connect(worker.url + "/v1/ws", params={"access_token": token})
        assert (await ws.receive_json())["type"] == "welcome"
        await ws.close()
        async with session.get(worker.url + "/v1/ws",
                               params={"access_token": token + "x"}) as refused:
            assert refused.status == 401
    log = Path(worker.log_path).read_text(errors="replace")
    assert token not in log
