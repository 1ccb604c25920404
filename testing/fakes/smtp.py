"""A fake SMTP server (aiosmtpd) that records envelopes and parsed messages.

It runs on the caller's event loop (no thread), optionally offers STARTTLS
with a throw-away self-signed certificate, and optionally requires AUTH.
Its :class:`~testing.fakes.scripted.Script` answers in SMTP terms: failures
are 451 unless told otherwise, a rate limit is 451 4.7.1, an ``invalid``
address gets 553 and an ``unregistered`` one 550, both at ``RCPT TO``.

::

    async with FakeSmtp(tls=True, credentials={"herald": "secret"}) as fake:
        provider = SmtpProvider(fake.host, "herald@example.org", port=fake.port,
                                username="herald", password="secret",
                                tls_context=fake.client_tls_context())
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import ssl
import tempfile
import weakref
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, Mapping

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from testing.fakes.scripted import Decision, Script, run_standalone

HOST = "127.0.0.1"


class FakeSmtp:
    """An SMTP server on 127.0.0.1 that records what it accepts.

    Each accepted message is recorded as ``{"mail_from", "rcpt_tos",
    "from", "to", "subject", "message_id", "headers", "text", "html",
    "tls", "login"}``.
    """

    def __init__(self, script: Script | None = None, credentials: Mapping[str, str] | None = None,
                 tls: bool = False) -> None:
        self.script = script or Script(failure_status=451)
        self.credentials = dict(credentials or {})
        self.tls = tls
        self.host = HOST
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._sessions: set[SMTP] = set()
        # Keyed by envelope, not id(): an envelope dropped after RCPT must not
        # hand its decision to a later one that reuses the id.
        self._accepted: weakref.WeakKeyDictionary[Envelope, Decision] = weakref.WeakKeyDictionary()
        self._cert_pem = b""
        self._server_context: ssl.SSLContext | None = None

    @property
    def url(self) -> str:
        """``smtp://127.0.0.1:PORT`` once started."""
        return f"smtp://{self.host}:{self.port}"

    @property
    def received(self) -> list[dict[str, Any]]:
        """The messages this fake accepted."""
        return self.script.received

    def client_tls_context(self) -> ssl.SSLContext:
        """A client TLS context that trusts this fake's certificate (and only it)."""
        return ssl.create_default_context(cadata=self._cert_pem.decode())

    async def start(self, port: int = 0) -> str:
        """Serve on 127.0.0.1 (``port`` 0: a free one) and return ``smtp://host:port``."""
        if self.tls:
            self._cert_pem, self._server_context = _self_signed_context()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, HOST, port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.url

    async def stop(self) -> None:
        """Stop listening and drop every open session."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        for session in list(self._sessions):
            if session.transport is not None:
                session.transport.close()
        await server.wait_closed()

    async def __aenter__(self) -> "FakeSmtp":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _protocol(self) -> SMTP:
        return _TrackedSMTP(
            self, hostname="fake-smtp.herald.test", ident="herald fake SMTP",
            tls_context=self._server_context,
            # AUTH is checked in handle_MAIL rather than with auth_required,
            # which aiosmtpd refuses (with a warning) without TLS.
            authenticator=self._authenticate, auth_require_tls=self.tls,
            loop=asyncio.get_running_loop(),
        )

    def _authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                      auth_data: Any) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) \
            and self.credentials.get(auth_data.login.decode()) == auth_data.password.decode()
        return AuthResult(success=ok, handled=False, auth_data=auth_data.login.decode() if ok else None)

    # aiosmtpd handler hooks.

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          mail_options: list[str]) -> str:
        if self.credentials and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        decision = self.script.decide(address)
        if decision.delay:
            await asyncio.sleep(decision.delay)
        if decision.kind == "fail":
            return f"{decision.status} {decision.status // 100}.3.0 Service unavailable, try again later"
        if decision.kind == "rate_limit":
            return f"451 4.7.1 Rate limited, try again in {decision.retry_after:g} seconds"
        if decision.kind == "invalid":
            return f"553 5.1.3 <{address}>: Bad recipient address syntax"
        if decision.kind == "unregistered":
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        self._accepted[envelope] = decision
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        decision = self._accepted.pop(envelope, Decision())
        raw = envelope.original_content or b""
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        text = message.get_body(("plain",))
        html = message.get_body(("html",))
        self.script.record({
            "mail_from": envelope.mail_from, "rcpt_tos": list(envelope.rcpt_tos),
            "from": message["From"], "to": message["To"], "subject": message["Subject"],
            "message_id": message["Message-ID"], "headers": dict(message.items()),
            "text": text.get_content() if text is not None else None,
            "html": html.get_content() if html is not None else None,
            "tls": session.ssl is not None, "login": session.auth_data,
        })
        if decision.hang:
            await asyncio.sleep(decision.hang)
        return "250 2.0.0 OK: queued"


class _TrackedSMTP(SMTP):
    """An aiosmtpd session, handled by ``fake``, that the fake can close when it stops."""

    def __init__(self, fake: FakeSmtp, **kwargs: Any) -> None:
        super().__init__(fake, **kwargs)
        self._fake = fake

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._fake._sessions.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self._fake._sessions.discard(self)
        super().connection_lost(error)


def _self_signed_context() -> tuple[bytes, ssl.SSLContext]:
    """A certificate for 127.0.0.1/localhost and a server context serving it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "herald fake smtp")])
    now = datetime.now(timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(IPv4Address(HOST))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    # load_cert_chain only reads files; they are needed for that one call.
    with tempfile.TemporaryDirectory() as tmp:
        cert_file, key_file = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
        cert_file.write_bytes(cert_pem)
        key_file.write_bytes(key_pem)
        context.load_cert_chain(cert_file, key_file)
    return cert_pem, context


def main() -> None:
    """``python -m testing.fakes.smtp --port N [--tls] [--user U --password P]``: serve until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--tls", action="store_true", help="offer STARTTLS with a self-signed certificate")
    parser.add_argument("--user", help="require AUTH with this user name")
    parser.add_argument("--password", default="")
    args = parser.parse_args()
    credentials = {args.user: args.password} if args.user else None
    run_standalone(FakeSmtp(credentials=credentials, tls=args.tls), args.port)


if __name__ == "__main__":
    main()
