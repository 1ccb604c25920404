"""herald's settings: one frozen object built from ``HERALD_*`` environment variables.

Built once at start-up with :meth:`Settings.from_env`; a missing or malformed
value raises :class:`SettingsError` naming the variable, so a worker never
starts half-configured. Nothing else in herald reads the environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

from app.auth import ApiKey, AuthConfig, parse_api_keys, parse_jwt_public_key, parse_jwt_secret
from providers.channel import DEFAULT_CHANNELS, parse_channels, parse_rate_caps
from rules.digest import parse_digest_categories
from rules.ingest import IngestRates, parse_ingest_rates
from rules.retries import DEFAULT_DELAYS, parse_delays
from tables.ratelimit import parse_rate_policies

PREFIX = "HERALD_"
STORES = ("rocksdb", "memory")
GUARANTEES = ("at_least_once", "exactly_once")
HOT_PATHS = ("faust", "aiokafka")

T = TypeVar("T")


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def _bootstrap(raw: str) -> str:
    servers = [part.strip() for part in raw.split(",") if part.strip()]
    if not servers:
        raise ValueError("expected host:port[,host:port...]")
    for server in servers:
        host, sep, port = server.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"{server!r} is not host:port")
    return ",".join(servers)


def _database_url(raw: str) -> str:
    if not raw.startswith(("postgresql://", "postgres://")):
        raise ValueError("expected postgresql://user:password@host:port/database")
    return raw


def _at_least(cast: Callable[[str], T], low: float, message: str,
              high: float = float("inf")) -> Callable[[str], T]:
    def parse(raw: str) -> T:
        value = cast(raw)
        if not low <= value <= high:  # type: ignore[operator]
            raise ValueError(message)
        return value
    return parse


_positive_int = _at_least(int, 1, "must be a positive integer")
_port = _at_least(int, 1, "must be a TCP port (1-65535)", 65535)
_positive_float = _at_least(float, 1e-9, "must be a positive number")
_non_negative_float = _at_least(float, 0, "must be zero or more")


def _one_of(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return raw
    return parse


def _hot_path(env: Mapping[str, str], guarantee: str) -> str:
    """Plain aiokafka loops under at-least-once; Faust's agents keep exactly-once's transactions."""
    default = "aiokafka" if guarantee == "at_least_once" else "faust"
    chosen = _read(env, "HOT_PATH", _one_of(*HOT_PATHS), default)
    if chosen == "aiokafka" and guarantee != "at_least_once":
        raise SettingsError(f"{PREFIX}HOT_PATH=aiokafka needs {PREFIX}PROCESSING_GUARANTEE="
                            f"at_least_once (the hot loops do not join Faust's transactions)")
    return chosen


def _advertised(bind: str | None) -> str:
    return "127.0.0.1" if not bind or bind in ("0.0.0.0", "::") else bind


def _read(
    env: Mapping[str, str], name: str, parse: Callable[[str], T], default: str | None = None
) -> T:
    variable = PREFIX + name
    raw = env.get(variable, default)
    if raw is None or raw == "":
        raise SettingsError(f"{variable} is required but not set")
    try:
        return parse(raw)
    except ValueError as exc:
        raise SettingsError(f"{variable}={raw!r} is invalid: {exc}") from exc


def _optional(env: Mapping[str, str], name: str, parse: Callable[[str], T]) -> T | dict[str, Any]:
    if not env.get(PREFIX + name):
        return {}
    return _read(env, name, parse)


@dataclass(frozen=True)
class Settings:
    """Everything a herald process needs to know, read once at start-up."""

    kafka_bootstrap: str
    database_url: str
    app_id: str = "herald"
    partitions: int = 8
    replication_factor: int = 1
    web_port: int = 6066
    web_bind: str = "127.0.0.1"
    web_host: str = "127.0.0.1"
    node_id: str | None = None
    data_dir: Path = Path(".local/data/worker")
    store: str = "rocksdb"
    #: Faust's processing guarantee; exactly_once was measured under chaos (README "Chaos run").
    processing_guarantee: str = "at_least_once"
    #: Who reads the hot topics: Faust agents, or plain aiokafka loops (agents/hotpath.py).
    hot_path: str = "aiokafka"
    dedup_window_seconds: float = 24 * 3600.0
    #: How long a ``sends`` row (never send twice) outlives its last change.
    sends_retention_seconds: float = 7 * 24 * 3600.0
    profile_grace_seconds: float = 2.0
    templates_dir: Path = Path("templates")
    default_locale: str = "en"
    sms_max_segments: int = 3
    rate_limits: Mapping[str, Any] = field(default_factory=dict)
    digest_categories: Mapping[str, float] = field(default_factory=dict)
    tick_seconds: float = 1.0
    #: Deliveries a delivery agent takes at once (one flush, concurrent provider calls).
    delivery_batch: int = 200
    channels: Mapping[str, Any] = field(default_factory=lambda: parse_channels(DEFAULT_CHANNELS))
    provider_caps: Mapping[str, Any] = field(default_factory=dict)
    retry_delays: tuple[float, ...] = DEFAULT_DELAYS
    breaker_failures: int = 5
    breaker_open_seconds: float = 30.0
    #: The raw HERALD_* variables, for providers to read their own settings.
    provider_env: Mapping[str, str] = field(default_factory=dict)
    log_level: str = "info"
    #: REST API credentials (app/auth.py); none at all keeps the API closed (503).
    api_keys: tuple[ApiKey, ...] = ()
    jwt_secret: str | None = field(default=None, repr=False)
    jwt_public_key: str | None = None
    jwt_audience: str | None = None
    max_body_bytes: int = 65536
    #: Table views: "open", "admin" (an admin API key), or "auto" (open on a loopback bind).
    tables_auth: str = "auto"
    #: Gateway: WebSocket ping interval (a session without a pong within half of it is dead).
    ws_heartbeat_seconds: float = 20.0
    #: Gateway: how often the users of open sessions are re-announced in ``presence``.
    presence_interval_seconds: float = 30.0
    #: POST /v1/notifications per API key (rules/ingest.py); None: unlimited.
    ingest_rates: IngestRates | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """Build settings from ``env`` (the process environment by default)."""
        env = os.environ if env is None else env
        guarantee = _read(env, "PROCESSING_GUARANTEE", _one_of(*GUARANTEES), "at_least_once")
        return cls(
            kafka_bootstrap=_read(env, "KAFKA_BOOTSTRAP", _bootstrap),
            database_url=_read(env, "DATABASE_URL", _database_url),
            app_id=_read(env, "APP_ID", str, "herald"),
            partitions=_read(env, "PARTITIONS", _positive_int, "8"),
            replication_factor=_read(env, "REPLICATION_FACTOR", _positive_int, "1"),
            web_port=_read(env, "WEB_PORT", _port, "6066"),
            web_bind=_read(env, "WEB_BIND", str, "127.0.0.1"),
            # The address other workers reach this one at (table routing):
            # the bind address, unless that is a wildcard.
            web_host=_read(env, "WEB_HOST", str, _advertised(env.get(PREFIX + "WEB_BIND"))),
            # A stable worker identity (e.g. the pod name) enables Kafka static
            # membership, so a restart does not trigger a rebalance storm.
            node_id=env.get(PREFIX + "NODE_ID") or None,
            data_dir=_read(env, "DATA_DIR", Path, ".local/data/worker"),
            store=_read(env, "STORE", _one_of(*STORES), "rocksdb"),
            processing_guarantee=guarantee,
            hot_path=_hot_path(env, guarantee),
            dedup_window_seconds=_read(env, "DEDUP_WINDOW_SECONDS", _positive_float, "86400"),
            sends_retention_seconds=_read(env, "SENDS_RETENTION_SECONDS", _positive_float,
                                          "604800"),
            profile_grace_seconds=_read(env, "PROFILE_GRACE_SECONDS", _non_negative_float, "2"),
            templates_dir=_read(env, "TEMPLATES_DIR", Path, "templates"),
            default_locale=_read(env, "DEFAULT_LOCALE", str, "en"),
            sms_max_segments=_read(env, "SMS_MAX_SEGMENTS", _positive_int, "3"),
            rate_limits=_read(env, "RATE_LIMITS", parse_rate_policies, "default=100/minute:defer"),
            digest_categories=_optional(env, "DIGEST_CATEGORIES", parse_digest_categories),
            tick_seconds=_read(env, "TICK_SECONDS", _positive_float, "1"),
            delivery_batch=_read(env, "DELIVERY_BATCH", _positive_int, "200"),
            channels=_read(env, "CHANNELS", parse_channels, DEFAULT_CHANNELS),
            provider_caps=_optional(env, "PROVIDER_RATES", parse_rate_caps),
            retry_delays=_read(env, "RETRY_DELAYS", parse_delays, "5,30,300"),
            breaker_failures=_read(env, "BREAKER_FAILURES", _positive_int, "5"),
            breaker_open_seconds=_read(env, "BREAKER_OPEN_SECONDS", _positive_float, "30"),
            provider_env={k: v for k, v in env.items() if k.startswith(PREFIX)},
            log_level=_read(env, "LOG_LEVEL", str, "info"),
            api_keys=_read(env, "API_KEYS", parse_api_keys)
            if env.get(PREFIX + "API_KEYS") else (),
            jwt_secret=_read(env, "JWT_SECRET", parse_jwt_secret)
            if env.get(PREFIX + "JWT_SECRET") else None,
            jwt_public_key=_read(env, "JWT_PUBLIC_KEY", parse_jwt_public_key)
            if env.get(PREFIX + "JWT_PUBLIC_KEY") else None,
            jwt_audience=env.get(PREFIX + "JWT_AUDIENCE") or None,
            max_body_bytes=_read(env, "MAX_BODY_BYTES", _positive_int, "65536"),
            tables_auth=_read(env, "TABLES_AUTH", _one_of("auto", "admin", "open"), "auto"),
            ws_heartbeat_seconds=_read(env, "WS_HEARTBEAT_SECONDS", _positive_float, "20"),
            presence_interval_seconds=_read(env, "PRESENCE_INTERVAL_SECONDS", _positive_float,
                                            "30"),
            ingest_rates=_read(env, "INGEST_RATE", parse_ingest_rates)
            if env.get(PREFIX + "INGEST_RATE") else None,
        )

    @cached_property
    def auth(self) -> AuthConfig:
        """The credentials the API, the gateway and the table views accept."""
        return AuthConfig(self.api_keys, self.jwt_secret, self.jwt_public_key, self.jwt_audience)

    @property
    def tables_need_admin(self) -> bool:
        """Whether the table views ask for an admin API key: table values hold contacts,
        so only a worker reachable from this host alone may serve them openly."""
        loopback = self.web_bind in ("127.0.0.1", "localhost", "::1")
        return self.tables_auth == "admin" or (self.tables_auth == "auto" and not loopback)

    @property
    def gateway_node(self) -> str:
        """This worker's name in ``presence``: its node id, else its web address."""
        return self.node_id or f"{self.web_host}:{self.web_port}"

    @property
    def broker_url(self) -> str:
        """The bootstrap servers in Faust's ``kafka://`` URL form."""
        return ";".join(f"kafka://{server}" for server in self.kafka_bootstrap.split(","))


def kafka_bootstrap_from_env(env: Mapping[str, str]) -> str:
    """Just the Kafka bootstrap servers, for commands that need nothing else."""
    return _read(env, "KAFKA_BOOTSTRAP", _bootstrap)


def redact(url: str) -> str:
    """``url`` without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in credentials:
        return url
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
