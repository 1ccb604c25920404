"""Who may call the REST API: API keys, HS256 and RS256 JWTs, and the 401/403/503 rules."""

from __future__ import annotations

import re
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app.auth import (
    NOT_CONFIGURED,
    AuthConfig,
    AuthError,
    Principal,
    authorize,
    parse_api_keys,
    parse_jwt_public_key,
    parse_jwt_secret,
)

SECRET = "a-test-secret-that-is-long-enough-for-hs256"
OTHER_SECRET = "another-secret-that-is-long-enough-for-hs256"
KEYS = parse_api_keys("svc-a:KEY-A:ingest,admin; svc-b:KEY-B:ingest; ops:KEY-O:admin")


def _pem(private_key: rsa.RSAPrivateKey) -> str:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
CONFIG = AuthConfig(api_keys=KEYS, jwt_secret=SECRET, jwt_public_key=_pem(RSA_KEY))
AUDIENCE_CONFIG = AuthConfig(jwt_secret=SECRET, jwt_audience="herald")


def token(sub: str | None = "u-1", *, key: object = SECRET, algorithm: str = "HS256",
          expires_in: float = 86400, **claims: object) -> str:
    payload = {"exp": int(time.time() + expires_in), **claims}
    if sub is not None:
        payload["sub"] = sub
    return jwt.encode(payload, key, algorithm=algorithm)  # type: ignore[arg-type]


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


# --- HERALD_API_KEYS grammar ---------------------------------------------------------------

def test_api_keys_grammar_gives_names_keys_and_scopes():
    keys = parse_api_keys(" svc-a : KEY1 : ingest , admin ;svc-b:KEY2:ingest;")
    assert [(k.name, k.key, sorted(k.scopes)) for k in keys] == [
        ("svc-a", "KEY1", ["admin", "ingest"]), ("svc-b", "KEY2", ["ingest"])]


def test_a_key_may_contain_colons():
    (key,) = parse_api_keys("svc:abc:def:ingest")
    assert (key.name, key.key) == ("svc", "abc:def")


def test_keys_are_not_shown_in_reprs():
    assert "KEY-A" not in repr(KEYS) and SECRET not in repr(CONFIG)


@pytest.mark.parametrize(("raw", "message"), [
    ("", "no keys"),
    ("svc-a:KEY1", "entry 1 is not name:key:scope"),
    (":KEY1:ingest", "entry 1 is not name:key:scope"),
    ("svc-a::ingest", "entry 1 is not name:key:scope"),
    ("svc-a:KEY1:", "scopes must be among ingest, admin"),
    ("svc-a:KEY1:ingest,root", "got root"),
    ("svc-a:KEY1:ingest;svc-a:KEY2:ingest", "name 'svc-a' used twice"),
    ("svc-a:KEY1:ingest;svc-b:KEY1:ingest", "key already given"),
])
def test_malformed_api_keys_say_what_is_wrong(raw, message):
    with pytest.raises(ValueError, match=message):
        parse_api_keys(raw)


def test_a_short_jwt_secret_is_refused():
    with pytest.raises(ValueError, match="at least 32 bytes"):
        parse_jwt_secret("short")
    assert parse_jwt_secret(SECRET) == SECRET


def test_jwt_public_key_is_pem_text_or_a_file(tmp_path):
    pem = _pem(RSA_KEY)
    assert parse_jwt_public_key(pem) == pem
    (tmp_path / "key.pem").write_text(pem)
    assert parse_jwt_public_key(str(tmp_path / "key.pem")) == pem
    with pytest.raises(ValueError, match="neither PEM text nor a readable file"):
        parse_jwt_public_key(str(tmp_path / "missing.pem"))
    with pytest.raises(ValueError):
        parse_jwt_public_key("-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----")


# --- decisions ------------------------------------------------------------------------------

INGEST = {"scope": "ingest"}
USER_1 = {"user_id": "u-1"}


def service(name: str, *scopes: str) -> Principal:
    return Principal("service", name, frozenset(scopes))


ALLOWED = [
    pytest.param(bearer("KEY-B"), INGEST, service("svc-b", "ingest"), id="ingest key ingests"),
    pytest.param({"X-API-Key": "KEY-A"}, INGEST, service("svc-a", "ingest", "admin"),
                 id="X-API-Key header"),
    pytest.param({"authorization": "bearer KEY-B"}, INGEST, service("svc-b", "ingest"),
                 id="header names and scheme are case-insensitive"),
    pytest.param(bearer("KEY-O"), {"user_id": "u-9"}, service("ops", "admin"),
                 id="admin key reads any user"),
    pytest.param(bearer(token("u-1")), USER_1, Principal("user", "u-1"),
                 id="HS256 user reads own inbox"),
    pytest.param(bearer(token("u-2", key=RSA_KEY, algorithm="RS256")), {"user_id": "u-2"},
                 Principal("user", "u-2"), id="RS256 user reads own inbox"),
]


@pytest.mark.parametrize(("headers", "need", "principal"), ALLOWED)
def test_allowed(headers, need, principal):
    assert authorize(CONFIG, headers, **need) == principal


NO_EXP = jwt.encode({"sub": "u-1"}, SECRET, algorithm="HS256")
ALG_NONE = jwt.encode({"sub": "u-1", "exp": int(time.time()) + 86400}, None, algorithm="none")
HS_ONLY = AuthConfig(jwt_secret=SECRET)

DENIED = [
    pytest.param(CONFIG, {}, INGEST, 401, "missing credentials", id="missing"),
    pytest.param(CONFIG, {"Authorization": "Basic abc"}, INGEST, 401,
                 "malformed Authorization header", id="not bearer"),
    pytest.param(CONFIG, {"Authorization": "Bearer "}, INGEST, 401,
                 "malformed Authorization header", id="empty bearer"),
    pytest.param(CONFIG, {"X-API-Key": " "}, INGEST, 401, "empty X-API-Key", id="empty key"),
    pytest.param(CONFIG, bearer("KEY-X"), INGEST, 401, "invalid API key or JWT", id="wrong key"),
    pytest.param(CONFIG, {"X-API-Key": "KEY-X"}, INGEST, 401, "invalid API key$",
                 id="wrong X-API-Key"),
    pytest.param(CONFIG, {"X-API-Key": token("u-1")}, USER_1, 401, "invalid API key$",
                 id="JWT in X-API-Key"),
    pytest.param(CONFIG, bearer("a.b.c"), USER_1, 401, "malformed token", id="malformed JWT"),
    pytest.param(CONFIG, bearer(token("u-1", expires_in=-3600)), USER_1, 401, "expired token",
                 id="expired JWT"),
    pytest.param(CONFIG, bearer(token("u-1", key=OTHER_SECRET)), USER_1, 401,
                 "invalid token signature", id="HS256 wrong signature"),
    pytest.param(CONFIG, bearer(token("u-1", key=OTHER_RSA_KEY, algorithm="RS256")), USER_1,
                 401, "invalid token signature", id="RS256 wrong signature"),
    pytest.param(HS_ONLY, bearer(token("u-1", key=RSA_KEY, algorithm="RS256")), USER_1, 401,
                 "'RS256' not accepted", id="RS256 not configured"),
    pytest.param(CONFIG, bearer(ALG_NONE), USER_1, 401, "'none' not accepted", id="alg none"),
    pytest.param(CONFIG, bearer(NO_EXP), USER_1, 401, "lacks the 'exp' claim", id="no exp"),
    pytest.param(CONFIG, bearer(token(None)), USER_1, 401, "lacks the 'sub' claim", id="no sub"),
    pytest.param(AUDIENCE_CONFIG, bearer(token("u-1", aud="other")), USER_1, 401,
                 "audience is not 'herald'", id="wrong audience"),
    pytest.param(AUDIENCE_CONFIG, bearer(token("u-1")), USER_1, 401, "lacks the 'aud' claim",
                 id="missing audience"),
    pytest.param(CONFIG, bearer(token("u-1")), {"user_id": "u-2"}, 403,
                 "token for user 'u-1' may not access user 'u-2'", id="cross-user"),
    pytest.param(CONFIG, bearer(token("u-1")), INGEST, 403,
                 "end-user token lacks the 'ingest' scope", id="user cannot ingest"),
    pytest.param(CONFIG, bearer("KEY-O"), INGEST, 403, "API key 'ops' lacks the 'ingest' scope",
                 id="admin-only key cannot ingest"),
    pytest.param(CONFIG, bearer("KEY-B"), USER_1, 403, "API key 'svc-b' lacks the 'admin' scope",
                 id="ingest key cannot read users"),
    pytest.param(AuthConfig(), bearer("KEY-A"), INGEST, 503, re.escape(NOT_CONFIGURED),
                 id="nothing configured"),
    pytest.param(AuthConfig(), {}, USER_1, 503, re.escape(NOT_CONFIGURED),
                 id="nothing configured, no header"),
]


@pytest.mark.parametrize(("config", "headers", "need", "status", "message"), DENIED)
def test_denied(config, headers, need, status, message):
    with pytest.raises(AuthError, match=message) as caught:
        authorize(config, headers, **need)
    assert caught.value.status == status


def test_right_audience_is_accepted():
    assert authorize(AUDIENCE_CONFIG, bearer(token("u-1", aud="herald")), user_id="u-1") == \
        Principal("user", "u-1")


def test_an_rs256_token_cannot_be_forged_with_the_public_key_as_hmac_secret():
    # Algorithm confusion: sign HS256 with the public PEM that the server trusts.
    config = AuthConfig(jwt_public_key=_pem(RSA_KEY))
    forged = jwt.api_jws.PyJWS().encode(
        b'{"sub":"u-1","exp":%d}' % (time.time() + 86400), b"x" * 32, algorithm="HS256")
    with pytest.raises(AuthError, match="'HS256' not accepted") as caught:
        authorize(config, bearer(forged), user_id="u-1")
    assert caught.value.status == 401
