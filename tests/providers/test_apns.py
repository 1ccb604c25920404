"""The APNs provider, driving the real ``aioapns`` client over HTTP/2 and TLS against the fake APNs."""

from __future__ import annotations

import ssl
import uuid

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from app.errors import (
    InvalidRecipient,
    PermanentDeliveryError,
    ProviderDisabled,
    TokenUnregistered,
    TransientDeliveryError,
)
from providers import load_provider
from providers.apns import APNsProvider
from schemas.records import Delivery, PushToken
from testing.fakes.apns import FakeAPNs
from tests.providers import support
from tests.providers.support import closed_port, fake_fixture, provider_fixture

KEY_ID, TEAM_ID, TOPIC = "KEY1234567", "TEAM123456", "org.example.herald"
PHONE, TABLET, OLD_PHONE = "a1" * 32, "b2" * 32, "c3" * 32


def push(*tokens: str, **overrides: object) -> Delivery:
    return support.push("apns", tokens or (PHONE,), **overrides)


fake = fake_fixture(lambda: FakeAPNs(key_id=KEY_ID, team_id=TEAM_ID, topic=TOPIC))


@pytest.fixture
def env(fake, tmp_path):
    return {
        "HERALD_APNS_KEY": str(fake.write_key(tmp_path / f"AuthKey_{KEY_ID}.p8")),
        "HERALD_APNS_KEY_ID": KEY_ID, "HERALD_APNS_TEAM_ID": TEAM_ID, "HERALD_APNS_TOPIC": TOPIC,
        "HERALD_APNS_BASE_URL": fake.url,
        "HERALD_APNS_CA_FILE": str(fake.write_ca(tmp_path / "ca.pem")),
    }


provider = provider_fixture(APNsProvider.from_env)


async def test_sends_over_http2_with_a_provider_token_and_herald_payload(fake, provider):
    # When
    receipt = await provider.send(push())

    # Then
    [sent] = fake.received
    assert receipt.provider == "apns"
    assert receipt.message_id == sent["apns_id"]
    assert uuid.UUID(receipt.message_id)
    assert receipt.unregistered_tokens == ()
    assert (sent["token"], sent["topic"]) == (PHONE, TOPIC)
    assert sent["payload"] == {
        "aps": {"alert": {"title": "New sign-in", "body": "From Paris"}, "sound": "default"},
        "herald": {"notification_id": "n-1", "channel": "push"},
        "city": "Paris",
    }
    # A duplicate of the notification collapses into the one already shown.
    assert sent["headers"]["apns-collapse-id"] == "n-1"
    assert sent["headers"]["apns-push-type"] == "alert"
    # The fake verified the ES256 signature; the token names the key and the team.
    assert sent["headers"]["authorization"].startswith("bearer ")
    assert sent["jwt"]["header"]["kid"] == KEY_ID
    assert sent["jwt"]["claims"]["iss"] == TEAM_ID


async def test_apns_id_is_stable_for_a_notification_and_device(fake, provider):
    first = await provider.send(push())
    again = await provider.send(push())
    other = await provider.send(push(notification_id="n-2"))

    assert first.message_id == again.message_id != other.message_id
    assert fake.script.count == 3


async def test_a_delivery_without_text_is_a_background_push(fake, provider):
    await provider.send(push(title=None, body=None))

    [sent] = fake.received
    assert sent["payload"]["aps"] == {"content-available": 1}
    assert (sent["headers"]["apns-push-type"], sent["headers"]["apns-priority"]) == ("background", "5")


async def test_sends_to_apns_tokens_only(fake, provider):
    delivery = push(push_tokens=[PushToken(token=PHONE, platform="apns"),
                                 PushToken(token="fcm-token", platform="fcm")])

    await provider.send(delivery)

    assert [sent["token"] for sent in fake.received] == [PHONE]


async def test_no_apns_token_is_an_invalid_recipient(fake, provider):
    with pytest.raises(InvalidRecipient):
        await provider.send(push(push_tokens=[PushToken(token="fcm-token", platform="fcm")]))
    assert fake.script.requests == 0


async def test_one_unregistered_token_is_reported_while_the_other_gets_it(fake, provider):
    # Given
    fake.script.unregistered(OLD_PHONE)

    # When
    receipt = await provider.send(push(OLD_PHONE, PHONE))

    # Then
    [sent] = fake.received
    assert sent["token"] == PHONE
    assert receipt.message_id == sent["apns_id"]
    assert receipt.unregistered_tokens == (OLD_PHONE,)


async def test_every_token_gone_raises_with_the_tokens(fake, provider):
    # Given: one unregistered (410), one Apple calls a bad device token (400)
    fake.script.unregistered(OLD_PHONE)
    fake.script.invalid(TABLET)

    # When / Then
    with pytest.raises(TokenUnregistered) as raised:
        await provider.send(push(OLD_PHONE, TABLET))
    assert set(raised.value.tokens) == {OLD_PHONE, TABLET}


@pytest.mark.parametrize("status", [500, 503])
async def test_server_error_is_transient(fake, provider, status):
    fake.script.fail_next(1, status=status)

    with pytest.raises(TransientDeliveryError, match=str(status)):
        await provider.send(push())


async def test_too_many_requests_is_transient_with_retry_after(fake, provider):
    fake.script.rate_limit_next(1, retry_after=9)

    with pytest.raises(TransientDeliveryError, match="TooManyRequests") as raised:
        await provider.send(push())

    assert raised.value.retry_after == 9.0


async def test_a_key_apple_does_not_know_is_a_permanent_failure(fake, env, tmp_path):
    # Given: a .p8 key of another team
    stranger = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (tmp_path / "stranger.p8").write_bytes(stranger)
    provider = APNsProvider.from_env({**env, "HERALD_APNS_KEY": str(tmp_path / "stranger.p8")})

    # When / Then
    try:
        with pytest.raises(PermanentDeliveryError, match="403 InvalidProviderToken") as raised:
            await provider.send(push())
    finally:
        await provider.aclose()
    assert not isinstance(raised.value, TokenUnregistered)
    assert fake.received == []


async def test_a_topic_the_key_may_not_push_is_permanent(fake, env):
    provider = APNsProvider.from_env({**env, "HERALD_APNS_TOPIC": "org.example.other"})

    try:
        with pytest.raises(PermanentDeliveryError, match="TopicDisallowed"):
            await provider.send(push())
    finally:
        await provider.aclose()


async def test_a_hanging_service_is_a_transient_timeout(fake, env):
    # Given
    fake.script.accept_then_hang(30)
    settings = APNsProvider.from_env(env)
    provider = APNsProvider(settings.key, KEY_ID, TEAM_ID, TOPIC, base_url=fake.url,
                            ca_file=env["HERALD_APNS_CA_FILE"], timeout=0.5)

    # When / Then
    try:
        with pytest.raises(TransientDeliveryError, match="no answer"):
            await provider.send(push())
    finally:
        await provider.aclose()
        await settings.aclose()
    assert fake.script.count == 1


async def test_a_late_answer_after_a_timeout_leaves_the_connection_usable(fake, env):
    # Given: a send that timed out, whose answer comes later on the same connection
    fake.script.slow(1.0)
    provider = APNsProvider(APNsProvider.from_env(env).key, KEY_ID, TEAM_ID, TOPIC, base_url=fake.url,
                            ca_file=env["HERALD_APNS_CA_FILE"], timeout=0.5)
    try:
        with pytest.raises(TransientDeliveryError):
            await provider.send(push())
        fake.script.slow(0)

        # When
        await provider.send(push(TABLET))
        await fake.script.wait_for_count(2)
        receipt = await provider.send(push(OLD_PHONE))

        # Then
        assert receipt.message_id == fake.received[-1]["apns_id"]
        assert fake.connections_accepted == 1
    finally:
        await provider.aclose()


async def test_an_untrusted_certificate_is_transient(fake, env):
    # Without the fake's CA the TLS handshake fails, like any connection failure.
    env = {k: v for k, v in env.items() if k != "HERALD_APNS_CA_FILE"}
    provider = APNsProvider.from_env(env)

    try:
        with pytest.raises(TransientDeliveryError, match="connection failed"):
            await provider.send(push())
    finally:
        await provider.aclose()
    assert fake.script.requests == 0


async def test_an_unreachable_service_is_transient(env):
    provider = APNsProvider.from_env({**env, "HERALD_APNS_BASE_URL": f"https://127.0.0.1:{closed_port()}"})

    try:
        with pytest.raises(TransientDeliveryError, match="connection failed"):
            await provider.send(push())
    finally:
        await provider.aclose()


async def test_the_connection_is_reused_and_closed_on_aclose(fake, env):
    provider = APNsProvider.from_env(env)
    await provider.send(push())
    await provider.send(push(notification_id="n-2"))
    assert fake.connections_accepted == 1

    await provider.aclose()

    assert fake.open_connections == 0


def test_defaults_to_apple_production_over_verified_tls():
    provider = APNsProvider(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode(), KEY_ID, TEAM_ID, TOPIC)

    assert provider.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert (provider.host, provider.port) == ("api.push.apple.com", 443)


@pytest.mark.parametrize("missing", ["HERALD_APNS_KEY", "HERALD_APNS_KEY_ID", "HERALD_APNS_TEAM_ID",
                                     "HERALD_APNS_TOPIC"])
def test_from_env_names_the_missing_setting(env, missing):
    with pytest.raises(ProviderDisabled, match=f"{missing} is not set"):
        APNsProvider.from_env({k: v for k, v in env.items() if k != missing})


def test_from_env_refuses_a_key_that_cannot_sign(env, tmp_path):
    (tmp_path / "garbage.p8").write_text("not a key", encoding="ascii")

    with pytest.raises(ProviderDisabled, match="HERALD_APNS_KEY .* not a usable ES256 key"):
        APNsProvider.from_env({**env, "HERALD_APNS_KEY": str(tmp_path / "garbage.p8")})


def test_registered_as_apns():
    assert load_provider("apns") is APNsProvider


@pytest.mark.parametrize(("setting", "value"), [
    ("HERALD_APNS_BASE_URL", "http://127.0.0.1:1"),
    ("HERALD_APNS_CA_FILE", "/nonexistent/ca.pem"),
])
def test_from_env_names_an_unusable_setting(env, setting, value):
    with pytest.raises(ProviderDisabled, match=setting):
        APNsProvider.from_env({**env, setting: value})
