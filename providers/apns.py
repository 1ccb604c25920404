"""The ``apns`` provider: Apple Push Notification service through ``aioapns``.

Token-based authentication (an ES256 JWT signed with the team's .p8 key)
over HTTP/2 and TLS. Settings: ``HERALD_APNS_KEY`` (path to the .p8 key),
``HERALD_APNS_KEY_ID``, ``HERALD_APNS_TEAM_ID``, ``HERALD_APNS_TOPIC`` (the
app's bundle id), all required; ``HERALD_APNS_BASE_URL`` (default
``https://api.push.apple.com``; the sandbox is
``https://api.sandbox.push.apple.com``) and ``HERALD_APNS_CA_FILE`` (trust
this CA instead of the system's, for :mod:`testing.fakes.apns`).

aioapns answers with a status and Apple's ``reason``; they and aioapns's own
exceptions are mapped to :mod:`app.errors` here and nowhere else.
"""

from __future__ import annotations

import asyncio
import ssl
import uuid
from typing import Any, Mapping
from urllib.parse import urlsplit

import jwt
from aioapns import APNs, NotificationRequest, PushType
from aioapns import exceptions as apns_errors
from aioapns.common import NotificationResult
from aioapns.connection import APNsProductionClientProtocol

from app.errors import (
    DeliveryError,
    PermanentDeliveryError,
    ProviderDisabled,
    TokenUnregistered,
    TransientDeliveryError,
)
from providers.base import PushProvider
from schemas.records import Delivery

DEFAULT_BASE_URL = "https://api.push.apple.com"

#: apns-id values are UUIDs; deriving them from the notification id keeps a resend recognisable.
_APNS_ID_NAMESPACE = uuid.UUID("5b0e3c52-6f0d-4a55-9d36-6a1c1f3e8a10")

#: Apple's reasons for a token that will never work again (besides any 410).
_GONE_REASONS = frozenset({"BadDeviceToken", "Unregistered", "ExpiredToken"})


class _Protocol(APNsProductionClientProtocol):
    """aioapns's HTTP/2 client protocol, toward herald's host and port.

    aioapns takes no URL: its connection pool connects to
    ``protocol_class.APNS_SERVER``/``APNS_PORT`` (class attributes, also used
    for the ``host`` header), so :func:`_protocol_for` makes a subclass that
    overrides those two and the provider sets it as the pool's
    ``protocol_class`` (a public attribute). Three hooks are added: the
    Retry-After header of a refused request, which aioapns does not pass on;
    an event set when the connection is lost, so ``aclose`` can wait for the
    TLS transports to be really closed; and forgetting the requests whose
    sender gave up (herald's timeout cancels them): aioapns would otherwise
    set a result on those cancelled futures when a late answer or the end of
    the connection comes, and die of ``InvalidStateError``.
    """

    retry_after: dict[str, float]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lost = asyncio.Event()

    def _forget_abandoned(self) -> None:
        for apns_id, answer in list(self.requests.items()):
            if answer.done():
                del self.requests[apns_id]
                self.request_statuses.pop(apns_id, None)

    def data_received(self, data: bytes) -> None:
        self._forget_abandoned()
        super().data_received(data)

    def on_response_received(self, headers: dict[bytes, bytes]) -> None:
        value = headers.get(b"retry-after")
        if value is not None and headers.get(b":status") != b"200":
            try:
                self.retry_after[headers.get(b"apns-id", b"").decode()] = float(value)
            except ValueError:
                pass
        super().on_response_received(headers)

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget_abandoned()
        try:
            super().connection_lost(exc)
        finally:
            self.lost.set()


def _protocol_for(host: str, port: int, retry_after: dict[str, float]) -> type[_Protocol]:
    return type("APNsProtocol", (_Protocol,),
                {"APNS_SERVER": host, "APNS_PORT": port, "retry_after": retry_after})


async def _ignore_refusal(request: NotificationRequest, result: NotificationResult) -> None:
    """aioapns logs every refusal as an error unless given this; herald maps them instead."""


class APNsProvider(PushProvider):
    """Sends a push delivery to the user's APNs device tokens, one HTTP/2 stream per token."""

    name = "apns"
    platform = "apns"
    token_kind = "APNs"

    def __init__(self, key: str, key_id: str, team_id: str, topic: str,
                 base_url: str = DEFAULT_BASE_URL, ca_file: str | None = None,
                 timeout: float = 10.0) -> None:
        """``key`` is the PEM text of the .p8 key (aioapns signs with it as is)."""
        super().__init__(timeout)
        self.host, self.port = host_and_port(base_url)
        # Fail now, not at the first send, if the key cannot sign Apple's ES256 tokens.
        jwt.encode({"iss": team_id}, key, algorithm="ES256", headers={"kid": key_id})
        self.key, self.key_id, self.team_id, self.topic = key, key_id, team_id, topic
        self.ssl_context = ssl.create_default_context(cafile=ca_file)
        self.ssl_context.set_alpn_protocols(["h2"])
        self._retry_after: dict[str, float] = {}
        self._client: APNs | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "APNsProvider":
        """Build from ``HERALD_APNS_*``; raises ``ProviderDisabled`` naming what is missing."""
        for variable in ("HERALD_APNS_KEY", "HERALD_APNS_KEY_ID", "HERALD_APNS_TEAM_ID",
                         "HERALD_APNS_TOPIC"):
            if not env.get(variable):
                raise ProviderDisabled(f"{variable} is not set")
        path = env["HERALD_APNS_KEY"]
        base_url = env.get("HERALD_APNS_BASE_URL") or DEFAULT_BASE_URL
        ca_file = env.get("HERALD_APNS_CA_FILE") or None
        try:
            host_and_port(base_url)
        except ValueError as exc:
            raise ProviderDisabled(f"HERALD_APNS_BASE_URL: {exc}") from exc
        if ca_file:
            try:
                ssl.create_default_context(cafile=ca_file)
            except OSError as exc:  # ssl.SSLError included
                raise ProviderDisabled(f"HERALD_APNS_CA_FILE ({ca_file}) is unusable: {exc}") from exc
        try:
            with open(path, encoding="ascii") as file:
                key = file.read()
            return cls(key, env["HERALD_APNS_KEY_ID"], env["HERALD_APNS_TEAM_ID"],
                       env["HERALD_APNS_TOPIC"], base_url, ca_file)
        except (OSError, ValueError, jwt.PyJWTError) as exc:
            raise ProviderDisabled(f"HERALD_APNS_KEY ({path}) is not a usable ES256 key: {exc}") from exc

    def _apns(self) -> APNs:
        # Built on first use: aioapns binds its pool to the running event loop.
        if self._client is None:
            client = APNs(key=self.key, key_id=self.key_id, team_id=self.team_id,
                          topic=self.topic, ssl_context=self.ssl_context,
                          max_connection_attempts=1, err_func=_ignore_refusal)
            client.pool.protocol_class = _protocol_for(self.host, self.port, self._retry_after)
            self._client = client
        return self._client

    async def _send_to(self, token: str, delivery: Delivery) -> str:
        request = build_request(token, delivery)
        try:
            result = await self._apns().send_notification(request)
        except (apns_errors.ConnectionError, apns_errors.ConnectionClosed,
                apns_errors.MaxAttemptsExceeded, OSError) as exc:
            raise TransientDeliveryError(f"apns: connection failed: {type(exc).__name__}") from exc
        retry_after = self._retry_after.pop(request.notification_id, None)
        if not result.is_successful:
            raise map_refusal(token, result, retry_after)
        return result.notification_id

    async def aclose(self) -> None:
        """Close the HTTP/2 connections and wait until their transports are gone."""
        client, self._client = self._client, None
        if client is None:
            return
        waits = [asyncio.ensure_future(c.lost.wait())
                 for c in client.pool.connections if isinstance(c, _Protocol)]
        client.pool.close()
        if waits:
            _, late = await asyncio.wait(waits, timeout=self.timeout)
            for wait in late:
                wait.cancel()


def host_and_port(base_url: str) -> tuple[str, int]:
    """Where to connect for ``https://host[:port]``; APNs speaks nothing but HTTP/2 over TLS."""
    url = urlsplit(base_url)
    if url.scheme != "https" or not url.hostname or url.path.strip("/"):
        raise ValueError(f"expected https://host[:port], not {base_url!r}")
    return url.hostname, url.port or 443


def map_refusal(token: str, result: NotificationResult, retry_after: float | None) -> DeliveryError:
    """herald's error for a request APNs answered with a status other than 200."""
    status = int(result.status) if result.status.isdigit() else 0
    reason = result.description or "no reason"
    if status == 410 or reason in _GONE_REASONS:
        return TokenUnregistered(f"apns: {status} {reason}", tokens=(token,))
    if status == 429 or status >= 500:
        return TransientDeliveryError(f"apns: {status} {reason}", retry_after=retry_after)
    # 403 InvalidProviderToken / ExpiredProviderToken, 400 BadTopic, 413 PayloadTooLarge...
    return PermanentDeliveryError(f"apns: {status} {reason}")


def build_request(token: str, delivery: Delivery) -> NotificationRequest:
    """The APNs request of ``delivery`` for one device.

    The payload's ``herald`` key carries ``notification_id`` and ``channel``
    next to the delivery's data. ``apns-collapse-id`` is the notification id,
    so a device shows a duplicate once; ``apns-id`` is derived from the
    notification id and the token (aioapns matches answers by apns-id, so it
    must differ between the tokens of one delivery).
    """
    payload: dict[str, Any] = dict(delivery.data)
    payload["herald"] = {"notification_id": delivery.notification_id, "channel": delivery.channel}
    if delivery.title or delivery.body:
        alert = {k: v for k, v in (("title", delivery.title), ("body", delivery.body)) if v}
        payload["aps"] = {"alert": alert, "sound": "default"}
        push_type, priority = PushType.ALERT, None
    else:
        # Nothing to show: a background push, which Apple wants at priority 5.
        payload["aps"] = {"content-available": 1}
        push_type, priority = PushType.BACKGROUND, 5
    apns_id = str(uuid.uuid5(_APNS_ID_NAMESPACE, f"{delivery.notification_id}/{token}"))
    return NotificationRequest(device_token=token, message=payload, notification_id=apns_id,
                               collapse_key=delivery.notification_id[:64], push_type=push_type,
                               priority=priority)
