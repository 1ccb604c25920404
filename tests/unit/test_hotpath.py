"""The hot path's records look to herald's handlers as Faust's events do."""

from __future__ import annotations

import weakref

from aiokafka.structs import ConsumerRecord
from faust import streams as faust_streams

from agents.emitters import faust_event
from agents.hotpath import HotEvent, HotMessage


def record(**overrides: object) -> ConsumerRecord:
    fields = dict(topic="notifications.bulk", partition=3, offset=42, timestamp=1_700_000_000_123,
                  timestamp_type=0, key=b"u-1", value=b'{"user_id":"u-1"}', checksum=None,
                  serialized_key_size=3, serialized_value_size=17,
                  headers=(("traceparent", b"00-abc"),))
    fields.update(overrides)
    return ConsumerRecord(**fields)  # type: ignore[arg-type]


def test_a_message_carries_what_the_handlers_and_dead_letters_read():
    message = HotMessage(record())
    assert (message.topic, message.partition, message.offset) == ("notifications.bulk", 3, 42)
    assert message.tp == ("notifications.bulk", 3)
    # Faust's timestamps are seconds; the profile grace and intake count on it.
    assert message.timestamp == 1_700_000_000.123
    assert (message.key, message.value) == (b"u-1", b'{"user_id":"u-1"}')
    assert message.headers == [("traceparent", b"00-abc")]


def test_a_record_without_headers_has_an_empty_list():
    assert HotMessage(record(headers=())).headers == []


def test_an_event_becomes_faust_s_current_event_so_table_writes_find_its_partition():
    event = HotEvent(HotMessage(record()), value={"user_id": "u-1"})
    with faust_event(event):  # type: ignore[arg-type]
        current = faust_streams.current_event()
        assert current is event and current.message.partition == 3
    assert faust_streams.current_event() is None
    assert weakref.ref(event)() is event
