"""The REST API against a real worker, broker and database: ingest, inbox, profile, auth."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any, AsyncIterator

import aiohttp
import jwt
import pytest

from app.openapi import ROUTES
from tests.integration.conftest import eventually

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": "Bearer test-admin-key"}
INGEST = {"X-API-Key": "test-ingest-key"}


def user_token(worker_env: dict[str, str], user: str, expires_in: float = 300) -> dict[str, str]:
    token = jwt.encode({"sub": user, "exp": int(time.time() + expires_in)},
                       worker_env["HERALD_JWT_SECRET"], algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


class Api:
    """A small JSON client of the worker's REST API."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session, self.base = session, base

    async def call(self, method: str, path: str, *, headers: dict[str, str] | None = None,
                   json: Any = None, data: bytes | None = None,
                   params: dict[str, str] | None = None) -> tuple[int, Any]:
        async with self.session.request(method, self.base + path, headers=headers, json=json,
                                        data=data, params=params) as response:
            return response.status, await response.json(content_type=None)


@pytest.fixture
async def api(worker) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield Api(session, worker.url)


async def status_of(db, notification_id: str, channel: str) -> str | None:
    return await db.fetchval("SELECT status FROM deliveries WHERE notification_id = $1"
                             " AND channel = $2", notification_id, channel)


async def wait_status(db, notification_id: str, channel: str, status: str) -> None:
    async def reached():
        return await status_of(db, notification_id, channel) == status
    await eventually(reached, what=f"{notification_id}/{channel} {status}")


async def ingest(api: Api, body: dict[str, Any]) -> str:
    status, answer = await api.call("POST", "/v1/notifications", headers=INGEST, json=body)
    assert status == 202, answer
    return str(answer["id"])


async def inbox_of(api: Api, worker_env, user: str, notes: list[dict[str, Any]]) -> list[str]:
    """Ingest in-app notifications for ``user``, oldest first, and wait until all are SENT."""
    ids = [await ingest(api, {"user_id": user, "channels": ["inapp"], **note}) for note in notes]
    async def all_listed():
        status, page = await api.call("GET", f"/v1/users/{user}/notifications",
                                      headers=user_token(worker_env, user))
        return status == 200 and {item["id"] for item in page["items"]} == set(ids)
    await eventually(all_listed, what=f"{len(ids)} notifications in {user}'s inbox")
    return ids


async def test_ingest_is_accepted_and_the_notification_is_sent(api, db, unique):
    # Given a valid notification without an id
    user = f"u-{unique}"
    # When a service posts it with an ingest key
    nid = await ingest(api, {"user_id": user, "title": "Hello", "body": "From the API",
                             "channels": ["inapp"], "unknown_field": "kept"})
    # Then it gets an id and is delivered like one produced to Kafka
    await wait_status(db, nid, "inapp", "SENT")
    row = await db.fetchrow("SELECT user_id, title, body FROM notifications WHERE id = $1", nid)
    assert tuple(row) == (user, "Hello", "From the API")


async def test_an_explicit_id_is_kept(api, db, unique):
    nid = await ingest(api, {"id": f"n-{unique}", "user_id": f"u-{unique}", "title": "Hi",
                             "channels": ["inapp"]})
    assert nid == f"n-{unique}"
    await wait_status(db, nid, "inapp", "SENT")


@pytest.mark.parametrize(("body", "message"), [
    (b'{"user_id": 42, "title": "x"}', "user_id: expected a string, got int"),
    (b'{"title": "no user"}', "user_id: required"),
    (b'{"user_id": "u-1", "title": "x", "channels": ["fax"]}', "channels: unknown channel 'fax'"),
    (b"not json", "value: not JSON"),
])
async def test_a_bad_body_is_refused_naming_the_field(api, body, message):
    status, answer = await api.call("POST", "/v1/notifications", headers=INGEST, data=body)
    assert status == 400
    assert message in answer["error"]


@pytest.mark.parametrize(("headers", "status", "message"), [
    ({}, 401, "missing credentials"),
    ({"Authorization": "Bearer wrong-key"}, 401, "invalid API key"),
    ({"X-API-Key": "wrong-key"}, 401, "invalid API key"),
    ({"Authorization": "Token test-ingest-key"}, 401, "malformed Authorization header"),
])
async def test_ingest_without_a_valid_key_is_unauthorized(api, headers, status, message):
    code, answer = await api.call("POST", "/v1/notifications", headers=headers,
                                  json={"user_id": "u-1", "title": "x"})
    assert code == status and message in answer["error"]


async def test_an_end_user_token_cannot_ingest(api, worker_env):
    code, answer = await api.call("POST", "/v1/notifications",
                                  headers=user_token(worker_env, "u-1"),
                                  json={"user_id": "u-1", "title": "x"})
    assert code == 403 and "ingest" in answer["error"]


async def test_an_oversize_body_is_refused(api):
    body = {"user_id": "u-1", "title": "big", "body": "x" * 70000}
    code, answer = await api.call("POST", "/v1/notifications", headers=INGEST, json=body)
    assert code == 413 and "65536" in answer["error"]


async def test_inbox_lists_newest_first_with_a_working_cursor(api, worker_env, unique):
    # Given three notifications created a minute apart
    user = f"u-{unique}"
    start = datetime.now(timezone.utc) - timedelta(minutes=10)
    ids = await inbox_of(api, worker_env, user, [
        {"title": f"Note {i}", "created_at": (start + timedelta(minutes=i)).isoformat()}
        for i in range(3)])
    headers = user_token(worker_env, user)
    # When the user reads two at a time
    code, first = await api.call("GET", f"/v1/users/{user}/notifications", headers=headers,
                                 params={"limit": "2"})
    assert code == 200
    # Then the newest come first and the cursor leads to the rest
    assert [item["id"] for item in first["items"]] == [ids[2], ids[1]]
    assert first["next_cursor"]
    code, second = await api.call("GET", f"/v1/users/{user}/notifications", headers=headers,
                                  params={"limit": "2", "cursor": first["next_cursor"]})
    assert code == 200
    assert [item["id"] for item in second["items"]] == [ids[0]]
    assert second["next_cursor"] is None
    assert second["items"][0]["read"] is False and second["items"][0]["title"] == "Note 0"


async def test_inbox_parameters_are_checked(api, worker_env):
    headers = user_token(worker_env, "u-1")
    for params, message in [({"limit": "0"}, "limit:"), ({"status": "new"}, "status:"),
                            ({"cursor": "garbage"}, "cursor:")]:
        code, answer = await api.call("GET", "/v1/users/u-1/notifications", headers=headers,
                                      params=params)
        assert code == 400 and message in answer["error"], (params, answer)


async def test_mark_read_then_read_all_update_the_unread_count(api, worker_env, db, unique):
    # Given three unread notifications
    user = f"u-{unique}"
    ids = await inbox_of(api, worker_env, user, [{"title": f"N{i}"} for i in range(3)])
    headers = user_token(worker_env, user)
    code, answer = await api.call("GET", f"/v1/users/{user}/notifications/unread-count",
                                  headers=headers)
    assert (code, answer) == (200, {"unread": 3})
    # When one is marked read
    code, _ = await api.call("POST", f"/v1/users/{user}/notifications/{ids[0]}/read",
                             headers=headers)
    assert code == 202
    # Then it becomes READ in PostgreSQL and the unread count drops
    await wait_status(db, ids[0], "inapp", "READ")

    def unread(count: int):
        async def check():
            _, body = await api.call("GET", f"/v1/users/{user}/notifications/unread-count",
                                     headers=headers)
            return body == {"unread": count}
        return check
    await eventually(unread(2), what="unread count 2")
    _, page = await api.call("GET", f"/v1/users/{user}/notifications", headers=headers,
                             params={"status": "unread"})
    assert {item["id"] for item in page["items"]} == set(ids[1:])
    # When the rest are marked read at once
    code, answer = await api.call("POST", f"/v1/users/{user}/notifications/read-all",
                                  headers=headers)
    assert (code, answer) == (202, {"marked": 2})
    # Then none is unread
    await eventually(unread(0), what="unread count 0")
    for nid in ids:
        assert await status_of(db, nid, "inapp") == "READ"


async def test_marking_a_notification_outside_the_inbox_is_not_found(api, worker_env, unique):
    user = f"u-{unique}"
    code, answer = await api.call("POST", f"/v1/users/{user}/notifications/n-nope/read",
                                  headers=user_token(worker_env, user))
    assert code == 404 and "n-nope" in answer["error"]


async def test_search_finds_a_notification_by_a_word_of_its_body(api, worker_env, unique):
    user = f"u-{unique}"
    word = f"zebra{unique}"
    ids = await inbox_of(api, worker_env, user, [
        {"title": "Weekly report", "body": f"The {word} numbers are in"},
        {"title": "Other", "body": "Nothing to see"}])
    code, page = await api.call("GET", f"/v1/users/{user}/notifications",
                                headers=user_token(worker_env, user), params={"q": word})
    assert code == 200
    assert [item["id"] for item in page["items"]] == [ids[0]]


@pytest.mark.parametrize("path", ["/notifications", "/notifications/unread-count"])
async def test_a_token_for_another_user_is_forbidden(api, worker_env, path):
    code, answer = await api.call("GET", f"/v1/users/u-bob{path}",
                                  headers=user_token(worker_env, "u-alice"))
    assert code == 403 and "u-alice" in answer["error"] and "u-bob" in answer["error"]


async def test_an_expired_token_is_unauthorized(api, worker_env):
    code, answer = await api.call("GET", "/v1/users/u-1/notifications",
                                  headers=user_token(worker_env, "u-1", expires_in=-3600))
    assert code == 401 and answer == {"error": "expired token"}


async def test_an_admin_key_reads_any_inbox_and_an_ingest_key_does_not(api):
    code, _ = await api.call("GET", "/v1/users/u-1/notifications/unread-count", headers=ADMIN)
    assert code == 200
    code, answer = await api.call("GET", "/v1/users/u-1/notifications/unread-count",
                                  headers=INGEST)
    assert code == 403 and "admin" in answer["error"]


async def test_put_contacts_then_an_email_is_sent(api, worker, worker_env, db, unique):
    # Given the user registers an email address through the API
    user = f"u-{unique}"
    code, _ = await api.call("PUT", f"/v1/users/{user}/contacts",
                             headers=user_token(worker_env, user),
                             json={"email": f"{user}@example.org"})
    assert code == 202

    async def known():
        status, body = worker.get(f"/v1/tables/contacts/{user}")
        return status == 200 and body["value"]["email"] == f"{user}@example.org"
    await eventually(known, what="the contacts update applied")
    # When a notification asks for email
    nid = await ingest(api, {"user_id": user, "title": "Receipt", "channels": ["email"]})
    # Then it is sent (the SendGrid fake accepts)
    await wait_status(db, nid, "email", "SENT")


async def test_put_preferences_is_applied(api, worker, worker_env, unique):
    user = f"u-{unique}"
    prefs = {"categories": {"marketing": {"email": False}},
             "quiet_hours": {"start": "22:00", "end": "07:00"}}
    code, _ = await api.call("PUT", f"/v1/users/{user}/preferences", headers=ADMIN,
                             json={"preferences": prefs, "timezone": "Europe/Paris"})
    assert code == 202

    async def applied():
        status, body = worker.get(f"/v1/tables/preferences/{user}")
        return status == 200 and body["value"]
    value = await eventually(applied, what="the preferences update applied")
    assert "marketing" in str(value)


@pytest.mark.parametrize(("path", "body", "message"), [
    ("contacts", {"email": "not-an-email"}, "email: not an email address"),
    ("contacts", {"phone": "0612"}, "phone: expected E.164"),
    ("contacts", {"preferences": {}}, "preferences: not accepted here"),
    ("contacts", {}, "body: expected at least one of"),
    ("preferences", {"timezone": "Mars/Olympus"}, "timezone: unknown time zone"),
    ("preferences", {"preferences": {"quiet_hours": {"start": "25:00", "end": "07:00"}}},
     "preferences.quiet_hours.start"),
    ("preferences", {"user_id": "someone-else", "locale": "fr"}, "user_id: 'someone-else'"),
])
async def test_a_bad_profile_update_is_refused_naming_the_field(api, worker_env, path, body,
                                                                message):
    code, answer = await api.call("PUT", f"/v1/users/u-1/{path}",
                                  headers=user_token(worker_env, "u-1"), json=body)
    assert code == 400 and message in answer["error"], answer


async def test_the_openapi_document_lists_every_route(api):
    code, document = await api.call("GET", "/v1/openapi.json")
    assert code == 200 and document["openapi"] == "3.1.0"
    assert set(document["paths"]) == {path for path, _ in ROUTES.values()}
