"""Property: every parse function returns a record fit for downstream, or InvalidEvent.

"Fit for downstream" is what the rest of the pipeline needs of a record it
accepted: it serializes back to strict JSON and UTF-8 (Faust, Kafka) and
PostgreSQL can store every string in it (no NUL, no lone surrogate, no
NaN in ``jsonb``). A record that parses but breaks one of those is a poison
pill further down, so the parser must refuse it with a reason instead.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import pytest
from hypothesis import example, given, settings

from app.errors import InvalidEvent
from schemas.parsing import parse_notification, parse_presence, parse_user_update
from tests.fuzz.strategies import notification_records, presence_records, user_update_records

pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

PARSERS: dict[str, tuple[Callable[[bytes], Any], Any]] = {
    "notification": (parse_notification, notification_records),
    "user_update": (parse_user_update, user_update_records),
    "presence": (parse_presence, presence_records),
}


def assert_storable(value: Any, where: str = "record") -> None:
    """``value`` survives strict JSON, UTF-8 and PostgreSQL text/jsonb."""
    encoded = json.dumps(value, allow_nan=False, ensure_ascii=False)  # ValueError on NaN
    encoded.encode("utf-8")  # UnicodeEncodeError on a lone surrogate
    assert "\x00" not in encoded and "\\u0000" not in encoded, f"{where}: NUL accepted"


def check(parse: Callable[[bytes], Any], raw: bytes) -> None:
    try:
        record = parse(raw)
    except InvalidEvent as exc:
        assert str(exc).strip(), f"InvalidEvent without a reason for {raw[:200]!r}"
        return
    # What Faust writes to Kafka, read back as a consumer would.
    assert_storable(json.loads(record.dumps()))


@pytest.mark.parametrize("kind", sorted(PARSERS))
def test_a_record_is_either_valid_or_refused_with_a_reason(kind: str) -> None:
    parse, records = PARSERS[kind]

    @settings(max_examples=400, derandomize=True, deadline=None)
    @given(records)
    def run(raw: bytes) -> None:
        check(parse, raw)

    run()


# Regressions found by the fuzzing above, kept as plain examples.
REGRESSIONS = [
    b"[" * 100_000 + b"]" * 100_000,  # RecursionError escaped json.loads
    b'{"user_id": "u-1", "title": "a\\u0000b"}',  # NUL: PostgreSQL text refuses it
    b'{"user_id": "u-1", "title": "\\ud800"}',  # lone surrogate: not encodable as UTF-8
    b'{"user_id": "u-1", "title": "x", "data": {"n": NaN}}',  # jsonb refuses NaN
    b'{"user_id": "u-1", "title": "x", "data": {"n": 1e999}}',  # Infinity, same
    b'{"user_id": "u-1", "title": "x", "data": {"k\\u0000": 1}}',  # NUL in a data key
    b'{"user_id": "u-1", "title": "x", "idempotency_key": "\\u0000"}',
    b'{"user_id": "u-1", "node_id": "n", "at": "2026-01-01T10:00:00+99:00"}',
]


@pytest.mark.parametrize("kind", sorted(PARSERS))
@pytest.mark.parametrize("raw", REGRESSIONS, ids=range(len(REGRESSIONS)))
def test_known_poison_records_are_refused_or_safe(kind: str, raw: bytes) -> None:
    check(PARSERS[kind][0], raw)
