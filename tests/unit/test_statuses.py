"""Folding status events: never backwards, first timestamps kept."""

from types import SimpleNamespace

from rules.statuses import fold_events


def event(status, at, channel="email", attempts=1, nid="n-1", **extra):
    fields = {"reason": None, "error": None, "provider_message_id": None, **extra}
    return SimpleNamespace(notification_id=nid, channel=channel, status=status, at=at,
                           attempts=attempts, **fields)


def test_status_moves_forward_and_keeps_each_first_time():
    rows = fold_events([event("QUEUED", "t1", attempts=0), event("SENT", "t2",
                        provider_message_id="m-1"), event("READ", "t3")])
    assert len(rows) == 1
    row = rows[0]
    assert (row.status, row.queued_at, row.sent_at, row.read_at) == ("READ", "t1", "t2", "t3")
    assert row.provider_message_id == "m-1"


def test_status_never_moves_backwards():
    rows = fold_events([event("READ", "t3"), event("SENT", "t2"), event("QUEUED", "t1")])
    assert rows[0].status == "READ"
    # a late event still fills its own timestamp
    assert rows[0].sent_at == "t2"


def test_a_later_attempt_of_the_same_status_updates_attempts():
    rows = fold_events([event("QUEUED", "t1", attempts=1, error="503"),
                        event("QUEUED", "t2", attempts=2, error="timeout")])
    assert (rows[0].attempts, rows[0].last_error) == (2, "timeout")


def test_a_failure_reported_after_sending_moves_the_row_on():
    rows = fold_events([event("SENT", "t1"), event("FAILED", "t2", error="bounced")])
    assert (rows[0].status, rows[0].last_error) == ("FAILED", "bounced")


def test_python_and_sql_ranks_agree():
    import re
    from importlib import resources

    from rules.statuses import STATUS_RANK
    sql = resources.files("app.migrations").joinpath("002_failure_ranks.sql").read_text()
    assert dict((s, int(r)) for s, r in re.findall(r"WHEN '(\w+)' THEN (\d+)", sql)) == STATUS_RANK


def test_replayed_events_change_nothing():
    once = fold_events([event("QUEUED", "t1"), event("SENT", "t2")])
    twice = fold_events([event("QUEUED", "t1"), event("SENT", "t2"),
                         event("QUEUED", "t1"), event("SENT", "t2")])
    assert once == twice


def test_one_row_per_notification_and_channel():
    rows = fold_events([event("QUEUED", "t1", channel="email"),
                        event("QUEUED", "t1", channel="sms"),
                        event("QUEUED", "t1", channel="sms", nid="n-2")])
    assert {(r.notification_id, r.channel) for r in rows} == {
        ("n-1", "email"), ("n-1", "sms"), ("n-2", "sms")}


def test_a_later_attempt_supersedes_a_dead_one_but_not_a_replayed_older_event():
    # Given a delivery dead after attempt 1, replayed from the DLQ as attempt 2
    rows = fold_events([event("DEAD", "t1", attempts=1), event("SENT", "t2", attempts=2)])
    assert (rows[0].status, rows[0].attempts) == ("SENT", 2)
    # And an old event of attempt 1 arriving again changes nothing
    rows = fold_events([event("DEAD", "t1", attempts=1), event("SENT", "t2", attempts=2),
                        event("DEAD", "t1", attempts=1)])
    assert rows[0].status == "SENT"
