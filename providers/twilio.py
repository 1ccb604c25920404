"""The ``twilio`` provider: SMS through Twilio's Programmable Messaging API.

Sends with the ``twilio`` package's aiohttp client
(:class:`~twilio.http.async_http_client.AsyncTwilioHttpClient`) and
``messages.create_async``, so the event loop never blocks.

Pointing at another base URL: every Twilio product is a ``Domain`` object
whose ``base_url`` attribute (``https://api.twilio.com`` for ``client.api``)
prefixes each request it makes (``Domain.absolute_url``). Setting
``client.api.base_url`` sends the Messages API to the configured server and
leaves auth, encoding and parsing to the SDK. The client's ``edge`` and
``region`` stay unset: they would rewrite that host name.
"""

from __future__ import annotations

import base64
from typing import Mapping
from urllib.parse import urlencode

import aiohttp
from twilio.base import values
from twilio.base.exceptions import TwilioException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from app.errors import (
    DeliveryError, InvalidRecipient, PermanentDeliveryError, ProviderDisabled, TransientDeliveryError,
)
from providers.base import Provider, Receipt, retry_after_seconds
from schemas.records import Delivery

DEFAULT_BASE_URL = "https://api.twilio.com"
#: Twilio error codes that mean the 'To' number itself is wrong:
#: 21211 invalid number, 21217 number not valid, 21401 invalid phone number,
#: 21614 not a mobile number.
INVALID_NUMBER_CODES = frozenset({21211, 21217, 21401, 21614})


class _HttpClient(AsyncTwilioHttpClient):
    """Twilio's aiohttp client, with two changes made where the response is.

    - 429 and 5xx become a transient error here: the SDK builds its
      exception from the status and body and drops the headers, so
      ``Retry-After`` can only be read at this point.
    - Basic auth goes as a plain ``Authorization`` header: the SDK wraps it in
      ``aiohttp.BasicAuth``, which aiohttp 3.14 deprecates (a warning on
      every send); the header on the wire is the same.
    """

    async def request(self, method: str, url: str, params: dict[str, object] | None = None,
                      data: dict[str, object] | None = None, headers: dict[str, str] | None = None,
                      auth: tuple[str, str] | None = None, timeout: float | None = None,
                      allow_redirects: bool = False) -> Response:
        if auth is not None:
            credentials = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            headers = {**(headers or {}), "Authorization": f"Basic {credentials}"}
        response = await super().request(method, url, params=params, data=data, headers=headers,
                                         timeout=timeout, allow_redirects=allow_redirects)
        status = response.status_code
        if status == 429 or status >= 500:
            raise TransientDeliveryError(f"twilio: HTTP {status}: {response.text[:200]}",
                                         retry_after=retry_after_seconds((response.headers or {}).get("Retry-After")))
        return response


class TwilioProvider(Provider):
    """Sends an SMS ``Delivery`` as one Twilio message from ``sender``.

    ``To``, ``From`` and ``Body`` go on the wire, and, when herald's public
    URL is known (``HERALD_PUBLIC_URL``), a ``StatusCallback`` to herald's
    Twilio webhook naming the notification and channel: Twilio then reports
    delivered/undelivered there, and the message carries herald's id (the
    Messages API has no other field for it).
    """

    name = "twilio"

    def __init__(self, account_sid: str, auth_token: str, sender: str,
                 base_url: str = DEFAULT_BASE_URL, timeout: float = 10.0,
                 public_url: str | None = None) -> None:
        super().__init__(timeout)
        self.account_sid = account_sid
        self.public_url = public_url.rstrip("/") if public_url else None
        self.sender = sender
        self.base_url = base_url
        self._auth_token = auth_token
        self._http: _HttpClient | None = None
        self._client: Client | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "TwilioProvider":
        """Read ``HERALD_TWILIO_ACCOUNT_SID``, ``HERALD_TWILIO_AUTH_TOKEN``, ``HERALD_SMS_FROM``
        (required), ``HERALD_TWILIO_BASE_URL`` and ``HERALD_PUBLIC_URL``."""
        for variable in ("HERALD_TWILIO_ACCOUNT_SID", "HERALD_TWILIO_AUTH_TOKEN", "HERALD_SMS_FROM"):
            if not env.get(variable):
                raise ProviderDisabled(f"{variable} is not set")
        return cls(env["HERALD_TWILIO_ACCOUNT_SID"], env["HERALD_TWILIO_AUTH_TOKEN"], env["HERALD_SMS_FROM"],
                   base_url=env.get("HERALD_TWILIO_BASE_URL") or DEFAULT_BASE_URL,
                   public_url=env.get("HERALD_PUBLIC_URL") or None)

    def _twilio(self) -> Client:
        # Built at the first send: the aiohttp session needs a running loop.
        if self._client is None:
            self._http = _HttpClient()
            # The SDK reads TWILIO_EDGE and TWILIO_REGION (which rewrite the host)
            # from os.environ unless given a non-empty environment of its own.
            self._client = Client(self.account_sid, self._auth_token, http_client=self._http,
                                  environment={"TWILIO_ACCOUNT_SID": self.account_sid})
            # Domain.base_url prefixes every request of client.api (see the module docstring).
            self._client.api.base_url = self.base_url
        return self._client

    async def _send(self, delivery: Delivery) -> Receipt:
        try:
            message = await self._twilio().messages.create_async(
                to=delivery.address, from_=self.sender, body=delivery.body or "",
                status_callback=self.status_callback(delivery))
        except TwilioException as exc:
            raise _twilio_error(exc) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise TransientDeliveryError(f"twilio: {type(exc).__name__}: {exc}") from exc
        return Receipt(provider=self.name, message_id=str(message.sid))

    def status_callback(self, delivery: Delivery) -> object:
        """herald's webhook for this message's status, or the SDK's "unset" without a public URL."""
        if not self.public_url:
            return values.unset
        query = urlencode({"notification_id": delivery.notification_id, "channel": delivery.channel})
        return f"{self.public_url}/v1/webhooks/twilio?{query}"

    async def aclose(self) -> None:
        """Close the aiohttp session."""
        if self._http is not None:
            http, self._http, self._client = self._http, None, None
            await http.close()


def _twilio_error(exc: TwilioException) -> DeliveryError:
    """The herald error for a Twilio error response (429 and 5xx never get here)."""
    status = getattr(exc, "status", None)
    code = getattr(exc, "code", None)
    detail = getattr(exc, "msg", None) or getattr(exc, "detail", None) or getattr(exc, "title", "")
    message = f"twilio: HTTP {status} error {code}: {detail}"
    if code in INVALID_NUMBER_CODES:
        return InvalidRecipient(message)
    if isinstance(status, int) and (status == 429 or status >= 500):
        return TransientDeliveryError(message)
    return PermanentDeliveryError(message)

