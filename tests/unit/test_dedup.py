"""The dedup window, and redeliveries that are not repeats."""

from tables.dedup import claim, dedup_key, is_expired, is_repeat


def test_a_key_claimed_by_another_record_inside_the_window_is_a_repeat():
    entry = claim("3:10", now=1000.0, window_seconds=60)
    assert is_repeat(entry, "3:11", now=1059.0)


def test_the_same_record_redelivered_is_not_a_repeat():
    # Given a key claimed by the record at partition 3 offset 10
    entry = claim("3:10", now=1000.0, window_seconds=60)
    # When Kafka redelivers that very record after a crash, it goes through
    assert not is_repeat(entry, "3:10", now=1001.0)


def test_after_the_window_the_key_is_free_and_purgeable():
    entry = claim("3:10", now=1000.0, window_seconds=60)
    assert not is_repeat(entry, "3:11", now=1060.0)
    assert is_expired(entry, now=1060.0)
    assert not is_expired(entry, now=1059.9)


def test_unknown_key_is_not_a_repeat():
    assert not is_repeat(None, "0:0", now=0.0)


def test_keys_of_different_users_differ():
    assert dedup_key("u-1", "k") != dedup_key("u-2", "k")
    assert dedup_key("u-1", "k").startswith("u-1")
