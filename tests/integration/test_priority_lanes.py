"""Priority lanes: a critical notification does not wait behind a bulk backlog."""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import eventually, produce

pytestmark = pytest.mark.integration

BACKLOG = 20_000


@pytest.mark.timeout(600)
async def test_critical_is_delivered_before_a_20k_low_priority_backlog_drains(
        worker, producer, db, unique):
    # Given a backlog of 20,000 low-priority notifications, queued at once
    prefix = f"bulk-{unique}-"
    for i in range(BACKLOG):
        user = f"{prefix}{i}"
        await producer.send("notifications", key=user.encode(), value=json.dumps({
            "user_id": user, "title": "Weekly tips", "priority": "low",
            "channels": ["inapp"]}).encode())
    await producer.flush()
    # When a critical notification is queued behind all of them
    user, critical = f"u-{unique}", f"c-{unique}"
    await produce(producer, "notifications", user, {
        "id": critical, "user_id": user, "title": "Suspicious sign-in", "category": "security",
        "priority": "critical", "channels": ["inapp"]})

    # Then it is delivered while most of the backlog is still waiting
    async def critical_sent():
        return await db.fetchval("SELECT sent_at FROM deliveries WHERE notification_id = $1"
                                 " AND status = 'SENT'", critical)
    critical_at = await eventually(critical_sent, timeout=300, what="the critical SENT")
    sent_before = await db.fetchval(
        "SELECT count(*) FROM notifications n JOIN deliveries d ON d.notification_id = n.id"
        " WHERE n.user_id LIKE $1 AND d.status = 'SENT' AND d.sent_at <= $2",
        prefix + "%", critical_at)
    assert sent_before < BACKLOG / 2, f"{sent_before} bulk notifications went first"

    # And the backlog drains in the end (so later tests start from an idle worker)
    async def drained():
        count = await db.fetchval(
            "SELECT count(*) FROM notifications n JOIN deliveries d ON d.notification_id = n.id"
            " WHERE n.user_id LIKE $1 AND d.status = 'SENT'", prefix + "%")
        return count == BACKLOG
    await eventually(drained, timeout=500, interval=2.0, what="the backlog to drain")
