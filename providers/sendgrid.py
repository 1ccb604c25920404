"""The ``sendgrid`` provider: email through SendGrid's v3 Mail Send API.

The official ``sendgrid`` package sends with urllib, synchronously, so each
send runs in a worker thread (:func:`asyncio.to_thread`) with the same
timeout on the socket, and the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import json
import re
from email.utils import parseaddr
from typing import Any, Mapping

from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient

from app.errors import (
    DeliveryError, InvalidRecipient, PermanentDeliveryError, ProviderDisabled, TransientDeliveryError,
)
from providers.base import Provider, Receipt, retry_after_seconds
from schemas.records import Delivery

DEFAULT_BASE_URL = "https://api.sendgrid.com"
# SendGrid names the offending field; these are the recipient's address.
_RECIPIENT_FIELD = re.compile(r"^personalizations\.\d+\.to(\.\d+\.email)?$")


class SendGridProvider(Provider):
    """Sends an email ``Delivery`` as one SendGrid mail send.

    Every message carries ``custom_args`` ``herald_notification_id`` and
    ``herald_channel``, so SendGrid's event webhook and activity feed tie it
    back to the notification.
    """

    name = "sendgrid"

    def __init__(self, api_key: str, sender: str, base_url: str = DEFAULT_BASE_URL,
                 timeout: float = 10.0) -> None:
        super().__init__(timeout)
        self.sender = sender
        self.base_url = base_url
        self._client = SendGridAPIClient(api_key, host=base_url)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "SendGridProvider":
        """Read ``HERALD_SENDGRID_API_KEY``, ``HERALD_EMAIL_FROM`` and ``HERALD_SENDGRID_BASE_URL``."""
        for variable in ("HERALD_SENDGRID_API_KEY", "HERALD_EMAIL_FROM"):
            if not env.get(variable):
                raise ProviderDisabled(f"{variable} is not set")
        return cls(env["HERALD_SENDGRID_API_KEY"], env["HERALD_EMAIL_FROM"],
                   base_url=env.get("HERALD_SENDGRID_BASE_URL") or DEFAULT_BASE_URL)

    def payload(self, delivery: Delivery) -> dict[str, Any]:
        """The v3 mail send request body for ``delivery``."""
        sender_name, sender_email = parseaddr(self.sender)
        content = []
        # SendGrid wants text/plain before text/html.
        if delivery.body:
            content.append({"type": "text/plain", "value": delivery.body})
        if delivery.html:
            content.append({"type": "text/html", "value": delivery.html})
        return {
            "personalizations": [{"to": [{"email": delivery.address}]}],
            "from": {"email": sender_email, **({"name": sender_name} if sender_name else {})},
            "subject": delivery.title or "",
            "content": content,
            "custom_args": {
                "herald_notification_id": delivery.notification_id,
                "herald_channel": delivery.channel,
            },
        }

    async def _send(self, delivery: Delivery) -> Receipt:
        payload = self.payload(delivery)
        try:
            response = await asyncio.to_thread(self._post, payload)
        except HTTPError as exc:
            raise _http_error(exc) from exc
        except OSError as exc:  # URLError, refused connections and socket timeouts are all OSErrors
            raise TransientDeliveryError(f"sendgrid: {exc}") from exc
        return Receipt(provider=self.name, message_id=response.headers.get("X-Message-Id", ""))

    def _post(self, payload: dict[str, Any]) -> Any:
        # The socket timeout ends the thread too: the timeout in
        # Provider.send can abandon the await, not the thread.
        return self._client.client.mail.send.post(request_body=payload, timeout=self.timeout)

    async def aclose(self) -> None:
        """Nothing to release: urllib opens a connection per request."""


def _http_error(exc: HTTPError) -> DeliveryError:
    """The herald error for a SendGrid error response."""
    status = int(exc.status_code)
    detail = _messages(exc.body)
    message = f"sendgrid: HTTP {status}: {detail}"
    if status == 429 or status >= 500:
        return TransientDeliveryError(message, retry_after=retry_after_seconds((exc.headers or {}).get("Retry-After")))
    if status == 400 and any(_RECIPIENT_FIELD.match(field or "") for field in _fields(exc.body)):
        return InvalidRecipient(message)
    return PermanentDeliveryError(message)


def _errors(body: bytes | str | None) -> list[dict[str, Any]]:
    try:
        errors = json.loads(body or b"").get("errors", [])
    except (ValueError, AttributeError):
        return []
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


def _fields(body: bytes | str | None) -> list[str]:
    return [str(e.get("field") or "") for e in _errors(body)]


def _messages(body: bytes | str | None) -> str:
    errors = _errors(body)
    if not errors:
        return (body.decode(errors="replace") if isinstance(body, bytes) else str(body or ""))[:200]
    return "; ".join(f"{e.get('field') or '-'}: {e.get('message')}" for e in errors)

