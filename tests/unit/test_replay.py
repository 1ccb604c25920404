"""Replay ranges and deliberate resends."""

import json

import pytest

from app.replay import Bounds, bounds, for_resend


@pytest.mark.parametrize(("first", "end", "start", "stop", "expected"), [
    (0, 100, None, None, Bounds(0, 100)),       # everything there is now
    (0, 100, 40, None, Bounds(40, 100)),        # from an offset
    (0, 100, 40, 60, Bounds(40, 60)),           # a closed range, stop exclusive
    (50, 100, 10, 70, Bounds(50, 70)),          # retention removed the start
    (0, 100, 90, 200, Bounds(90, 100)),         # past the end is the end
    (0, 100, 120, None, Bounds(120, 120)),      # nothing after the end
    (0, 100, 60, 40, Bounds(60, 60)),           # an empty range, not a negative one
])
def test_bounds_clamp_to_what_exists(first, end, start, stop, expected):
    assert bounds(first, end, start, stop) == expected


def test_sizes():
    assert Bounds(40, 60).size == 20 and Bounds(60, 60).size == 0


def test_resend_strips_the_ids_dedup_would_recognise():
    value = json.dumps({"id": "n-1", "idempotency_key": "k", "user_id": "u", "title": "t"}).encode()
    assert json.loads(for_resend(value)) == {"user_id": "u", "title": "t"}


@pytest.mark.parametrize("value", [b"not json", b"[1, 2]", None])
def test_resend_leaves_other_values_alone(value):
    assert for_resend(value) == value
