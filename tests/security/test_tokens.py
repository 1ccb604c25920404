"""JWT and API-key attacks on app.auth: every one ends in AuthError 401/403, nothing else."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from app.auth import AuthConfig, AuthError, authorize, parse_api_keys
from tests.fuzz.strategies import hostile_text
from tests.unit.test_auth import CONFIG, RSA_KEY, SECRET, _pem, bearer

HS_ONLY = AuthConfig(api_keys=parse_api_keys("ops:KEY-O:admin"), jwt_secret=SECRET)


def b64(value: object) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def claims(**extra: object) -> dict[str, object]:
    return {"sub": "u-1", "exp": int(time.time()) + 3600, **extra}


def denied(config: AuthConfig, value: str, status: int = 401, **need: str) -> str:
    with pytest.raises(AuthError) as raised:
        authorize(config, bearer(value), **{"user_id": "u-1", **need})
    assert raised.value.status == status, raised.value.message
    return raised.value.message


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE", ""])
def test_unsigned_tokens_are_refused_whatever_the_spelling_of_none(alg):
    message = denied(CONFIG, f"{b64({'alg': alg, 'typ': 'JWT'})}.{b64(claims())}.")
    assert "not accepted" in message


@pytest.mark.parametrize("algorithm", ["HS384", "HS512", "RS512", "PS256", "ES256"])
def test_only_hs256_and_rs256_are_accepted(algorithm):
    key = {"H": SECRET + "-padding-for-hs512-keys-longer-than-64-bytes-xxxxxxxxxx",
           "R": RSA_KEY, "P": RSA_KEY, "E": ec.generate_private_key(ec.SECP256R1())}
    token = jwt.encode(claims(), key[algorithm[0]], algorithm=algorithm)
    assert f"{algorithm!r} not accepted" in denied(CONFIG, token)


def test_an_rs256_token_is_refused_where_only_hs256_is_configured():
    assert "'RS256' not accepted" in denied(HS_ONLY, jwt.encode(claims(), RSA_KEY,
                                                                algorithm="RS256"))


def test_hs256_signed_with_the_rs256_public_key_is_refused_when_both_are_configured():
    # The classic confusion: the server's own public PEM used as the HMAC secret.
    # (PyJWT refuses to sign so, so the HMAC is computed by hand.)
    signing_input = f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64(claims())}"
    mac = hmac.new(_pem(RSA_KEY).encode(), signing_input.encode(), hashlib.sha256).digest()
    assert denied(CONFIG, f"{signing_input}.{b64(mac)}") == "invalid token signature"


def test_a_key_embedded_in_the_header_is_not_trusted():
    # jwk / jku / kid in the header must not choose the verification key.
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(claims(), attacker, algorithm="RS256", headers={
        "jwk": json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(attacker.public_key())),
        "jku": "http://attacker.example/keys", "kid": "../../../dev/null"})
    assert denied(CONFIG, token) == "invalid token signature"


def test_a_tampered_payload_fails_the_signature():
    header, _, signature = jwt.encode(claims(), SECRET, algorithm="HS256").split(".")
    assert denied(CONFIG, f"{header}.{b64(claims(sub='u-admin'))}.{signature}") == \
        "invalid token signature"


@pytest.mark.parametrize(("payload", "message"), [
    ({"sub": "u-1"}, "lacks the 'exp' claim"),
    ({"exp": int(time.time()) + 3600}, "lacks the 'sub' claim"),
    (claims(exp=int(time.time()) - 31), "expired token"),
    (claims(exp="tomorrow"), "invalid token"),
    (claims(nbf=int(time.time()) + 3600), "invalid token"),
    (claims(sub=42), "Subject must be a string"),
    (claims(sub=""), "'sub' must be"),
    (claims(sub=["u-1"]), "Subject must be a string"),
])
def test_claims_are_enforced(payload, message):
    assert message in denied(CONFIG, jwt.encode(payload, SECRET, algorithm="HS256"))


def test_a_token_for_another_user_is_forbidden_not_unauthorized():
    token = jwt.encode(claims(sub="u-2"), SECRET, algorithm="HS256")
    assert "may not access user 'u-1'" in denied(CONFIG, token, status=403)


def test_an_end_user_token_has_no_scope():
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    with pytest.raises(AuthError) as raised:
        authorize(CONFIG, bearer(token), scope="ingest")
    assert raised.value.status == 403


@pytest.mark.parametrize("value", ["KEY-A ", " KEY-A", "key-a", "KEY-", "KEY-A\x00", "KEY-AB"])
def test_api_keys_match_exactly(value):
    with pytest.raises(AuthError) as raised:
        authorize(CONFIG, {"X-API-Key": value + "x" if value.strip() == "KEY-A" else value},
                  scope="ingest")
    assert raised.value.status == 401


jwt_like = st.builds(
    lambda header, payload: f"Bearer {b64(header)}.{b64(payload)}.c2ln",
    st.dictionaries(st.sampled_from(["alg", "typ", "kid"]),
                    st.one_of(st.sampled_from(["HS256", "RS256", "none"]), hostile_text,
                              st.integers(), st.none())),
    st.dictionaries(st.sampled_from(["sub", "exp", "aud", "nbf"]),
                    st.one_of(hostile_text, st.integers(), st.none())))
three_parts = st.tuples(hostile_text, hostile_text, hostile_text).map(
    lambda parts: "Bearer " + ".".join(b64(p.encode("utf-8", "surrogatepass")) for p in parts))
headers = st.dictionaries(
    st.sampled_from(["Authorization", "authorization", "X-API-Key", "x-api-key", "Cookie"]),
    st.one_of(hostile_text, hostile_text.map(lambda t: "Bearer " + t), three_parts, jwt_like),
    max_size=3)


@pytest.mark.parametrize("headers", [
    # aiohttp decodes header bytes that are not UTF-8 with surrogateescape:
    # the key comparison raised UnicodeEncodeError (a 500) before the fix.
    {"X-API-Key": "\udcff"}, {"Authorization": "Bearer \udcff"},
    {"Authorization": "Bearer \udcff.\udcff.\udcff"},
    # PyJWT raised InvalidTokenError (not DecodeError) for a "kid" that is not a string.
    {"Authorization": "Bearer eyJhbGciOiBudWxsLCAidHlwIjogbnVsbCwgImtpZCI6IDB9.e30.c2ln"}])
def test_header_values_that_once_escaped_as_exceptions_are_refused(headers):
    with pytest.raises(AuthError) as raised:
        authorize(CONFIG, headers, scope="ingest")
    assert raised.value.status == 401


@settings(max_examples=500, derandomize=True, deadline=None)
@given(headers=headers, user=hostile_text)
def test_any_headers_give_a_principal_or_an_auth_error(headers, user):
    try:
        authorize(CONFIG, headers, user_id=user or "u-1")
    except AuthError as exc:
        assert exc.status in (401, 403) and exc.message.strip()
