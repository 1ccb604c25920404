"""The gateway's decisions: who a session is for, client messages, the hub, SSE framing."""

from __future__ import annotations

import json
import time

import jwt
import pytest

from app.auth import ApiKey, AuthConfig, AuthError
from app.gateway import (
    SENT_MEMORY, SESSION_QUEUE, Hub, Session, client_command, session_user, sse_event,
)
from app.subscriptions import credentials

SECRET = "a-test-secret-that-is-long-enough-for-hs256"
CONFIG = AuthConfig(api_keys=(ApiKey("ops", "admin-key", frozenset({"admin"})),
                              ApiKey("svc", "ingest-key", frozenset({"ingest"}))),
                    jwt_secret=SECRET)


def token(user: str, expires_in: float = 86400) -> str:
    return jwt.encode({"sub": user, "exp": int(time.time() + expires_in)}, SECRET, algorithm="HS256")


def test_a_users_token_opens_that_users_session_from_header_or_query():
    assert session_user(CONFIG, {"Authorization": f"Bearer {token('u-1')}"}, {}) == "u-1"
    assert session_user(CONFIG, {}, {"access_token": token("u-1")}) == "u-1"
    assert session_user(CONFIG, {}, {"access_token": token("u-1"), "user_id": "u-1"}) == "u-1"


@pytest.mark.parametrize("headers, query, status, words", [
    ({}, {}, 401, "missing credentials"),
    ({}, {"access_token": "x.y.z"}, 401, "malformed token"),
    ({}, {"access_token": token("u-1", expires_in=-3600)}, 401, "expired"),
    ({}, {"access_token": token("u-1"), "user_id": "u-2"}, 403, "may not access"),
    ({"X-API-Key": "ingest-key"}, {"user_id": "u-1"}, 403, "admin"),
    ({"X-API-Key": "admin-key"}, {}, 400, "?user_id="),
])
def test_sessions_are_refused_with_a_reason(headers, query, status, words):
    with pytest.raises(AuthError) as refused:
        session_user(CONFIG, headers, query)
    assert refused.value.status == status and words in refused.value.message


def test_an_admin_key_opens_the_session_it_names():
    assert session_user(CONFIG, {"X-API-Key": "admin-key"}, {"user_id": "u-9"}) == "u-9"


@pytest.mark.parametrize("text, expected", [
    ('{"type": "ack", "id": "n-1"}', ("ack", "n-1")),
    ('{"type": "read", "id": "n-1", "extra": true}', ("read", "n-1")),
    ('{"type": "ping"}', ("ping", None)),
])
def test_client_commands(text, expected):
    assert client_command(text) == expected


@pytest.mark.parametrize("text, words", [
    ("ack n-1", "not JSON"),
    ("[1, 2]", "JSON object"),
    ('{"type": "delete", "id": "n-1"}', "unknown message type 'delete'"),
    ('{"type": "ack"}', "'id' must be"),
    ('{"type": "ack", "id": 42}', "'id' must be"),
    ('{"type": "ack", "id": "' + "x" * 201 + '"}', "id: must be 1 to 200"),
])
def test_bad_client_messages_say_what_is_wrong(text, words):
    with pytest.raises(ValueError, match=None) as refused:
        client_command(text)
    assert words in str(refused.value)


def live(frame_id: str, user: str = "u-1") -> dict[str, str]:
    return {"type": "notification", "id": frame_id, "user_id": user,
            "created_at": "2026-11-21T10:00:00+00:00"}


def test_the_hub_hands_frames_to_every_session_of_the_user_only():
    hub = Hub()
    phone, laptop, other = Session("u-1", "websocket"), Session("u-1", "sse"), Session("u-2", "sse")
    assert hub.attach(phone) is True and hub.attach(laptop) is False and hub.attach(other)
    hub.publish(live("n-1"), now=100.0)
    assert phone.queue.get_nowait()["id"] == laptop.queue.get_nowait()["id"] == "n-1"
    assert other.queue.empty()
    # first and last session of a user decide connect / disconnect
    assert hub.detach(phone) is False and hub.detach(laptop) is True
    assert "u-1" not in hub.sessions


def test_the_hub_keeps_recent_frames_per_user_for_a_while():
    hub = Hub()
    hub.publish(live("n-1"), now=100.0)
    hub.publish(live("n-2", "u-2"), now=350.0)
    assert hub.find_recent("u-1", "n-1")["id"] == "n-1"
    assert hub.find_recent("u-2", "n-1") is None  # another user's id is not theirs
    hub.prune(now=450.0)
    assert hub.recent_frames("u-1") == [] and [f["id"] for f in hub.recent_frames("u-2")] == ["n-2"]


def test_a_session_sends_each_id_once_and_remembers_a_bounded_number():
    session = Session("u-1", "websocket")
    assert session.first_time(live("n-1")) and not session.first_time(live("n-1"))
    for i in range(SENT_MEMORY + 5):
        session.first_time(live(f"m-{i}"))
    assert len(session.sent) == SENT_MEMORY and "n-1" not in session.sent


def test_a_session_too_slow_to_keep_up_is_stopped_with_its_queue_dropped():
    session = Session("u-1", "websocket")
    for i in range(SESSION_QUEUE + 1):
        session.offer(live(f"n-{i}"))
    assert session.stopped == "overflow"
    assert session.queue.qsize() == 1 and session.queue.get_nowait()["type"] == "stop"


def test_sse_events_carry_the_notification_id_for_last_event_id():
    event = sse_event(live("n-1")).decode()
    assert event.startswith("id: n-1\nevent: notification\ndata: ") and event.endswith("\n\n")
    assert json.loads(event.split("data: ", 1)[1])["id"] == "n-1"
    assert not sse_event({"type": "welcome", "node_id": "a"}).startswith(b"id:")


@pytest.mark.parametrize("payload, header", [
    ({"token": "T"}, "Bearer T"),
    ({"Authorization": "Bearer T"}, "Bearer T"),
    (None, None),
    ({"token": 42}, None),
])
def test_graphql_connection_init_credentials(payload, header):
    headers, query = credentials(payload, {"access_token": "Q", "other": "x"})
    assert headers.get("Authorization") == header
    assert query == {"access_token": "Q"}


@pytest.mark.parametrize("text", ['{"type": "ack", "id": "n\\u0000x"}', '{"type": "ack", "id": ""}',
                                  '{"type": "read", "id": "a\\u001fb"}'])
def test_ids_postgresql_could_not_store_are_refused(text):
    with pytest.raises(ValueError):
        client_command(text)


def test_a_user_id_that_cannot_be_an_id_is_a_400():
    with pytest.raises(AuthError) as refused:
        session_user(CONFIG, {"X-API-Key": "admin-key"}, {"user_id": "u\x00"})
    assert refused.value.status == 400 and "NUL" in refused.value.message
