"""Structured logs: JSON lines carrying the event being handled, user-safe fields only."""

from __future__ import annotations

import io
import json
import logging
import logging.config

import pytest

from app import logs
from schemas.records import Delivery


def capture(fmt: str, level: str = "info") -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    config = logs.logging_config(fmt, level)
    config["handlers"]["default"]["stream"] = stream
    logging.config.dictConfig(config)
    return logging.getLogger("herald.test"), stream


@pytest.fixture(autouse=True)
def restore_logging():
    yield
    logging.config.dictConfig({"version": 1, "disable_existing_loggers": False,
                               "root": {"level": "WARNING", "handlers": []},
                               "loggers": {"herald": {"level": "NOTSET"}}})


def test_json_lines_carry_the_event_context_and_nothing_outside_it():
    # Given JSON logging
    logger, stream = capture("json")

    # When one line is logged while an event is handled and one after
    with logs.event_context(agent="router-bulk", notification_id="n-42", topic="notifications.bulk",
                            partition=3, offset=17):
        logger.info("routed to %d channels", 2)
    logger.info("idle")

    # Then each line is a JSON object; the first carries the event's fields
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "routed to 2 channels"
    assert (first["agent"], first["notification_id"], first["partition"], first["offset"]) == (
        "router-bulk", "n-42", 3, 17)
    assert first["level"] == "info" and first["logger"] == "herald.test"
    assert "notification_id" not in second and "agent" not in second


def test_exceptions_are_one_json_line_with_the_traceback():
    logger, stream = capture("json")
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")
    (line,) = stream.getvalue().splitlines()
    assert "ValueError: boom" in json.loads(line)["exception"]


def test_text_lines_append_the_notification_id():
    logger, stream = capture("text")
    with logs.event_context(agent="intake", notification_id="n-7"):
        logger.warning("odd")
    assert stream.getvalue().rstrip().endswith("odd [agent=intake notification_id=n-7]")


def test_debug_applies_to_herald_not_to_libraries():
    logger, stream = capture("json", "debug")
    logger.debug("mine")
    logging.getLogger("aiokafka.consumer").debug("theirs")
    assert [json.loads(line)["message"] for line in stream.getvalue().splitlines()] == ["mine"]


def test_nested_contexts_add_and_restore():
    with logs.event_context(agent="recorder"):
        with logs.event_context(notification_id="n-1"):
            assert (logs.current("agent"), logs.current("notification_id")) == ("recorder", "n-1")
        assert logs.current("notification_id") is None
    assert logs.current("agent") is None


@pytest.mark.parametrize(("value", "expected"), [
    (b'{"id": "n-1", "user_id": "u-1"}', "n-1"),
    (b'{"user_id": "u-1"}', None),
    (b"not json", None),
    (b"\xff\xfe", None),
    ({"notification_id": "n-2", "status": "SENT"}, "n-2"),
    ({"user_id": "u-1", "email": "a@example.org"}, None),
    ({"id": 42}, None),
    (b'{"id": "' + b"x" * 500 + b'"}', "x" * logs.MAX_ID_LENGTH),
    (Delivery(notification_id="n-3", user_id="u-1", channel="email", address="a@example.org",
              title=None, body=None, category="c", priority="normal",
              created_at="2020-01-01T00:00:00+00:00"), "n-3"),
])
def test_notification_id_of_any_record(value, expected):
    assert logs.notification_id_of(value) == expected


@pytest.mark.parametrize(("env", "expected"), [
    ({}, "json"), ({"HERALD_LOG_FORMAT": "text"}, "text"), ({"HERALD_LOG_FORMAT": " JSON "}, "json"),
])
def test_log_format_from_the_environment(env, expected):
    assert logs.log_format(env) == expected


def test_a_bad_log_format_or_level_names_the_variable():
    with pytest.raises(ValueError, match="HERALD_LOG_FORMAT"):
        logs.log_format({"HERALD_LOG_FORMAT": "xml"})
    with pytest.raises(ValueError, match="HERALD_LOG_LEVEL"):
        logs.logging_config("json", "loud")
