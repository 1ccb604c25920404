"""Choosing the offsets a reset commits, and reading a group's members."""

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndTimestamp

from app.offsets import Move, active_members, hot_path_group, new_offset, plan_reset
from app.topics import hot_topic_names


def test_a_partition_resumes_at_the_first_record_at_or_after_the_time():
    assert new_offset(OffsetAndTimestamp(offset=17, timestamp=1_000), end=40) == 17


def test_a_partition_with_nothing_after_the_time_resumes_at_its_end():
    assert new_offset(None, end=40) == 40


def test_the_plan_lists_every_partition_in_order_with_its_old_offset():
    # Given two partitions, one never committed and one past the time
    a0, a1, b0 = TopicPartition("a", 0), TopicPartition("a", 1), TopicPartition("b", 0)
    committed = {a0: 5, a1: None, b0: 9}
    found = {a0: OffsetAndTimestamp(2, 100), a1: None, b0: OffsetAndTimestamp(0, 50)}
    ends = {a0: 10, a1: 3, b0: 9}

    # When the reset is planned
    moves = plan_reset([b0, a1, a0], committed, found, ends)

    # Then each partition moves to the found offset, else to its end
    assert moves == [Move("a", 0, 5, 2), Move("a", 1, None, 3), Move("b", 0, 9, 0)]
    assert str(moves[1]) == "a[1]: none -> 3"


def test_members_are_counted_for_the_group_asked_about_only():
    answer = [{"throttle_time_ms": 0, "groups": [
        {"error_code": 0, "group": "herald", "state": "Stable", "members": [{}, {}]},
        {"error_code": 0, "group": "other", "state": "Stable", "members": [{}]}]}]
    assert active_members(answer, "herald") == 2
    assert active_members([{"groups": [{"error_code": 0, "group": "herald", "state": "Empty",
                                        "members": []}]}], "herald") == 0


@pytest.mark.parametrize(("topic", "hot"), [
    ("notifications", True), ("notifications.urgent", True), ("notifications.bulk", True),
    ("deliveries.email", True), ("deliveries.push.urgent", True),
    ("deliveries.email.retry.1", False), ("deliveries.dlq", False),
    ("user-updates", False), ("presence", False), ("delivery-events", False),
])
def test_the_hot_path_reads_the_intake_lane_and_delivery_topics_only(topic, hot):
    assert (topic in hot_topic_names()) is hot


def test_the_hot_path_commits_in_a_group_named_after_the_app():
    assert hot_path_group("herald") == "herald-hotpath"
