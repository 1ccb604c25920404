"""The SMTP provider, driving the real ``aiosmtplib`` client against the fake SMTP server (aiosmtpd)."""

from __future__ import annotations

import pytest

from app.errors import InvalidRecipient, PermanentDeliveryError, ProviderDisabled, TransientDeliveryError
from providers import load_provider
from providers.smtp import SmtpProvider, message_id
from testing.fakes.smtp import FakeSmtp
from tests.providers.support import closed_port, email, fake_fixture

SENDER = "Herald <herald@example.org>"
ENV = {"HERALD_SMTP_HOST": "127.0.0.1", "HERALD_EMAIL_FROM": SENDER}

fake = fake_fixture(FakeSmtp)


@pytest.fixture
def provider(fake):
    return SmtpProvider(fake.host, SENDER, port=fake.port, timeout=2.0)


async def test_sends_the_email_with_a_stable_message_id(fake, provider):
    # When
    receipt = await provider.send(email())

    # Then
    [sent] = fake.received
    assert receipt.provider == "smtp"
    assert receipt.message_id == sent["message_id"] == "<n-1.email@herald>"
    assert (sent["mail_from"], sent["rcpt_tos"]) == ("herald@example.org", ["ada@example.org"])
    assert (sent["from"], sent["to"], sent["subject"]) == (SENDER, "ada@example.org", "New sign-in")
    assert sent["text"].strip() == "From Paris"
    assert sent["html"] is None
    assert sent["headers"]["X-Herald-Notification-Id"] == "n-1"
    assert sent["tls"] is False


async def test_html_goes_as_an_alternative_to_the_text(fake, provider):
    await provider.send(email(html="<p>From <b>Paris</b></p>"))

    [sent] = fake.received
    assert sent["text"].strip() == "From Paris"
    assert sent["html"].strip() == "<p>From <b>Paris</b></p>"


async def test_retry_of_the_same_delivery_reuses_the_message_id(fake, provider):
    first = await provider.send(email())
    second = await provider.send(email(attempt=2))

    assert first.message_id == second.message_id


def test_message_id_keeps_odd_notification_ids_valid_and_stable():
    odd = email(notification_id="a b<c>@d")

    assert message_id(odd) == message_id(odd) == "<a%20b%3Cc%3E%40d.email@herald>"


async def test_starttls_is_used_when_offered_and_auth_follows():
    # Given: a relay that offers STARTTLS and requires AUTH over TLS
    async with FakeSmtp(tls=True, credentials={"herald": "s3cret"}) as fake:
        provider = SmtpProvider(fake.host, SENDER, port=fake.port, username="herald", password="s3cret",
                                tls_context=fake.client_tls_context(), timeout=2.0)

        # When
        await provider.send(email())

        # Then
        [sent] = fake.received
        assert (sent["tls"], sent["login"]) == (True, "herald")


async def test_bad_credentials_are_permanent():
    async with FakeSmtp(tls=True, credentials={"herald": "s3cret"}) as fake:
        provider = SmtpProvider(fake.host, SENDER, port=fake.port, username="herald", password="wrong",
                                tls_context=fake.client_tls_context(), timeout=2.0)

        with pytest.raises(PermanentDeliveryError, match="535"):
            await provider.send(email())
        assert fake.received == []


async def test_auth_refused_without_tls_is_permanent():
    # Given: STARTTLS switched off, so the relay never offers AUTH
    async with FakeSmtp(tls=True, credentials={"herald": "s3cret"}) as fake:
        provider = SmtpProvider(fake.host, SENDER, port=fake.port, username="herald", password="s3cret",
                                starttls=False, timeout=2.0)

        with pytest.raises(PermanentDeliveryError, match="AUTH"):
            await provider.send(email())


async def test_unauthenticated_sender_is_refused_permanently():
    async with FakeSmtp(credentials={"herald": "s3cret"}) as fake:
        provider = SmtpProvider(fake.host, SENDER, port=fake.port, timeout=2.0)

        with pytest.raises(PermanentDeliveryError, match="530"):
            await provider.send(email())


async def test_transient_reply_is_transient(fake, provider):
    fake.script.fail_next(1)  # 451

    with pytest.raises(TransientDeliveryError, match="451"):
        await provider.send(email())
    await provider.send(email())
    assert fake.script.count == 1


async def test_rate_limit_reply_is_transient(fake, provider):
    fake.script.rate_limit_next(1, retry_after=30)

    with pytest.raises(TransientDeliveryError, match="4.7.1"):
        await provider.send(email())


@pytest.mark.parametrize(("script", "code"), [("unregistered", "550"), ("invalid", "553")])
async def test_refused_recipient_is_an_invalid_recipient(fake, provider, script, code):
    getattr(fake.script, script)("nobody@example.org")

    with pytest.raises(InvalidRecipient, match=code):
        await provider.send(email(address="nobody@example.org"))


async def test_other_permanent_reply_is_permanent_but_not_a_recipient_error(fake, provider):
    fake.script.fail_next(1, status=554)

    with pytest.raises(PermanentDeliveryError, match="554") as caught:
        await provider.send(email())
    assert not isinstance(caught.value, InvalidRecipient)


async def test_address_with_a_line_break_is_refused_before_connecting(fake, provider):
    with pytest.raises(PermanentDeliveryError):
        await provider.send(email(address="ada@example.org\r\nBcc: eve@example.org"))
    assert fake.script.requests == 0


async def test_slow_server_beyond_the_timeout_is_transient(fake):
    fake.script.slow(5)
    provider = SmtpProvider(fake.host, SENDER, port=fake.port, timeout=0.2)

    with pytest.raises(TransientDeliveryError):
        await provider.send(email())


async def test_connection_refused_is_transient():
    provider = SmtpProvider("127.0.0.1", SENDER, port=closed_port(), timeout=2.0)

    with pytest.raises(TransientDeliveryError):
        await provider.send(email())


@pytest.mark.parametrize("missing", ["HERALD_SMTP_HOST", "HERALD_EMAIL_FROM"])
def test_from_env_names_the_missing_variable(missing):
    env = {k: v for k, v in ENV.items() if k != missing}

    with pytest.raises(ProviderDisabled, match=missing):
        SmtpProvider.from_env(env)


def test_from_env_defaults_to_port_587_with_starttls_when_offered():
    provider = SmtpProvider.from_env(ENV)

    assert (provider.host, provider.port, provider.starttls) == ("127.0.0.1", 587, None)
    assert (provider.username, provider.password) == (None, None)


def test_from_env_reads_port_credentials_and_starttls():
    provider = SmtpProvider.from_env({**ENV, "HERALD_SMTP_PORT": "2525", "HERALD_SMTP_USERNAME": "u",
                                      "HERALD_SMTP_PASSWORD": "p", "HERALD_SMTP_STARTTLS": "false"})

    assert (provider.port, provider.username, provider.password, provider.starttls) == (2525, "u", "p", False)


@pytest.mark.parametrize(("variable", "value"), [("HERALD_SMTP_STARTTLS", "maybe"), ("HERALD_SMTP_PORT", "smtp")])
def test_from_env_refuses_a_bad_value_naming_it(variable, value):
    with pytest.raises(ProviderDisabled, match=variable):
        SmtpProvider.from_env({**ENV, variable: value})


def test_registered_as_smtp():
    assert load_provider("smtp") is SmtpProvider
