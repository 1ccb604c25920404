"""Delivery on the real broker, through the real provider SDKs, against local fakes."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from tests.integration.conftest import eventually, produce, read_matching, read_topic

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def clean_fakes(fakes):
    yield
    for name in ("sendgrid", "twilio"):
        fakes[name].script("reset")


async def deliveries(db, nid: str) -> dict[str, dict]:
    found = await db.fetch("SELECT * FROM deliveries WHERE notification_id = $1", nid)
    return {row["channel"]: dict(row) for row in found}


async def contact(producer, user: str, **fields) -> None:
    await produce(producer, "user-updates", user, {"user_id": user, **fields})


def sent_for(fake, nid: str) -> list[dict]:
    return [m for m in fake.received() if nid in json.dumps(m)]


async def test_transient_failure_then_success_through_the_retry_topic(
        worker, fakes, producer, db, unique):
    # Given SendGrid answers 503 once
    fakes["sendgrid"].script("fail_next", n=1, status=503)
    user, nid = f"u-{unique}", f"n-{unique}"
    await contact(producer, user, email=f"{user}@example.org")
    # When an email goes out
    await produce(producer, "notifications", user, {
        "id": nid, "user_id": user, "title": "Receipt", "body": "Thanks", "channels": ["email"]})

    # Then it is retried through deliveries.email.retry.1 and sent on attempt 2
    async def sent():
        row = (await deliveries(db, nid)).get("email")
        return row if row and row["status"] == "SENT" else None
    row = await eventually(sent, what="SENT after a retry")
    assert row["attempts"] == 2 and "503" in row["last_error"]
    trail = await db.fetch("SELECT status, attempts, at FROM delivery_events"
                           " WHERE notification_id = $1 AND channel = 'email' ORDER BY at", nid)
    assert [(r["status"], r["attempts"]) for r in trail] == [("QUEUED", 0), ("QUEUED", 1), ("SENT", 2)]
    # And the wait matched the configured first delay (1 s, ±20 % jitter) plus handling
    waited = (trail[2]["at"] - trail[1]["at"]).total_seconds()
    assert 0.8 <= waited <= 4.0, waited
    assert len(sent_for(fakes["sendgrid"], nid)) == 1


async def test_retries_exhausted_dead_letters_and_the_fallback_delivers(
        worker, worker_env, fakes, producer, db, unique):
    # Given Twilio is down for longer than the retries last (delays 1 s, 2 s)
    fakes["twilio"].script("fail_for", seconds=12, status=503)
    user, nid = f"u-{unique}", f"n-{unique}"
    await contact(producer, user, email=f"{user}@example.org", phone="+33612345678")
    # When an SMS with an email fallback goes out
    await produce(producer, "notifications", user, {
        "id": nid, "user_id": user, "title": "Code", "body": "123456", "channels": ["sms"],
        "fallback": ["sms", "email"]})

    # Then the SMS is dead after its last attempt and the email fallback is sent
    async def settled():
        rows = await deliveries(db, nid)
        done = rows.get("sms", {}).get("status") == "DEAD" and \
            rows.get("email", {}).get("status") == "SENT"
        return rows if done else None
    rows = await eventually(settled, what="sms DEAD, email SENT")
    assert rows["sms"]["attempts"] == 3 and rows["sms"]["reason"] == "retries exhausted"
    letter = await read_topic(worker_env["HERALD_KAFKA_BOOTSTRAP"], "deliveries.dlq",
                              lambda v: (v.get("delivery") or {}).get("notification_id") == nid)
    assert letter["reason"] == "retries exhausted" and letter["attempts"] == 3
    assert "503" in letter["error"] and letter["topic"] == "deliveries.sms"


async def test_breaker_opens_under_an_outage_and_failover_delivers(
        worker, fakes, producer, db, unique):
    # Given SendGrid is down
    fakes["sendgrid"].script("fail_for", seconds=20, status=503)
    ids = [f"n{i}-{unique}" for i in range(4)]
    for i, nid in enumerate(ids):
        user = f"u{i}-{unique}"
        await contact(producer, user, email=f"{user}@example.org")
        await produce(producer, "notifications", user, {
            "id": nid, "user_id": user, "title": "Invoice", "channels": ["email"]})

    # Then the breaker opens and SMTP, the failover provider, delivers them all
    async def all_sent():
        rows = [(await deliveries(db, nid)).get("email") for nid in ids]
        return rows if all(row and row["status"] == "SENT" for row in rows) else None
    rows = await eventually(all_sent, what="all four emails SENT")
    assert all(row["provider_message_id"].endswith("@herald>") for row in rows)
    # And the breaker's state is exported
    status, text = _metrics(worker)
    assert status == 200 and 'herald_circuit_state{provider="sendgrid"} 2.0' in text
    assert 'herald_status_changes_total{channel="email",status="SENT"}' in text
    assert 'herald_sent_latency_seconds_count{channel="email"}' in text
    # (a restart closes the in-memory breakers again for the tests after this one)
    worker.stop()
    worker.start()


def _metrics(worker) -> tuple[int, str]:
    with urllib.request.urlopen(worker.url + "/metrics", timeout=5) as response:
        return response.status, response.read().decode()


@pytest.mark.timeout(240)
async def test_sigkill_between_send_and_commit_sends_exactly_once(
        worker, fakes, producer, db, unique):
    # Given SendGrid accepts the message, then holds its answer
    fakes["sendgrid"].script("accept_then_hang", seconds=20, n=1)
    user, nid = f"u-{unique}", f"n-{unique}"
    await contact(producer, user, email=f"{user}@example.org")
    await produce(producer, "notifications", user, {
        "id": nid, "user_id": user, "title": "Once", "channels": ["email"]})

    async def accepted():
        return len(sent_for(fakes["sendgrid"], nid)) == 1
    await eventually(accepted, what="SendGrid to accept the message")
    # When the worker is killed before it hears back (so before any commit)
    worker.kill()
    worker.start()

    # Then, Kafka having redelivered the record, it is not sent again
    async def resolved():
        row = (await deliveries(db, nid)).get("email")
        return row if row and row["status"] == "DEAD" else None
    row = await eventually(resolved, timeout=120, what="the redelivery resolved")
    assert row["reason"] == "outcome unknown"
    assert len(sent_for(fakes["sendgrid"], nid)) == 1


async def test_a_delivery_redelivered_in_the_same_batch_is_sent_once(
        worker, worker_env, fakes, producer, unique):
    # Given one delivery record written twice in one produce request, as a
    # redelivery after a crash lands: both reach the agent in one batch
    user, nid = f"u-{unique}", f"n-{unique}"
    delivery = {"notification_id": nid, "user_id": user, "channel": "email",
                "address": f"{user}@example.org", "title": "Twice", "body": "in one batch",
                "category": "general", "priority": "normal",
                "created_at": "2026-01-01T00:00:00+00:00", "lane": "bulk"}
    for _ in range(2):
        await producer.send("deliveries.email", key=user.encode(),
                            value=json.dumps(delivery).encode())
    await producer.flush()

    # Then both copies end SENT: the second finds the first one's outcome and
    # is not taken for an interrupted send (which would be DEAD "outcome unknown")
    events = await read_matching(
        worker_env["HERALD_KAFKA_BOOTSTRAP"], "delivery-events",
        lambda e: e.get("notification_id") == nid and e.get("channel") == "email", wanted=2)
    assert [e["status"] for e in events] == ["SENT", "SENT"]
    # And SendGrid heard of it once
    assert len(sent_for(fakes["sendgrid"], nid)) == 1


async def test_twilio_status_callback_marks_the_sms_delivered(worker, fakes, producer, db, unique):
    from twilio.request_validator import RequestValidator

    user, nid = f"u-{unique}", f"n-{unique}"
    await contact(producer, user, phone="+33612345678")
    await produce(producer, "notifications", user, {
        "id": nid, "user_id": user, "title": "Hi", "channels": ["sms"]})

    async def sent():
        row = (await deliveries(db, nid)).get("sms")
        return row if row and row["status"] == "SENT" else None
    row = await eventually(sent, what="sms SENT")
    url = f"{worker.url}/v1/webhooks/twilio?notification_id={nid}&channel=sms"
    params = {"MessageSid": row["provider_message_id"], "MessageStatus": "delivered"}
    # A forged callback is refused
    assert _post_form(url, params, "forged") == 403
    # A signed one is accepted and moves the row to DELIVERED
    signature = RequestValidator("twilio-token").compute_signature(url, params)
    assert _post_form(url, params, signature) == 200

    async def delivered():
        return (await deliveries(db, nid))["sms"]["status"] == "DELIVERED"
    await eventually(delivered, what="DELIVERED from the callback")


async def test_sendgrid_bounce_event_marks_the_email_failed(
        worker, producer, db, unique, webhook_key):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    user, nid = f"u-{unique}", f"n-{unique}"
    await contact(producer, user, email=f"{user}@example.org")
    await produce(producer, "notifications", user, {
        "id": nid, "user_id": user, "title": "Hi", "channels": ["email"]})

    async def sent():
        row = (await deliveries(db, nid)).get("email")
        return row if row and row["status"] == "SENT" else None
    await eventually(sent, what="email SENT")
    payload = json.dumps([{"event": "bounce", "herald_notification_id": nid,
                           "herald_channel": "email", "reason": "550 mailbox unavailable"}])
    timestamp = str(int(time.time()))
    signature = base64.b64encode(webhook_key.sign((timestamp + payload).encode(),
                                                  ec.ECDSA(hashes.SHA256()))).decode()
    url = f"{worker.url}/v1/webhooks/sendgrid"
    assert _post_json(url, payload, timestamp, "AAAA") == 403
    assert _post_json(url, payload, timestamp, signature) == 200

    async def failed():
        row = (await deliveries(db, nid))["email"]
        return row if row["status"] == "FAILED" else None
    row = await eventually(failed, what="FAILED from the bounce")
    assert row["last_error"] == "550 mailbox unavailable"


def _post(url: str, data: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=data, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _post_form(url: str, params: dict[str, str], signature: str) -> int:
    return _post(url, urllib.parse.urlencode(params).encode(),
                 {"Content-Type": "application/x-www-form-urlencoded",
                  "X-Twilio-Signature": signature})


def _post_json(url: str, payload: str, timestamp: str, signature: str) -> int:
    return _post(url, payload.encode(), {
        "Content-Type": "application/json",
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        "X-Twilio-Email-Event-Webhook-Signature": signature})


async def test_unregistered_push_token_is_removed_and_not_tried_again(
        worker, worker_env, producer, db, unique):
    import uuid

    from tests.integration.conftest import GONE_APNS_TOKEN

    # Given a user with a live device and one APNs says is gone
    user = f"u-{unique}"
    good = uuid.uuid4().hex * 2
    await contact(producer, user, push_tokens=[{"token": good, "platform": "apns"},
                                               {"token": GONE_APNS_TOKEN, "platform": "apns"}])
    first = f"n1-{unique}"
    await produce(producer, "notifications", user, {
        "id": first, "user_id": user, "title": "Hi", "channels": ["push"]})

    # Then the push is sent to the live device and the dead token is removed
    async def sent():
        row = (await deliveries(db, first)).get("push")
        return row if row and row["status"] == "SENT" else None
    await eventually(sent, what="push SENT")

    async def cleaned():
        status, body = worker.get(f"/v1/tables/contacts/{user}")
        tokens = [t["token"] for t in body["value"]["push_tokens"]] if status == 200 else None
        return tokens if tokens == [good] else None
    await eventually(cleaned, what="the unregistered token removed")
    # And the next push only targets the live device
    second = f"n2-{unique}"
    await produce(producer, "notifications", user, {
        "id": second, "user_id": user, "title": "Again", "channels": ["push"]})

    async def sent_again():
        row = (await deliveries(db, second)).get("push")
        return row if row and row["status"] == "SENT" else None
    await eventually(sent_again, what="second push SENT")
    delivery = await read_topic(worker_env["HERALD_KAFKA_BOOTSTRAP"], "deliveries.push",
                                lambda v: v.get("notification_id") == second)
    assert [t["token"] for t in delivery["push_tokens"]] == [good]


async def test_dlq_replay_delivers_after_the_provider_recovers(
        worker, worker_env, fakes, producer, db, unique):
    import subprocess
    import sys
    from datetime import datetime, timezone

    from tests.integration.conftest import ROOT

    # Given SendGrid rejects an address, so the email is dead-lettered
    started = datetime.now(timezone.utc).isoformat()
    user, nid = f"u-{unique}", f"n-{unique}"
    address = f"{user}@example.org"
    fakes["sendgrid"].script("invalid", address=address)
    await contact(producer, user, email=address)
    await produce(producer, "notifications", user, {
        "id": nid, "user_id": user, "title": "Statement", "channels": ["email"]})

    async def dead():
        row = (await deliveries(db, nid)).get("email")
        return row if row and row["status"] == "DEAD" else None
    await eventually(dead, what="the email DEAD")
    # When the provider recovers and an operator replays the DLQ
    fakes["sendgrid"].script("reset")
    listed = subprocess.run([sys.executable, "-m", "app.cli", "dlq", "ls", "--channel", "email",
                             "--reason", "permanent", "--since", started], cwd=ROOT,
                            env=worker_env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and "permanent provider error" in listed.stdout
    replayed = subprocess.run([sys.executable, "-m", "app.cli", "dlq", "replay", "--channel",
                               "email", "--reason", "permanent", "--since", started], cwd=ROOT,
                              env=worker_env, capture_output=True, text=True, timeout=60)
    assert replayed.returncode == 0 and "replayed 1" in replayed.stdout, replayed.stderr

    # Then the email is sent, once, as attempt 2
    async def sent():
        row = (await deliveries(db, nid)).get("email")
        return row if row and row["status"] == "SENT" else None
    row = await eventually(sent, what="the replayed email SENT")
    assert row["attempts"] == 2
    assert len(sent_for(fakes["sendgrid"], nid)) == 1
