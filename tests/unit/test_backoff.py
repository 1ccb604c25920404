"""Exponential backoff with jitter."""

import random

import pytest

from rules.backoff import backoff_delay


@pytest.mark.parametrize(("attempt", "expected"), [(1, 0.5), (2, 1.0), (3, 2.0), (7, 30.0),
                                                   (50, 30.0)])
def test_doubles_up_to_the_cap_without_jitter(attempt, expected):
    assert backoff_delay(attempt, base=0.5, cap=30.0, jitter=0.0) == expected


def test_jitter_stays_within_its_fraction_and_varies():
    rand = random.Random(7)
    delays = {backoff_delay(3, base=1.0, cap=60.0, jitter=0.2, rand=rand) for _ in range(50)}
    assert all(3.2 <= d <= 4.8 for d in delays)
    assert len(delays) > 1
