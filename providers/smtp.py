"""The ``smtp`` provider: email through any SMTP relay, with :mod:`aiosmtplib`.

One connection per message: a relay may drop idle connections at any time,
and a fresh session keeps the failure of one message from leaking into the
next.
"""

from __future__ import annotations

import re
import ssl
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from datetime import datetime, timezone
from typing import Mapping
from urllib.parse import quote

import aiosmtplib

from app.errors import (
    DeliveryError, InvalidRecipient, PermanentDeliveryError, ProviderDisabled, TransientDeliveryError,
)
from providers.base import Provider, Receipt
from schemas.records import Delivery

#: HERALD_SMTP_STARTTLS value -> aiosmtplib ``start_tls`` (None: upgrade if the server offers it).
STARTTLS_MODES: dict[str, bool | None] = {"auto": None, "true": True, "false": False}
#: Replies to RCPT TO that say the address itself is wrong (mailbox unknown, bad syntax).
INVALID_RECIPIENT_CODES = frozenset({550, 553})
# Characters allowed in the left part of a Message-ID (RFC 5322 dot-atom-text) besides
# letters and digits; anything else is percent-encoded, which keeps the id stable.
_ATEXT = "!#$&'*+-/=?^_`{|}~."
_SPACES = re.compile(r"\s+")


def message_id(delivery: Delivery) -> str:
    """The stable Message-ID of ``delivery``: the same on every retry.

    Receiving systems drop a second message with a Message-ID they already
    have, which makes a resend after a crash harmless.
    """
    local = quote(f"{delivery.notification_id}.{delivery.channel}", safe=_ATEXT)
    return f"<{local}@herald>"


class SmtpProvider(Provider):
    """Sends an email ``Delivery`` through an SMTP relay.

    ``starttls`` is ``None`` (use STARTTLS when the server offers it),
    ``True`` (require it) or ``False`` (never). Port 465 means implicit TLS
    (RFC 8314). ``tls_context`` overrides certificate checks, e.g. to trust
    a private CA.
    """

    name = "smtp"

    def __init__(self, host: str, sender: str, port: int = 587, username: str | None = None,
                 password: str | None = None, starttls: bool | None = None,
                 tls_context: ssl.SSLContext | None = None, timeout: float = 10.0) -> None:
        super().__init__(timeout)
        self.host = host
        self.port = port
        self.sender = sender
        self.username = username
        self.password = password
        self.starttls = starttls
        self.tls_context = tls_context

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "SmtpProvider":
        """Read ``HERALD_SMTP_HOST``, ``HERALD_EMAIL_FROM`` (required), ``HERALD_SMTP_PORT``,
        ``HERALD_SMTP_USERNAME``, ``HERALD_SMTP_PASSWORD`` and ``HERALD_SMTP_STARTTLS``."""
        for variable in ("HERALD_SMTP_HOST", "HERALD_EMAIL_FROM"):
            if not env.get(variable):
                raise ProviderDisabled(f"{variable} is not set")
        starttls = (env.get("HERALD_SMTP_STARTTLS") or "auto").strip().lower()
        if starttls not in STARTTLS_MODES:
            raise ProviderDisabled(f"HERALD_SMTP_STARTTLS must be one of {', '.join(STARTTLS_MODES)}, "
                                   f"not {starttls!r}")
        try:
            port = int(env.get("HERALD_SMTP_PORT") or 587)
        except ValueError:
            raise ProviderDisabled(f"HERALD_SMTP_PORT is not a port number: {env['HERALD_SMTP_PORT']!r}") from None
        return cls(env["HERALD_SMTP_HOST"], env["HERALD_EMAIL_FROM"], port=port,
                   username=env.get("HERALD_SMTP_USERNAME") or None,
                   password=env.get("HERALD_SMTP_PASSWORD") or None,
                   starttls=STARTTLS_MODES[starttls])

    def message(self, delivery: Delivery) -> EmailMessage:
        """The MIME message for ``delivery``: text, and an HTML alternative when it has one."""
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = delivery.address
        # A line break in a header would end it; a title is one line.
        message["Subject"] = _SPACES.sub(" ", delivery.title or "").strip()
        message["Date"] = format_datetime(datetime.now(timezone.utc))
        message["Message-ID"] = message_id(delivery)
        message["X-Herald-Notification-Id"] = delivery.notification_id
        message["X-Herald-Channel"] = delivery.channel
        message.set_content(delivery.body or "")
        if delivery.html:
            message.add_alternative(delivery.html, subtype="html")
        return message

    async def _send(self, delivery: Delivery) -> Receipt:
        try:
            message = self.message(delivery)
        except ValueError as exc:  # a line break or stray character in an address or id
            raise PermanentDeliveryError(f"smtp: cannot build the message: {exc}") from exc
        implicit_tls = self.port == 465
        client = aiosmtplib.SMTP(
            hostname=self.host, port=self.port, username=self.username, password=self.password,
            use_tls=implicit_tls, start_tls=False if implicit_tls else self.starttls,
            tls_context=self.tls_context, timeout=self.timeout,
        )
        try:
            await client.connect()
            await client.send_message(message, sender=parseaddr(self.sender)[1],
                                      recipients=[delivery.address])
        except aiosmtplib.SMTPException as exc:
            raise _smtp_error(exc) from exc
        except OSError as exc:  # refused connections, TLS failures
            raise TransientDeliveryError(f"smtp: {exc}") from exc
        finally:
            # No QUIT: the message is ours to forget at the 250 after DATA, and
            # a relay that stalls on QUIT must not turn that into a retry.
            client.close()
        return Receipt(provider=self.name, message_id=str(message["Message-ID"]))

    async def aclose(self) -> None:
        """Nothing to release: each message uses its own connection."""


def _smtp_error(exc: aiosmtplib.SMTPException) -> DeliveryError:
    """The herald error for an aiosmtplib failure."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        exc = exc.recipients[0]
    if isinstance(exc, (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPConnectError,
                        aiosmtplib.SMTPTimeoutError)) and not isinstance(exc, aiosmtplib.SMTPResponseException):
        return TransientDeliveryError(f"smtp: {exc}")
    if not isinstance(exc, aiosmtplib.SMTPResponseException):
        # STARTTLS or AUTH required but not offered: a configuration mismatch.
        return PermanentDeliveryError(f"smtp: {exc}")
    message = f"smtp: {exc.code} {exc.message}"
    if 400 <= exc.code < 500:
        return TransientDeliveryError(message)
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused) and exc.code in INVALID_RECIPIENT_CODES:
        return InvalidRecipient(message)
    return PermanentDeliveryError(message)
