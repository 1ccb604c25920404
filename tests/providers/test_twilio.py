"""The Twilio provider, driving the real ``twilio`` SDK (async client) against the fake Twilio."""

from __future__ import annotations

import re

import pytest

from app.errors import InvalidRecipient, PermanentDeliveryError, ProviderDisabled, TransientDeliveryError
from providers import load_provider
from providers.twilio import DEFAULT_BASE_URL, TwilioProvider
from testing.fakes.twilio import FakeTwilio
from tests.providers.support import closed_port, fake_fixture, provider_fixture, sms

SID = "AC" + "1" * 32
TOKEN = "auth-token"
SENDER = "+15005550006"
ENV = {"HERALD_TWILIO_ACCOUNT_SID": SID, "HERALD_TWILIO_AUTH_TOKEN": TOKEN, "HERALD_SMS_FROM": SENDER}

fake = fake_fixture(lambda: FakeTwilio(account_sid=SID, auth_token=TOKEN))
provider = provider_fixture(lambda fake: TwilioProvider(SID, TOKEN, SENDER, base_url=fake.url, timeout=2.0))


async def test_sends_the_sms_and_returns_the_message_sid(fake, provider):
    # When
    receipt = await provider.send(sms())

    # Then
    [sent] = fake.received
    assert receipt.provider == "twilio"
    assert re.fullmatch(r"SM[0-9a-f]{32}", receipt.message_id)
    assert receipt.message_id == sent["sid"]
    assert (sent["account_sid"], sent["to"], sent["from"], sent["body"]) == (SID, "+33612345678", SENDER,
                                                                             "Your code is 123456")
    # Nothing but the message goes on the wire: no token, no status callback.
    assert set(sent["form"]) == {"To", "From", "Body"}


async def test_client_is_reused_across_sends(fake, provider):
    await provider.send(sms())
    await provider.send(sms(notification_id="n-2"))

    assert fake.script.count == 2


@pytest.mark.parametrize("status", [500, 503])
async def test_server_error_is_transient(fake, provider, status):
    fake.script.fail_next(1, status=status)

    with pytest.raises(TransientDeliveryError, match=str(status)):
        await provider.send(sms())


async def test_rate_limit_is_transient_and_honours_retry_after(fake, provider):
    fake.script.rate_limit_next(1, retry_after=3)

    with pytest.raises(TransientDeliveryError) as caught:
        await provider.send(sms())

    assert caught.value.retry_after == 3


async def test_number_that_is_not_e164_is_an_invalid_recipient(fake, provider):
    with pytest.raises(InvalidRecipient, match="21211"):
        await provider.send(sms(address="0612345678"))


async def test_number_that_is_not_a_mobile_is_an_invalid_recipient(fake, provider):
    fake.script.unregistered("+33112345678")

    with pytest.raises(InvalidRecipient, match="21614"):
        await provider.send(sms(address="+33112345678"))


async def test_other_client_error_is_permanent(fake, provider):
    fake.script.fail_next(1, status=403)

    with pytest.raises(PermanentDeliveryError) as caught:
        await provider.send(sms())

    assert not isinstance(caught.value, InvalidRecipient)


@pytest.mark.parametrize(("sid", "token"), [(SID, "wrong"), ("AC" + "2" * 32, TOKEN)])
async def test_bad_credentials_are_permanent(fake, sid, token):
    provider = TwilioProvider(sid, token, SENDER, base_url=fake.url)
    try:
        with pytest.raises(PermanentDeliveryError, match="20003"):
            await provider.send(sms())
    finally:
        await provider.aclose()
    assert fake.received == []


async def test_slow_server_beyond_the_timeout_is_transient(fake):
    fake.script.slow(5)
    provider = TwilioProvider(SID, TOKEN, SENDER, base_url=fake.url, timeout=0.2)
    try:
        with pytest.raises(TransientDeliveryError, match="no answer"):
            await provider.send(sms())
    finally:
        await provider.aclose()


async def test_connection_refused_is_transient():
    provider = TwilioProvider(SID, TOKEN, SENDER, base_url=f"http://127.0.0.1:{closed_port()}")
    try:
        with pytest.raises(TransientDeliveryError):
            await provider.send(sms())
    finally:
        await provider.aclose()


async def test_edge_and_region_in_the_process_environment_do_not_move_the_base_url(fake, monkeypatch):
    # Given: variables the twilio SDK would read from os.environ
    monkeypatch.setenv("TWILIO_EDGE", "sydney")
    monkeypatch.setenv("TWILIO_REGION", "au1")
    provider = TwilioProvider(SID, TOKEN, SENDER, base_url=fake.url)
    try:
        await provider.send(sms())
    finally:
        await provider.aclose()

    assert fake.script.count == 1


@pytest.mark.parametrize("missing", ["HERALD_TWILIO_ACCOUNT_SID", "HERALD_TWILIO_AUTH_TOKEN", "HERALD_SMS_FROM"])
def test_from_env_names_the_missing_variable(missing):
    env = {k: v for k, v in ENV.items() if k != missing}

    with pytest.raises(ProviderDisabled, match=missing):
        TwilioProvider.from_env(env)


def test_from_env_defaults_to_twilio_and_accepts_another_base_url():
    assert TwilioProvider.from_env(ENV).base_url == DEFAULT_BASE_URL
    other = TwilioProvider.from_env({**ENV, "HERALD_TWILIO_BASE_URL": "http://127.0.0.1:9"})
    assert other.base_url == "http://127.0.0.1:9"


def test_registered_as_twilio():
    assert load_provider("twilio") is TwilioProvider

