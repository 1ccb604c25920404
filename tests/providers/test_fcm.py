"""The FCM provider, driving the real ``firebase-admin`` SDK against the fake FCM."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app.errors import (
    InvalidRecipient,
    PermanentDeliveryError,
    ProviderDisabled,
    TokenUnregistered,
    TransientDeliveryError,
)
from providers import load_provider
from providers.fcm import FCMProvider
from schemas.records import Delivery, PushToken
from testing.fakes.fcm import FakeFCM
from tests.providers import support
from tests.providers.support import closed_port, fake_fixture, provider_fixture

PROJECT = "herald-test"


def push(*tokens: str, **overrides: object) -> Delivery:
    return support.push("fcm", tokens or ("fcm-token-1",),
                        **{"data": {"city": "Paris", "attempts": 3}, **overrides})


@pytest.fixture(autouse=True)
def no_egress(monkeypatch):
    """Route any request that is not for 127.0.0.1 to a closed local port.

    After its first token, google-auth looks up the service account's
    Regional Access Boundary at iamcredentials.googleapis.com in a background
    thread (not configurable); the test must not reach Google, nor leave a
    socket open to it.
    """
    proxy = f"http://127.0.0.1:{closed_port()}"
    for name in ("https_proxy", "http_proxy"):
        monkeypatch.setenv(name, proxy)
        monkeypatch.setenv(name.upper(), proxy)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


fake = fake_fixture(lambda: FakeFCM(project_id=PROJECT))


@pytest.fixture
def credentials(fake, tmp_path):
    return str(fake.write_service_account(tmp_path / "service-account.json"))


provider = provider_fixture(lambda fake, credentials: FCMProvider.from_env(
    {"HERALD_FCM_CREDENTIALS": credentials, "HERALD_FCM_BASE_URL": fake.url}))


async def test_sends_through_the_sdk_with_an_oauth_token_and_herald_data(fake, provider):
    # When
    receipt = await provider.send(push())

    # Then
    [sent] = fake.received
    assert receipt.provider == "fcm"
    assert receipt.message_id == sent["name"]
    assert receipt.message_id.startswith(f"projects/{PROJECT}/messages/")
    assert receipt.unregistered_tokens == ()
    message = sent["message"]
    assert message["token"] == "fcm-token-1"
    assert message["notification"] == {"title": "New sign-in", "body": "From Paris"}
    # FCM data values are strings; herald's ids ride along for the app.
    assert message["data"] == {"city": "Paris", "attempts": "3", "notification_id": "n-1",
                               "channel": "push"}
    # A duplicate replaces the shown notification instead of adding one.
    assert message["android"]["notification"]["tag"] == "n-1"
    assert message["apns"]["headers"]["apns-collapse-id"] == "n-1"
    # The token came from the fake's OAuth endpoint, through the service account's token_uri.
    assert sent["authorization"] == f"Bearer {fake.access_tokens[0]}"


async def test_the_access_token_is_reused_across_sends(fake, provider):
    await provider.send(push())
    await provider.send(push(notification_id="n-2"))

    assert fake.script.count == 2
    assert len(fake.access_tokens) == 1


async def test_sends_to_fcm_tokens_only(fake, provider):
    delivery = push("fcm-token-1", push_tokens=[PushToken(token="fcm-token-1", platform="fcm"),
                                                PushToken(token="apns-token", platform="apns")])

    await provider.send(delivery)

    assert [sent["token"] for sent in fake.received] == ["fcm-token-1"]


async def test_no_fcm_token_is_an_invalid_recipient(fake, provider):
    delivery = push(push_tokens=[PushToken(token="apns-token", platform="apns")])

    with pytest.raises(InvalidRecipient):
        await provider.send(delivery)
    assert fake.script.requests == 0


async def test_one_unregistered_token_is_reported_while_the_other_gets_it(fake, provider):
    # Given
    fake.script.unregistered("old-phone")

    # When
    receipt = await provider.send(push("old-phone", "new-phone"))

    # Then
    [sent] = fake.received
    assert sent["token"] == "new-phone"
    assert receipt.message_id == sent["name"]
    assert receipt.unregistered_tokens == ("old-phone",)


async def test_every_token_unregistered_raises_with_the_tokens(fake, provider):
    fake.script.unregistered("old-phone")
    fake.script.unregistered("older-phone")

    with pytest.raises(TokenUnregistered) as raised:
        await provider.send(push("old-phone", "older-phone"))

    assert set(raised.value.tokens) == {"old-phone", "older-phone"}
    assert not raised.value.retriable


@pytest.mark.parametrize("status", [500, 503])
async def test_server_error_is_transient_and_not_retried_inside_the_sdk(fake, provider, status):
    fake.script.fail_next(1, status=status)

    with pytest.raises(TransientDeliveryError, match="INTERNAL|UNAVAILABLE"):
        await provider.send(push())

    # herald's retry topics retry; the SDK's own 500/503 retries are off.
    assert fake.script.requests == 1


async def test_quota_exceeded_is_transient_and_honours_retry_after(fake, provider):
    fake.script.rate_limit_next(1, retry_after=7)

    with pytest.raises(TransientDeliveryError) as raised:
        await provider.send(push())

    assert raised.value.retry_after == 7.0
    assert fake.script.requests == 1


async def test_sender_id_mismatch_is_permanent(fake, provider):
    fake.script.fail_next(1, status=403)

    with pytest.raises(PermanentDeliveryError, match="PERMISSION_DENIED") as raised:
        await provider.send(push())

    assert not isinstance(raised.value, TokenUnregistered)


async def test_a_401_is_retried_by_google_auth_with_a_fresh_token_then_permanent(fake, provider):
    # Given: FCM keeps refusing the caller (THIRD_PARTY_AUTH_ERROR, 401)
    fake.script.fail_next(3, status=401)

    # When / Then
    with pytest.raises(PermanentDeliveryError, match="UNAUTHENTICATED"):
        await provider.send(push())
    # google-auth's session refreshes the token and retries on 401, twice at most.
    assert fake.script.requests == 3
    assert len(fake.access_tokens) == 3


async def test_invalid_token_is_permanent_but_not_removed(fake, provider):
    fake.script.invalid("garbage")

    with pytest.raises(PermanentDeliveryError, match="INVALID_ARGUMENT") as raised:
        await provider.send(push("garbage"))

    assert not isinstance(raised.value, TokenUnregistered)


async def test_credentials_the_token_endpoint_refuses_are_permanent(fake, tmp_path):
    # Given: a service account signed with a key the OAuth server does not know
    account = fake.service_account()
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    account["private_key"] = other_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    path = tmp_path / "stolen.json"
    path.write_text(json.dumps(account), encoding="utf-8")
    provider = FCMProvider(str(path), base_url=fake.url)

    # When / Then
    try:
        with pytest.raises(PermanentDeliveryError, match="credentials refused"):
            await provider.send(push())
    finally:
        await provider.aclose()
    assert fake.script.requests == 0


async def test_a_hanging_service_is_a_transient_timeout(fake, credentials):
    # Given
    fake.script.accept_then_hang(30)
    provider = FCMProvider(credentials, base_url=fake.url, timeout=0.5)

    # When / Then
    try:
        with pytest.raises(TransientDeliveryError):
            await provider.send(push())
    finally:
        await provider.aclose()


async def test_an_unreachable_service_is_transient(credentials):
    provider = FCMProvider(credentials, base_url=f"http://127.0.0.1:{closed_port()}")

    try:
        with pytest.raises(TransientDeliveryError):
            await provider.send(push())
    finally:
        await provider.aclose()


def test_from_env_names_the_missing_credentials():
    with pytest.raises(ProviderDisabled, match="HERALD_FCM_CREDENTIALS is not set"):
        FCMProvider.from_env({})


def test_from_env_reports_unreadable_credentials(tmp_path):
    with pytest.raises(ProviderDisabled, match="HERALD_FCM_CREDENTIALS"):
        FCMProvider.from_env({"HERALD_FCM_CREDENTIALS": str(tmp_path / "missing.json")})


def test_from_env_wants_a_project_when_the_service_account_names_none(fake, tmp_path):
    account = {**fake.service_account(), "project_id": ""}
    (tmp_path / "sa.json").write_text(json.dumps(account), encoding="utf-8")

    with pytest.raises(ProviderDisabled, match="HERALD_FCM_PROJECT_ID is not set"):
        FCMProvider.from_env({"HERALD_FCM_CREDENTIALS": str(tmp_path / "sa.json")})


async def test_project_id_setting_overrides_the_credentials(fake, credentials):
    provider = FCMProvider.from_env({"HERALD_FCM_CREDENTIALS": credentials,
                                     "HERALD_FCM_BASE_URL": fake.url,
                                     "HERALD_FCM_PROJECT_ID": "other-project"})
    try:
        # The fake only serves its own project, as FCM refuses a project the account cannot use.
        with pytest.raises(PermanentDeliveryError, match="PERMISSION_DENIED"):
            await provider.send(push())
    finally:
        await provider.aclose()


def test_registered_as_fcm():
    assert load_provider("fcm") is FCMProvider


async def test_an_installation_id_is_sent_as_fid_and_a_registration_token_as_token(fake, provider):
    fid = "cRk2ZyC6RU-KfTUu4ESBJ7"

    await provider.send(push(fid, f"{fid}:APA91bH0-registration-token"))

    assert sorted((sent["target"], sent["token"]) for sent in fake.received) == [
        ("fid", fid), ("token", f"{fid}:APA91bH0-registration-token")]




async def test_aclose_twice_is_harmless(provider):
    await provider.aclose()
    await provider.aclose()
