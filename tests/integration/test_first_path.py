"""The first path end to end: outside producers, a real broker, a real database."""

from __future__ import annotations

import json

import pytest
from aiokafka import AIOKafkaConsumer

from rules.partitioning import partition_for
from tests.integration.conftest import eventually, produce, read_topic

pytestmark = pytest.mark.integration


async def statuses(db, notification_id: str) -> dict[str, str]:
    rows = await db.fetch("SELECT channel, status FROM deliveries WHERE notification_id = $1",
                          notification_id)
    return {row["channel"]: row["status"] for row in rows}


async def test_update_then_notification_reaches_sent_on_every_wanted_channel(
        worker, producer, db, unique):
    # Given an outside service that registers a user's contacts
    user = f"u-{unique}"
    await produce(producer, "user-updates", user, {
        "user_id": user, "email": f"{user}@example.org", "phone": "+33612345678",
        "push_tokens": [{"token": unique * 5 + "0000", "platform": "apns"}]})
    # When it sends a notification right after, in the documented JSON
    nid = f"n-{unique}"
    await produce(producer, "notifications", user, {
        "id": nid, "user_id": user, "category": "security", "priority": "high",
        "title": "New sign-in", "body": "From Paris", "data": {"city": "Paris"},
        "channels": ["push", "email", "sms", "inapp"], "unknown_field": "ignored"})
    # Then every wanted channel reaches SENT in PostgreSQL
    wanted = {"push": "SENT", "email": "SENT", "sms": "SENT", "inapp": "SENT"}

    async def all_sent():
        return await statuses(db, nid) == wanted
    await eventually(all_sent, what=f"deliveries of {nid} SENT")
    # And the notification row holds what was sent
    row = await db.fetchrow("SELECT user_id, category, title, body, data::text FROM notifications"
                            " WHERE id = $1", nid)
    assert (row["user_id"], row["category"], row["title"], row["body"]) == (
        user, "security", "New sign-in", "From Paris")
    assert '"city": "Paris"' in row["data"]
    # And the audit trail shows QUEUED then SENT for each channel
    audit = await db.fetch("SELECT channel, status FROM delivery_events WHERE notification_id = $1"
                           " ORDER BY id", nid)
    for channel in wanted:
        assert [r["status"] for r in audit if r["channel"] == channel] == ["QUEUED", "SENT"]


async def test_channels_without_an_address_are_suppressed_with_a_reason(worker, producer, db, unique):
    user = f"u-{unique}"
    await produce(producer, "user-updates", user, {"user_id": user, "email": "x@example.org"})
    nid = f"n-{unique}"
    await produce(producer, "notifications", user, {
        "id": nid, "user_id": user, "title": "Hi", "channels": ["email", "sms"]})

    async def recorded():
        rows = await db.fetch("SELECT channel, status, reason FROM deliveries"
                              " WHERE notification_id = $1 ORDER BY channel", nid)
        return rows if len(rows) == 2 and rows[0]["status"] == "SENT" else None
    rows = await eventually(recorded, what="email SENT and sms SUPPRESSED")
    assert [(r["channel"], r["status"]) for r in rows] == [("email", "SENT"), ("sms", "SUPPRESSED")]
    assert rows[1]["reason"] == "no sms address for the user"


@pytest.mark.parametrize(("payload", "reason_part"), [
    (b"this is not json", "value: not JSON"),
    (b'{"title": "no user", "marker": "%s"}', "user_id: required"),
    (b'{"user_id": 42, "title": "bad type", "marker": "%s"}', "user_id: expected a string, got int"),
    (b'{"user_id": "u-x", "title": "t", "channels": "email", "marker": "%s"}',
     "channels: expected a list, got str"),
])
async def test_malformed_record_goes_to_the_dlq_and_the_next_one_is_delivered(
        worker, worker_env, producer, db, unique, payload, reason_part):
    # Given a malformed record on notifications
    bad = payload.replace(b"%s", unique.encode()) if b"%s" in payload else payload + unique.encode()
    await produce(producer, "notifications", f"bad-{unique}", bad)
    # And a valid one right behind it on the same partition
    user = f"bad-{unique}"
    nid = f"n-{unique}"
    await produce(producer, "notifications", user, {
        "id": nid, "user_id": user, "title": "still works", "channels": ["inapp"]})
    # Then the malformed record lands on the DLQ with a reason naming the problem
    letter = await read_topic(worker_env["HERALD_KAFKA_BOOTSTRAP"], "deliveries.dlq",
                              lambda v: unique in (v.get("payload") or ""))
    assert letter["reason"] == "invalid notification"
    assert reason_part in letter["error"]
    assert letter["topic"] == "notifications" and letter["payload"] == bad.decode()
    assert isinstance(letter["offset"], int)

    # And the agent did not die: the next valid record is delivered
    async def sent():
        return await statuses(db, nid) == {"inapp": "SENT"}
    await eventually(sent, what="the record after the bad one to be SENT")


async def test_same_idempotency_key_twice_yields_one_delivery_and_one_suppressed(
        worker, producer, db, unique):
    user = f"u-{unique}"
    first, second = f"n1-{unique}", f"n2-{unique}"
    for nid in (first, second):
        await produce(producer, "notifications", user, {
            "id": nid, "user_id": user, "title": "Your code", "channels": ["inapp"],
            "idempotency_key": f"otp-{unique}"})

    async def both_recorded():
        rows = await db.fetch("SELECT notification_id, channel, status, reason FROM deliveries"
                              " WHERE notification_id = ANY($1::text[])", [first, second])
        return rows if {r["status"] for r in rows} == {"SENT", "SUPPRESSED"} else None
    rows = await eventually(both_recorded, what="one SENT and one SUPPRESSED")
    by_id = {r["notification_id"]: r for r in rows}
    assert len(rows) == 2
    assert (by_id[first]["channel"], by_id[first]["status"]) == ("inapp", "SENT")
    assert by_id[second]["status"] == "SUPPRESSED"
    assert "duplicate idempotency_key" in by_id[second]["reason"]


async def test_record_on_the_wrong_partition_is_forwarded_before_any_lookup(
        worker, producer, db, unique):
    # Given a user whose contacts are known (on the partition murmur2 picks)
    user = f"u-{unique}"
    await produce(producer, "user-updates", user, {"user_id": user, "email": "w@example.org"})
    right = partition_for(user, 8)
    wrong = (right + 3) % 8
    # When a producer with another partitioner puts the notification elsewhere
    nid = f"n-{unique}"
    await produce(producer, "notifications", user, {
        "id": nid, "user_id": user, "title": "Hi", "channels": ["email"]}, partition=wrong)

    # Then it is still routed with the user's contacts and delivered
    async def sent():
        return await statuses(db, nid) == {"email": "SENT"}
    await eventually(sent, what="the misplaced record to be forwarded and SENT")


async def test_keyless_record_is_keyed_by_its_user_and_delivered(worker, producer, db, unique):
    user = f"u-{unique}"
    nid = f"n-{unique}"
    await produce(producer, "notifications", None, {
        "id": nid, "user_id": user, "title": "no key", "channels": ["inapp"]})

    async def sent():
        return await statuses(db, nid) == {"inapp": "SENT"}
    await eventually(sent, what="the keyless record to be SENT")


async def test_table_lookup_is_answered_with_raw_user_keys(worker, producer, unique):
    user = f"u-{unique}"
    await produce(producer, "user-updates", user, {"user_id": user, "email": "t@example.org"})

    async def visible():
        status, body = worker.get(f"/v1/tables/contacts/{user}")
        return body if status == 200 else None
    body = await eventually(visible, what="contacts visible through the table view")
    assert body["value"]["email"] == "t@example.org"


async def test_table_changelog_keys_are_raw_user_ids_on_the_topic_partition(
        worker, worker_env, producer, unique):
    # Given a user update keyed by the raw user id
    user = f"u-{unique}"
    await produce(producer, "user-updates", user, {"user_id": user, "email": "c@example.org"})
    # Then the contacts changelog holds the same raw key on the same partition,
    # so table routing and recovery hash exactly what the topics hash
    consumer = AIOKafkaConsumer("herald-contacts-changelog",
                                bootstrap_servers=worker_env["HERALD_KAFKA_BOOTSTRAP"],
                                auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        async def find():
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    if record.key == user.encode():
                        return record
            return None
        record = await eventually(find, what="the changelog record of the update")
    finally:
        await consumer.stop()
    assert record.partition == partition_for(user, 8)
    assert json.loads(record.value)["email"] == "c@example.org"
