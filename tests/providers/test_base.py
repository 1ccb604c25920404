"""What every provider shares: reading Retry-After and combining the per-token outcomes of a push."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from app.errors import PermanentDeliveryError, TokenUnregistered, TransientDeliveryError
from providers.base import Receipt, combine_push_outcomes, retry_after_seconds

#: Wed, 21 Oct 2015 07:28:00 GMT as a Unix timestamp.
OCT_21 = datetime(2015, 10, 21, 7, 28, tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize(("value", "now", "expected"), [
    ("3", None, 3.0),
    ("0.5", None, 0.5),
    ("-1", None, 0.0),
    ("Wed, 21 Oct 2015 07:28:00 GMT", None, 0.0),
    ("Wed, 21 Oct 2015 07:28:00 GMT", OCT_21 - 90, 90.0),
    ("Wed, 21 Oct 2015 07:28:00 GMT", OCT_21 + 90, 0.0),
    ("Wed, 21 Oct 2015 09:28:00 +0200", OCT_21 - 30, 30.0),
    ("Wed, 21 Oct 2015 07:28:00 -0000", OCT_21 - 30, 30.0),
    ("soon", None, None),
    ("", None, None),
    (None, None, None),
])
def test_retry_after_reads_seconds_and_http_dates(value, now, expected):
    assert retry_after_seconds(value, now=now) == expected


def test_retry_after_as_a_future_http_date_is_the_seconds_until_then():
    value = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=60), usegmt=True)

    assert 55 <= retry_after_seconds(value) <= 60


def gone(token: str) -> TokenUnregistered:
    return TokenUnregistered(f"push: token unregistered: {token}", tokens=(token,))


def test_push_outcomes_are_delivered_when_any_device_accepted_and_name_the_gone_tokens():
    receipt = combine_push_outcomes("apns", ["old", "down", "new"],
                                    [gone("old"), TransientDeliveryError("down"), "id-3"])

    assert receipt == Receipt("apns", "id-3", ("old",))


def test_push_outcomes_all_gone_raise_with_every_token():
    with pytest.raises(TokenUnregistered, match=r"^fcm: every token is unregistered \(2\)$") as raised:
        combine_push_outcomes("fcm", ["a", "b"], [gone("a"), gone("b")])

    assert raised.value.tokens == ("a", "b")


def test_push_outcomes_raise_the_first_retriable_failure_else_the_first_failure():
    refused, busy = PermanentDeliveryError("refused"), TransientDeliveryError("busy")

    with pytest.raises(TransientDeliveryError) as raised:
        combine_push_outcomes("fcm", ["a", "b", "c"], [gone("a"), refused, busy])
    assert raised.value is busy

    with pytest.raises(PermanentDeliveryError) as raised:
        combine_push_outcomes("fcm", ["a", "b"], [gone("a"), refused])
    assert raised.value is refused


def test_push_outcomes_raise_an_unexpected_exception_as_is():
    bug = KeyError("bug")

    with pytest.raises(KeyError) as raised:
        combine_push_outcomes("apns", ["a", "b"], ["id-1", bug])

    assert raised.value is bug
