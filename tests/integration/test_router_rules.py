"""Router rules on the real broker: dedup across restarts, holds, fan-out, digests."""

from __future__ import annotations

import json
import urllib.parse
from datetime import datetime, timedelta, timezone

import pytest

from tests.integration.conftest import eventually, produce

pytestmark = pytest.mark.integration


async def rows(db, sql: str, *args):
    return [dict(row) for row in await db.fetch(sql, *args)]


async def status_of(db, nid: str, channel: str = "inapp") -> str | None:
    return await db.fetchval("SELECT status FROM deliveries WHERE notification_id = $1 AND channel = $2",
                             nid, channel)


async def test_dedup_survives_a_worker_restart(worker, producer, db, unique):
    # Given a notification with an idempotency key, delivered
    user, key = f"u-{unique}", f"pay-{unique}"
    first, second = f"n1-{unique}", f"n2-{unique}"
    await produce(producer, "notifications", user, {
        "id": first, "user_id": user, "title": "Paid", "channels": ["inapp"], "idempotency_key": key})

    async def sent():
        return await status_of(db, first) == "SENT"
    await eventually(sent, what="the first send")
    # When the worker restarts (its tables come back from the changelog)
    worker.stop()
    worker.start()
    # And the same key arrives again
    await produce(producer, "notifications", user, {
        "id": second, "user_id": user, "title": "Paid", "channels": ["inapp"], "idempotency_key": key})

    # Then it is suppressed, not sent twice
    async def suppressed():
        return await status_of(db, second, "*") == "SUPPRESSED"
    await eventually(suppressed, what="the repeat to be SUPPRESSED after restart")
    assert await status_of(db, second) is None


async def test_send_at_holds_then_releases_across_a_restart(worker, producer, db, unique):
    # Given a notification to be sent a few seconds from now
    user, nid = f"u-{unique}", f"n-{unique}"
    due = datetime.now(timezone.utc) + timedelta(seconds=8)
    await produce(producer, "notifications", user, {
        "id": nid, "user_id": user, "title": "Later", "channels": ["inapp"],
        "send_at": due.isoformat()})

    # Then it is SCHEDULED first
    async def scheduled():
        return await status_of(db, nid, "*") == "SCHEDULED"
    await eventually(scheduled, what="SCHEDULED")
    # And a restart in the meantime does not lose it
    worker.stop()
    worker.start()

    # And it is sent once due, not before
    async def sent():
        return await db.fetchval("SELECT sent_at FROM deliveries WHERE notification_id = $1"
                                 " AND channel = 'inapp' AND status = 'SENT'", nid)
    sent_at = await eventually(sent, timeout=60, what="release after send_at")
    assert sent_at >= due


async def test_quiet_hours_hold_normal_but_not_critical(worker, producer, db, unique):
    # Given a user inside their quiet hours (a window around now, in their zone)
    user = f"u-{unique}"
    local = datetime.now(timezone.utc).astimezone(timezone(timedelta(hours=9)))
    start = (local - timedelta(minutes=1)).strftime("%H:%M")
    end = (local + timedelta(minutes=2)).strftime("%H:%M")
    await produce(producer, "user-updates", user, {
        "user_id": user, "email": "q@example.org", "timezone": "Asia/Tokyo",
        "preferences": {"quiet_hours": {"start": start, "end": end}}})
    normal, critical = f"n-{unique}", f"c-{unique}"
    # When a normal and a critical notification arrive
    await produce(producer, "notifications", user, {
        "id": normal, "user_id": user, "title": "Newsletter", "channels": ["email"]})
    await produce(producer, "notifications", user, {
        "id": critical, "user_id": user, "title": "Password changed", "category": "security",
        "priority": "critical", "channels": ["email"]})

    # Then the critical one is sent at once and the normal one held until the window ends
    async def settled():
        return (await status_of(db, critical, "email") == "SENT"
                and await status_of(db, normal, "*") == "SCHEDULED")
    await eventually(settled, what="critical SENT, normal SCHEDULED")
    reason = await db.fetchval("SELECT reason FROM deliveries WHERE notification_id = $1"
                               " AND channel = '*'", normal)
    assert reason.startswith("held until")
    assert await status_of(db, normal, "email") is None


async def test_expired_notification_is_dropped_and_recorded(worker, producer, db, unique):
    user, nid = f"u-{unique}", f"n-{unique}"
    await produce(producer, "notifications", user, {
        "id": nid, "user_id": user, "title": "Flash sale", "channels": ["inapp"],
        "expires_at": (datetime.now(timezone.utc) - timedelta(minutes=5)).isoformat()})

    async def dropped():
        return await db.fetchrow("SELECT status, reason FROM deliveries WHERE notification_id = $1",
                                 nid)
    row = await eventually(dropped, what="the expired notification recorded")
    assert row["status"] == "SUPPRESSED" and row["reason"].startswith("expired at")


async def test_rate_limit_drop_policy_records_the_drop(worker, producer, db, unique):
    # Given the "limited" category allows 2 per minute per user, excess dropped
    user = f"u-{unique}"
    ids = [f"n{i}-{unique}" for i in range(4)]
    for nid in ids:
        await produce(producer, "notifications", user, {
            "id": nid, "user_id": user, "title": "Ping", "category": "limited",
            "channels": ["inapp"]})

    async def all_recorded():
        found = await rows(db, "SELECT notification_id, status, reason FROM deliveries"
                               " WHERE notification_id = ANY($1::text[])", ids)
        settled = len(found) == 4 and all(row["status"] != "QUEUED" for row in found)
        return found if settled else None
    found = await eventually(all_recorded, what="four outcomes")
    statuses = sorted(row["status"] for row in found)
    assert statuses == ["SENT", "SENT", "SUPPRESSED", "SUPPRESSED"]
    assert all("rate limited: dropped" in row["reason"] for row in found
               if row["status"] == "SUPPRESSED")


async def test_rate_limit_defer_policy_schedules_the_excess(worker, producer, db, unique):
    user = f"u-{unique}"
    ids = [f"n{i}-{unique}" for i in range(2)]
    for nid in ids:
        await produce(producer, "notifications", user, {
            "id": nid, "user_id": user, "title": "Slow", "category": "slow", "channels": ["inapp"]})

    async def recorded():
        found = await rows(db, "SELECT status, reason FROM deliveries"
                               " WHERE notification_id = ANY($1::text[])", ids)
        settled = len(found) == 2 and all(row["status"] != "QUEUED" for row in found)
        return found if settled else None
    found = await eventually(recorded, what="one SENT, one deferred")
    assert sorted(row["status"] for row in found) == ["SCHEDULED", "SENT"]
    assert any((row["reason"] or "").startswith("rate limited: deferred") for row in found)


async def test_template_error_dead_letters_instead_of_sending(worker, producer, db, unique):
    user, nid = f"u-{unique}", f"n-{unique}"
    await produce(producer, "notifications", user, {
        "id": nid, "user_id": user, "template": "new-sign-in", "channels": ["inapp"],
        "data": {"not_city": "x"}})

    async def dead():
        return await db.fetchrow("SELECT status, reason FROM deliveries WHERE notification_id = $1",
                                 nid)
    row = await eventually(dead, what="the broken template recorded")
    assert (row["status"], row["reason"]) == ("DEAD", "template error")
    error = await db.fetchval("SELECT error FROM delivery_events WHERE notification_id = $1"
                              " AND status = 'DEAD'", nid)
    assert "missing variable 'city'" in error


async def test_templated_notification_is_rendered_per_locale(worker, producer, db, unique):
    user, nid = f"u-{unique}", f"n-{unique}"
    await produce(producer, "notifications", user, {
        "id": nid, "user_id": user, "template": "new-sign-in", "locale": "fr",
        "channels": ["inapp"], "data": {"city": "Lyon"}})

    async def sent():
        return await status_of(db, nid) == "SENT"
    await eventually(sent, what="the templated notification SENT")


async def test_audience_fans_out_to_a_thousand_subscribers(worker, producer, db, unique):
    # Given 1,000 users subscribed to an audience through user-updates
    audience = f"release-notes-{unique}"
    members = [f"aud-{unique}-{i:04d}" for i in range(1000)]
    for user in members:
        await producer.send("user-updates", key=user.encode(), value=json.dumps(
            {"user_id": user, "topics": {"subscribe": [audience]}}).encode())
    await producer.flush()

    async def all_members():
        return _members_known(worker, audience, members)
    await eventually(all_members, timeout=90, what="1,000 memberships applied")
    # When one notification names the audience instead of a user
    parent = f"p-{unique}"
    await produce(producer, "notifications", audience, {
        "id": parent, "audience": audience, "title": "v2 is out", "channels": ["inapp"]})

    # Then every member gets their own copy, delivered
    async def delivered():
        count = await db.fetchval(
            "SELECT count(*) FROM notifications n JOIN deliveries d ON d.notification_id = n.id"
            " WHERE n.user_id LIKE $1 AND d.status = 'SENT'", f"aud-{unique}-%")
        return count == 1000
    await eventually(delivered, timeout=120, what="1,000 copies SENT")


def _members_known(worker, audience: str, members: list[str]) -> bool:
    # Spot-check a spread of members (and the last) rather than 1,000 HTTP calls per poll.
    for user in [*members[::97], members[-1]]:
        status, _ = worker.get("/v1/tables/audiences/" + urllib.parse.quote(f"{audience}\x1f{user}"))
        if status != 200:
            return False
    return True


async def test_low_priority_notifications_of_a_digest_category_arrive_as_one(
        worker, producer, db, unique):
    # Given a digest category (4 s window in the test settings)
    user = f"u-{unique}"
    ids = [f"n{i}-{unique}" for i in range(3)]
    for i, nid in enumerate(ids):
        await produce(producer, "notifications", user, {
            "id": nid, "user_id": user, "title": f"Item {i}", "body": "news",
            "category": "digest-test", "priority": "low", "channels": ["inapp"]})

    # Then each is batched (SCHEDULED), and one digest notification is sent
    async def digest_sent():
        found = await rows(db, "SELECT n.id, n.data::text AS data FROM notifications n"
                               " JOIN deliveries d ON d.notification_id = n.id"
                               " WHERE n.user_id = $1 AND n.category = 'digest-test'"
                               " AND d.status = 'SENT'", user)
        return found or None
    found = await eventually(digest_sent, timeout=60, what="the digest SENT")
    assert len(found) == 1 and found[0]["id"] not in ids
    assert json.loads(found[0]["data"])["count"] == 3
    batched = await rows(db, "SELECT status, reason FROM deliveries WHERE notification_id = ANY($1::text[])",
                         ids)
    assert [row["status"] for row in batched] == ["SCHEDULED"] * 3
    assert all(row["reason"] == "batched into the digest-test digest" for row in batched)


@pytest.mark.timeout(240)
async def test_quiet_hours_release_when_the_window_ends(worker, producer, db, unique):
    # Given a user whose quiet hours (in their zone, minute precision) end shortly
    user, nid = f"u-{unique}", f"n-{unique}"
    tokyo = timezone(timedelta(hours=9))
    local = datetime.now(timezone.utc).astimezone(tokyo)
    ahead = 2 if local.second >= 45 else 1
    end_local = (local + timedelta(minutes=ahead)).replace(second=0, microsecond=0)
    await produce(producer, "user-updates", user, {
        "user_id": user, "timezone": "Asia/Tokyo",
        "preferences": {"quiet_hours": {"start": (local - timedelta(minutes=5)).strftime("%H:%M"),
                                        "end": end_local.strftime("%H:%M")}}})
    # When a normal notification arrives inside them
    await produce(producer, "notifications", user, {
        "id": nid, "user_id": user, "title": "Good morning", "channels": ["inapp"]})

    async def scheduled():
        return await status_of(db, nid, "*") == "SCHEDULED"
    await eventually(scheduled, what="held for quiet hours")

    # Then the timer releases it once the window has ended, not before
    async def sent():
        return await db.fetchval("SELECT sent_at FROM deliveries WHERE notification_id = $1"
                                 " AND channel = 'inapp' AND status = 'SENT'", nid)
    sent_at = await eventually(sent, timeout=180, interval=1.0, what="release after quiet hours")
    assert sent_at >= end_local
