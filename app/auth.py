"""Who may call the REST API: API keys for services, JWTs for end users.

Pure decisions, no web framework: :func:`authorize` takes the configuration,
the request headers and what the request needs, and returns the caller or
raises :class:`AuthError` with the HTTP status and a message saying what is
wrong (401: missing, malformed, unknown, expired or badly signed
credentials; 403: valid credentials not allowed here; 503: nothing
configured, so the API stays closed rather than open by default).

``HERALD_API_KEYS`` grammar (:func:`parse_api_keys`)::

    keys    = entry *( ";" entry )
    entry   = name ":" key ":" scope *( "," scope )
    scope   = "ingest" | "admin"

e.g. ``svc-a:KEY1:ingest,admin;svc-b:KEY2:ingest``. Whitespace around parts
is ignored; the key is everything between the first and the last ``:`` (so
a key may itself contain ``:``); names and keys must be unique.

Rules: ``POST /v1/notifications`` needs an API key with ``ingest``; a
user's inbox, preferences and contacts are open to a JWT whose ``sub`` is
that user, or to an API key with ``admin``.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import jwt

SCOPES = ("ingest", "admin")
#: HS256 keys shorter than the hash are weak (RFC 7518 §3.2) and PyJWT warns.
MIN_SECRET_BYTES = 32
#: Clock skew tolerated between the token issuer and this worker.
LEEWAY_SECONDS = 30
NOT_CONFIGURED = ("API authentication is not configured "
                  "(set HERALD_API_KEYS or HERALD_JWT_SECRET)")


@dataclass(frozen=True)
class ApiKey:
    """One service's key and what it may do."""

    name: str
    key: str = field(repr=False)
    scopes: frozenset[str]


@dataclass(frozen=True)
class AuthConfig:
    """The credentials the API accepts (from settings)."""

    api_keys: tuple[ApiKey, ...] = ()
    jwt_secret: str | None = field(default=None, repr=False)
    jwt_public_key: str | None = None
    jwt_audience: str | None = None

    @property
    def configured(self) -> bool:
        """Whether any way to authenticate is set up."""
        return bool(self.api_keys or self.jwt_secret or self.jwt_public_key)


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a service (API key) or an end user (JWT ``sub``)."""

    kind: str  # "service" or "user"
    name: str
    scopes: frozenset[str] = frozenset()


class AuthError(Exception):
    """The request may not proceed; ``status`` is 401, 403 or 503."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_api_keys(raw: str) -> tuple[ApiKey, ...]:
    """Parse ``HERALD_API_KEYS`` (grammar in the module docstring); raise ``ValueError``."""
    keys: list[ApiKey] = []
    for number, entry in enumerate((part.strip() for part in raw.split(";")), start=1):
        if not entry:
            continue
        name, sep, rest = entry.partition(":")
        secret, sep2, scope_list = rest.rpartition(":")
        name, secret = name.strip(), secret.strip()
        if not sep or not sep2 or not name or not secret:
            raise ValueError(f"entry {number} is not name:key:scope[,scope]")
        scopes = frozenset(scope.strip() for scope in scope_list.split(",") if scope.strip())
        unknown = sorted(scopes - set(SCOPES))
        if not scopes or unknown:
            raise ValueError(f"entry {number} ({name}): scopes must be among "
                             f"{', '.join(SCOPES)} (got {', '.join(unknown) or 'none'})")
        if any(key.name == name for key in keys):
            raise ValueError(f"entry {number}: name {name!r} used twice")
        if any(hmac.compare_digest(key.key, secret) for key in keys):
            raise ValueError(f"entry {number} ({name}): key already given to another name")
        keys.append(ApiKey(name, secret, scopes))
    if not keys:
        raise ValueError("no keys")
    return tuple(keys)


def parse_jwt_secret(raw: str) -> str:
    """Check an HS256 secret is long enough to be worth its name."""
    if len(raw.encode()) < MIN_SECRET_BYTES:
        raise ValueError(f"must be at least {MIN_SECRET_BYTES} bytes")
    return raw


def parse_jwt_public_key(raw: str) -> str:
    """An RS256 public key: PEM text, or the path of a PEM file; returned as PEM text."""
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    pem = raw if raw.lstrip().startswith("-----BEGIN") else _read_text(Path(raw))
    key = load_pem_public_key(pem.encode())  # ValueError when it is not PEM
    if not isinstance(key, RSAPublicKey):
        raise ValueError("expected an RSA public key (RS256)")
    return pem


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"neither PEM text nor a readable file ({exc.strerror})") from exc


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # aiohttp's headers are case-insensitive, a plain dict (tests) is not.
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return str(value)
    return None


def credential(headers: Mapping[str, str]) -> tuple[str, str]:
    """The (source, token) a request carries: ``("bearer", t)`` or ``("api-key", t)``."""
    api_key = _header(headers, "X-API-Key")
    if api_key is not None:
        if not api_key.strip():
            raise AuthError(401, "empty X-API-Key header")
        return "api-key", _utf8(api_key.strip(), "X-API-Key")
    authorization = _header(headers, "Authorization")
    if authorization is None:
        raise AuthError(401, "missing credentials: send 'Authorization: Bearer <API key or JWT>'"
                             " or 'X-API-Key: <key>'")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError(401, "malformed Authorization header: expected 'Bearer <token>'")
    return "bearer", _utf8(token.strip(), "Authorization")


def _utf8(token: str, header: str) -> str:
    # aiohttp decodes header bytes that are not UTF-8 as lone surrogates
    # (surrogateescape); no key or JWT holds them, and they cannot be encoded.
    try:
        token.encode()
    except UnicodeEncodeError as exc:
        raise AuthError(401, f"malformed {header} header: not UTF-8 text") from exc
    return token


def _api_key(config: AuthConfig, token: str) -> ApiKey | None:
    found = None
    for key in config.api_keys:
        # Compare with every key in constant time, so timing says nothing.
        if hmac.compare_digest(key.key.encode(), token.encode()):
            found = key
    return found


def _looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2


def verify_jwt(config: AuthConfig, token: str) -> Principal:
    """The end user a JWT names in ``sub``, or :class:`AuthError` (401) saying why not."""
    try:
        algorithm = jwt.get_unverified_header(token).get("alg")
    except jwt.InvalidTokenError as exc:  # DecodeError, and e.g. a "kid" that is not a string
        raise AuthError(401, f"malformed token: {exc}") from exc
    # The key follows from the algorithm we accept, never the other way round,
    # so an RS256 public key can never be used as an HS256 secret.
    keys = {"HS256": config.jwt_secret, "RS256": config.jwt_public_key}
    key = keys.get(str(algorithm))
    if key is None:
        accepted = [name for name, value in keys.items() if value]
        raise AuthError(401, f"token algorithm {algorithm!r} not accepted "
                             f"(accepted: {', '.join(accepted) or 'none'})")
    options: Any = {"require": ["exp", "sub"],
                               "verify_aud": config.jwt_audience is not None}
    try:
        claims = jwt.decode(token, key, algorithms=[str(algorithm)],
                            audience=config.jwt_audience, options=options,
                            leeway=LEEWAY_SECONDS)
    except jwt.ExpiredSignatureError as exc:
        raise AuthError(401, "expired token") from exc
    except jwt.InvalidSignatureError as exc:
        raise AuthError(401, "invalid token signature") from exc
    except jwt.InvalidAudienceError as exc:
        raise AuthError(401, f"token audience is not {config.jwt_audience!r}") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise AuthError(401, f"token lacks the {exc.claim!r} claim") from exc
    except jwt.InvalidTokenError as exc:
        raise AuthError(401, f"invalid token: {exc}") from exc
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise AuthError(401, "token 'sub' must be a non-empty user id")
    return Principal("user", subject)


def authenticate(config: AuthConfig, headers: Mapping[str, str]) -> Principal:
    """Who is calling, from the request headers; :class:`AuthError` if nobody valid."""
    if not config.configured:
        raise AuthError(503, NOT_CONFIGURED)
    source, token = credential(headers)
    key = _api_key(config, token)
    if key is not None:
        return Principal("service", key.name, key.scopes)
    jwt_configured = bool(config.jwt_secret or config.jwt_public_key)
    if source == "bearer" and _looks_like_jwt(token) and jwt_configured:
        return verify_jwt(config, token)
    what = "API key or JWT" if source == "bearer" and jwt_configured else "API key"
    raise AuthError(401, f"invalid {what}")


def authorize(config: AuthConfig, headers: Mapping[str, str], *, scope: str | None = None,
              user_id: str | None = None) -> Principal:
    """The caller, if allowed to act with ``scope`` or on ``user_id``'s data; else AuthError.

    ``scope="ingest"``: an API key with that scope. ``user_id=U``: a JWT for U
    or an API key with ``admin``.
    """
    principal = authenticate(config, headers)
    if scope is not None and scope not in principal.scopes:
        who = "an end-user token" if principal.kind == "user" else f"API key {principal.name!r}"
        raise AuthError(403, f"{who} lacks the {scope!r} scope (needs an API key with it)")
    if user_id is not None:
        if principal.kind == "user" and principal.name != user_id:
            raise AuthError(403, f"a token for user {principal.name!r} may not access "
                                 f"user {user_id!r}")
        if principal.kind == "service" and "admin" not in principal.scopes:
            raise AuthError(403, f"API key {principal.name!r} lacks the 'admin' scope "
                                 "needed for user data")
    return principal
