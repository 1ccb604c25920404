"""The ``fcm`` provider: Firebase Cloud Messaging HTTP v1 through ``firebase-admin``.

Settings: ``HERALD_FCM_CREDENTIALS`` (path to a service-account JSON,
required), ``HERALD_FCM_PROJECT_ID`` (default: the credentials' project) and
``HERALD_FCM_BASE_URL`` (default ``https://fcm.googleapis.com``; tests point
it at :mod:`testing.fakes.fcm`). The service account's ``token_uri`` decides
where google-auth fetches its OAuth tokens.

firebase-admin sends with ``requests``, synchronously: each token's send runs
in a worker thread. Its errors (``FirebaseError`` and google-auth's) are
mapped to :mod:`app.errors` here and nowhere else.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
import warnings
from typing import Mapping
from urllib.parse import urlsplit

import firebase_admin
import google.auth.exceptions
import requests.adapters
from firebase_admin import credentials, exceptions, messaging

from app.errors import (
    DeliveryError,
    PermanentDeliveryError,
    ProviderDisabled,
    TokenUnregistered,
    TransientDeliveryError,
)
from providers.base import PushProvider, retry_after_seconds
from schemas.records import Delivery

DEFAULT_BASE_URL = "https://fcm.googleapis.com"

#: A Firebase installation id: 22 URL-safe base64 characters, the first of c, d, e or f.
_FID = re.compile(r"[cdef][A-Za-z0-9_-]{21}")

#: FirebaseError codes worth retrying: the service is overloaded, down or slow.
_TRANSIENT_CODES = frozenset({
    exceptions.RESOURCE_EXHAUSTED, exceptions.UNAVAILABLE, exceptions.INTERNAL,
    exceptions.DEADLINE_EXCEEDED, exceptions.ABORTED,
})


class _MessagingService(messaging._MessagingService):  # noqa: SLF001 - see the class docstring
    """firebase-admin's FCM v1 service, sending to herald's base URL without hidden retries.

    firebase-admin 7 has no option and no emulator variable for FCM (it
    reads ``FIREBASE_AUTH_EMULATOR_HOST``, ``FIREBASE_DATABASE_EMULATOR_HOST``
    and ``CLOUD_TASKS_EMULATOR_HOST`` only; Firebase's emulator suite has no
    FCM): the service formats ``_fcm_url`` from its ``FCM_URL`` constant and
    the project id in ``__init__``, and ``send()`` posts there. So this thin
    subclass replaces that one attribute once the SDK built everything else
    (credentials, authorized session, headers, message encoding and error
    parsing stay the SDK's). It is the one place herald touches firebase-admin
    internals; a change of them fails the FCM tests, not production silently.

    It also mounts a retry-free adapter on the base URL: the SDK's default
    retries 500/503 four times with backoff and sleeps out any Retry-After,
    blocking a worker thread past herald's timeout while herald's retry
    topics already do the retrying. And ``close()`` closes the ``requests``
    session, which the SDK's own ``close()`` leaves open.
    """

    def __init__(self, app: firebase_admin.App, base_url: str) -> None:
        super().__init__(app)
        self._fcm_url = f"{base_url}/v1/projects/{self._project_id}/messages:send"
        self._client.session.mount(base_url, requests.adapters.HTTPAdapter(max_retries=0))

    def close(self) -> None:
        """Close both HTTP clients; runs outside the event loop (the SDK calls ``asyncio.run``)."""
        self._client.close()
        super().close()


class FCMProvider(PushProvider):
    """Sends a push delivery to the user's FCM tokens, one HTTP v1 request per token."""

    name = "fcm"
    platform = "fcm"
    token_kind = "FCM"

    def __init__(self, service_account: str | credentials.Certificate, project_id: str | None = None,
                 base_url: str = DEFAULT_BASE_URL, timeout: float = 10.0) -> None:
        """``service_account`` is the path of the JSON key file, or the credential read from it."""
        super().__init__(timeout)
        certificate = (service_account if isinstance(service_account, credentials.Certificate)
                       else credentials.Certificate(service_account))
        project_id = project_id or certificate.project_id
        if not project_id:
            raise ValueError("no project id: the service account names none")
        # A named app per provider: firebase-admin keeps apps in a process-wide registry.
        self._app = firebase_admin.initialize_app(
            certificate, {"projectId": project_id, "httpTimeout": timeout},
            name=f"herald-fcm-{uuid.uuid4()}")
        self._service = _MessagingService(self._app, base_url.rstrip("/"))
        self._closed = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "FCMProvider":
        """Build from ``HERALD_FCM_*``; raises ``ProviderDisabled`` naming what is missing."""
        path = env.get("HERALD_FCM_CREDENTIALS")
        if not path:
            raise ProviderDisabled("HERALD_FCM_CREDENTIALS is not set")
        try:
            certificate = credentials.Certificate(path)
        except (OSError, ValueError) as exc:
            raise ProviderDisabled(f"HERALD_FCM_CREDENTIALS ({path}) is unusable: {exc}") from exc
        project_id = env.get("HERALD_FCM_PROJECT_ID") or certificate.project_id
        if not project_id:
            raise ProviderDisabled(
                "HERALD_FCM_PROJECT_ID is not set and the service account names no project")
        base_url = env.get("HERALD_FCM_BASE_URL") or DEFAULT_BASE_URL
        if urlsplit(base_url).scheme not in ("http", "https"):
            raise ProviderDisabled(f"HERALD_FCM_BASE_URL must be an http(s) URL, not {base_url!r}")
        return cls(certificate, project_id, base_url)

    async def _send_to(self, token: str, delivery: Delivery) -> str:
        message = build_message(token, delivery)
        try:
            return await asyncio.to_thread(self._service.send, message)
        except exceptions.FirebaseError as exc:
            raise map_firebase_error(exc, token) from exc
        except google.auth.exceptions.GoogleAuthError as exc:
            raise map_auth_error(exc) from exc
        except ValueError as exc:
            # The SDK validates the message before sending: sending it again cannot help.
            raise PermanentDeliveryError(f"fcm: message refused by firebase-admin: {exc}") from exc

    async def aclose(self) -> None:
        """Close the SDK's HTTP sessions and drop the firebase app."""
        if not self._closed:
            self._closed = True
            await asyncio.to_thread(self._close)

    def _close(self) -> None:
        self._service.close()
        firebase_admin.delete_app(self._app)


def build_message(token: str, delivery: Delivery) -> messaging.Message:
    """The FCM message of ``delivery`` for one device.

    The device is addressed by ``fid`` when the token is a Firebase
    installation id (22 characters; firebase-admin 7.7 deprecates ``token``
    for it) and by ``token`` when it is a registration token
    ("<fid>:APA91b..."), which apps that have not moved to FIDs register.
    ``data`` carries the delivery's data (FCM wants strings) plus
    ``notification_id`` and ``channel``; the Android tag and the APNs
    collapse id are the notification id, so a device that gets a duplicate
    replaces the first one instead of showing it twice.
    """
    data = {key: value if isinstance(value, str) else json.dumps(value)
            for key, value in delivery.data.items()}
    data.update(notification_id=delivery.notification_id, channel=delivery.channel)
    notification = None
    if delivery.title or delivery.body:
        notification = messaging.Notification(title=delivery.title, body=delivery.body)
    collapse_id = delivery.notification_id[:64]
    target = {"fid": token} if _FID.fullmatch(token) else {"token": token}
    with warnings.catch_warnings():
        # Registration tokens still work, and apps that registered one only have that.
        warnings.filterwarnings("ignore", "Message.token is deprecated", DeprecationWarning)
        return messaging.Message(
            notification=notification, data=data,
            android=messaging.AndroidConfig(notification=messaging.AndroidNotification(tag=collapse_id)),
            apns=messaging.APNSConfig(headers={"apns-collapse-id": collapse_id}),
            **target,
        )


def map_firebase_error(exc: exceptions.FirebaseError, token: str) -> DeliveryError:
    """herald's error for a failed send to ``token``."""
    status = exc.http_response.status_code if exc.http_response is not None else None
    if isinstance(exc, (messaging.UnregisteredError, exceptions.NotFoundError)):
        return TokenUnregistered(f"fcm: token unregistered: {exc}", tokens=(token,))
    if exc.code in _TRANSIENT_CODES or (status is not None and (status >= 500 or status == 429)):
        return TransientDeliveryError(f"fcm: {exc.code}: {exc}", retry_after=_retry_after(exc))
    if status is None and exc.code == exceptions.UNKNOWN:
        # No HTTP answer and neither a timeout nor a refused connection: a broken exchange.
        return TransientDeliveryError(f"fcm: {exc}")
    # SENDER_ID_MISMATCH, THIRD_PARTY_AUTH_ERROR, 401/403, INVALID_ARGUMENT...
    return PermanentDeliveryError(f"fcm: {exc.code}: {exc}")


def map_auth_error(exc: google.auth.exceptions.GoogleAuthError) -> DeliveryError:
    """herald's error for a failure to get an OAuth token for the service account."""
    if isinstance(exc, google.auth.exceptions.TransportError) or getattr(exc, "retryable", False):
        return TransientDeliveryError(f"fcm: cannot get an access token: {exc}")
    return PermanentDeliveryError(f"fcm: credentials refused: {exc}")


def _retry_after(exc: exceptions.FirebaseError) -> float | None:
    """Seconds from the answer's Retry-After header, if there was an answer."""
    if exc.http_response is None:
        return None
    return retry_after_seconds(exc.http_response.headers.get("Retry-After"))
