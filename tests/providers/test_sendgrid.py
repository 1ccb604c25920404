"""The SendGrid provider, driving the real ``sendgrid`` SDK against the fake SendGrid."""

from __future__ import annotations

import pytest

from app.errors import InvalidRecipient, PermanentDeliveryError, ProviderDisabled, TransientDeliveryError
from providers import load_provider
from providers.sendgrid import DEFAULT_BASE_URL, SendGridProvider
from testing.fakes.sendgrid import FakeSendGrid
from tests.providers.support import closed_port, email, fake_fixture, provider_fixture

API_KEY = "SG.test-key"
SENDER = "Herald <herald@example.org>"
ENV = {"HERALD_SENDGRID_API_KEY": API_KEY, "HERALD_EMAIL_FROM": SENDER}

fake = fake_fixture(lambda: FakeSendGrid(api_key=API_KEY))
provider = provider_fixture(lambda fake: SendGridProvider(API_KEY, SENDER, base_url=fake.url, timeout=2.0))


async def test_sends_the_email_with_its_idempotency_marker(fake, provider):
    # When
    receipt = await provider.send(email(html="<p>From <b>Paris</b></p>"))

    # Then
    [sent] = fake.received
    assert receipt.provider == "sendgrid"
    assert receipt.message_id == sent["message_id"]
    assert sent["from"] == "herald@example.org"
    assert sent["payload"]["from"] == {"email": "herald@example.org", "name": "Herald"}
    assert sent["to"] == ["ada@example.org"]
    assert (sent["subject"], sent["text"], sent["html"]) == ("New sign-in", "From Paris", "<p>From <b>Paris</b></p>")
    assert sent["custom_args"] == {"herald_notification_id": "n-1", "herald_channel": "email"}


async def test_text_only_email_has_no_html_part(fake, provider):
    await provider.send(email())

    assert [part["type"] for part in fake.received[0]["payload"]["content"]] == ["text/plain"]


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_error_is_transient(fake, provider, status):
    # Given
    fake.script.fail_next(1, status=status)

    # When / Then
    with pytest.raises(TransientDeliveryError, match=str(status)):
        await provider.send(email())
    assert fake.received == []


async def test_rate_limit_is_transient_and_honours_retry_after(fake, provider):
    fake.script.rate_limit_next(1, retry_after=7)

    with pytest.raises(TransientDeliveryError) as caught:
        await provider.send(email())

    assert caught.value.retry_after == 7
    assert caught.value.retriable


async def test_address_sendgrid_refuses_to_parse_is_an_invalid_recipient(fake, provider):
    with pytest.raises(InvalidRecipient, match="personalizations.0.to.0.email"):
        await provider.send(email(address="not-an-address"))


async def test_address_rejected_by_the_server_is_an_invalid_recipient(fake, provider):
    fake.script.invalid("bounce@example.org")

    with pytest.raises(InvalidRecipient):
        await provider.send(email(address="bounce@example.org"))


async def test_other_bad_request_is_permanent_but_not_a_recipient_error(fake, provider):
    # Given: no subject, which SendGrid requires
    with pytest.raises(PermanentDeliveryError, match="subject") as caught:
        await provider.send(email(title=None))

    assert not isinstance(caught.value, InvalidRecipient)
    assert not caught.value.retriable


async def test_bad_api_key_is_permanent(fake):
    provider = SendGridProvider("SG.wrong", SENDER, base_url=fake.url)

    with pytest.raises(PermanentDeliveryError, match="401"):
        await provider.send(email())
    assert fake.received == []


async def test_slow_server_beyond_the_timeout_is_transient(fake):
    # Given
    fake.script.slow(5)
    provider = SendGridProvider(API_KEY, SENDER, base_url=fake.url, timeout=0.2)

    # When / Then
    with pytest.raises(TransientDeliveryError):
        await provider.send(email())


async def test_connection_refused_is_transient():
    provider = SendGridProvider(API_KEY, SENDER, base_url=f"http://127.0.0.1:{closed_port()}")

    with pytest.raises(TransientDeliveryError):
        await provider.send(email())


@pytest.mark.parametrize("missing", ["HERALD_SENDGRID_API_KEY", "HERALD_EMAIL_FROM"])
def test_from_env_names_the_missing_variable(missing):
    env = {k: v for k, v in ENV.items() if k != missing}

    with pytest.raises(ProviderDisabled, match=missing):
        SendGridProvider.from_env(env)


def test_from_env_defaults_to_sendgrid_and_accepts_another_base_url():
    assert SendGridProvider.from_env(ENV).base_url == DEFAULT_BASE_URL
    other = SendGridProvider.from_env({**ENV, "HERALD_SENDGRID_BASE_URL": "http://127.0.0.1:9"})
    assert other.base_url == "http://127.0.0.1:9"


def test_registered_as_sendgrid():
    assert load_provider("sendgrid") is SendGridProvider
