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


def test_the_provider_clients_close_only_after_the_hot_loops_and_the_recorder_stopped(tmp_path):
    # A SIGTERM stops an app's services in the reverse order they were added. A provider
    # call cut by closing its client is retried, and so sent twice (found by the rolling
    # restart in tests/chaos/test_graceful.py).
    from app.factory import create_herald
    from app.settings import Settings

    herald = create_herald(Settings.from_env({
        "HERALD_KAFKA_BOOTSTRAP": "127.0.0.1:1", "HERALD_DATABASE_URL": "postgresql://x@h/d",
        "HERALD_STORE": "memory", "HERALD_DATA_DIR": str(tmp_path)}))
    added = [type(service).__name__ for service in herald.app._extra_services]  # noqa: SLF001
    assert added.index("Resources") < added.index("HotPath")
    assert added.index("Resources") < added.index("Recorder")
