"""A fake Apple Push Notification service: ``POST /3/device/{token}`` over HTTP/2 and TLS.

A real HTTP/2 server (the ``h2`` state machine on asyncio) behind TLS with
ALPN ``h2`` and a certificate for 127.0.0.1 issued at start-up by a CA of
its own (write it with :meth:`FakeAPNs.write_ca`, trust it with
``HERALD_APNS_CA_FILE``). Like APNs it wants token-based authentication: an
``authorization: bearer <JWT>`` whose ES256 signature verifies with the
team's key (the fake makes one: :meth:`FakeAPNs.write_key` writes the .p8),
whose ``kid`` is the key id and ``iss`` the team id, issued within the hour;
and an ``apns-topic`` it serves. It answers 200 with an ``apns-id`` header,
or Apple's JSON ``{"reason": ...}``: 400 BadDeviceToken, 403
InvalidProviderToken, 410 Unregistered (with a ``timestamp``), 429
TooManyRequests, 500/503...

::

    async with FakeAPNs(key_id=KEY_ID, team_id=TEAM_ID, topic=TOPIC) as fake:
        provider = APNsProvider(fake.key_pem, KEY_ID, TEAM_ID, TOPIC,
                                base_url=fake.url, ca_file=str(fake.write_ca(tmp_path / "ca.pem")))

Standalone, the same control routes as the HTTP fakes (``GET
/_fake/received``, ``POST /_fake/script``) are served over HTTP/2.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import ipaddress
import json
import re
import ssl
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import ConnectionTerminated, DataReceived, RequestReceived, StreamEnded, StreamReset
from h2.exceptions import ProtocolError

from testing.fakes.scripted import SCRIPT_ACTIONS, Script, run_standalone

HOST = "127.0.0.1"
DEFAULT_KEY_ID = "ABC123DEFG"
DEFAULT_TEAM_ID = "DEF123GHIJ"
DEFAULT_TOPIC = "org.example.herald"
#: Apple refuses provider tokens older than an hour.
TOKEN_MAX_AGE = 3600
MAX_PAYLOAD = 4096

#: What APNs says for a scripted failure status.
_REASONS = {
    400: "BadDeviceToken", 403: "InvalidProviderToken", 405: "MethodNotAllowed", 410: "Unregistered",
    413: "PayloadTooLarge", 429: "TooManyRequests", 500: "InternalServerError",
    503: "ServiceUnavailable",
}
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_DEVICE_PATH = re.compile(r"/3/device/([^/?]*)")
_PUSH_TYPES = frozenset({"alert", "background", "voip", "complication", "fileprovider", "mdm",
                         "liveactivity", "location", "pushtotalk", "widgets", "controls"})

Answer = tuple[int, dict[str, str], Any]


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _certificates() -> tuple[bytes, bytes, bytes]:
    """(CA certificate, server certificate, server key) as PEM: a CA of its own issues for 127.0.0.1."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "herald fake APNs CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=7))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)]))
              .issuer_name(ca_name).public_key(server_key.public_key())
              .serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(minutes=5))
              .not_valid_after(now + datetime.timedelta(days=7))
              .add_extension(x509.SubjectAlternativeName([
                  x509.IPAddress(ipaddress.IPv4Address(HOST)), x509.DNSName("localhost")]), critical=False)
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
              .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                             critical=False)
              .sign(ca_key, hashes.SHA256()))
    return (ca.public_bytes(serialization.Encoding.PEM), server.public_bytes(serialization.Encoding.PEM),
            _pem(server_key))


class FakeAPNs:
    """APNs's provider API for one team key and topic, scripted by :attr:`script`.

    Each accepted notification is recorded as ``{"apns_id", "token",
    "topic", "headers", "payload", "jwt"}``: ``headers`` are the request's
    regular headers (``authorization`` included), ``payload`` the parsed
    JSON body, ``jwt`` the provider token's ``{"header", "claims"}``.
    """

    def __init__(self, key_id: str = DEFAULT_KEY_ID, team_id: str = DEFAULT_TEAM_ID,
                 topic: str = DEFAULT_TOPIC, script: Script | None = None) -> None:
        self.key_id, self.team_id, self.topic = key_id, team_id, topic
        self.script = script or Script()
        self.url = ""
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.ca_pem, self._cert_pem, self._cert_key_pem = _certificates()
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        #: HTTP/2 connections accepted so far (a client should reuse one).
        self.connections_accepted = 0

    @property
    def key_pem(self) -> str:
        """The team's signing key as Apple hands it out (a PKCS#8 PEM ``AuthKey_<key id>.p8``)."""
        return _pem(self._key).decode()

    def write_key(self, path: str | Path) -> Path:
        """Write :attr:`key_pem` to ``path`` (for ``HERALD_APNS_KEY``) and return it."""
        path = Path(path)
        path.write_text(self.key_pem, encoding="ascii")
        return path

    def write_ca(self, path: str | Path) -> Path:
        """Write the CA that issued the fake's certificate (for ``HERALD_APNS_CA_FILE``)."""
        path = Path(path)
        path.write_bytes(self.ca_pem)
        return path

    @property
    def open_connections(self) -> int:
        """HTTP/2 connections open now."""
        return len(self._connections)

    @property
    def received(self) -> list[dict[str, Any]]:
        """The notifications this fake accepted."""
        return self.script.received

    def _tls(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.set_alpn_protocols(["h2"])
        # load_cert_chain only reads files; they are needed for that one call.
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
            cert.write_bytes(self._cert_pem)
            key.write_bytes(self._cert_key_pem)
            context.load_cert_chain(cert, key)
        return context

    async def start(self, port: int = 0) -> str:
        """Serve on 127.0.0.1 (``port`` 0: a free one) and return the base URL."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), HOST, port, ssl=self._tls())
        self.url = f"https://{HOST}:{self._server.sockets[0].getsockname()[1]}"
        return self.url

    async def stop(self) -> None:
        """Stop serving and close every connection (GOAWAY, then TLS close)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        connections = list(self._connections)
        for connection in connections:
            connection.close()
        if connections:
            _, stuck = await asyncio.wait([asyncio.ensure_future(c.lost.wait()) for c in connections],
                                          timeout=2.0)
            for wait in stuck:
                wait.cancel()
            for connection in connections:
                if not connection.lost.is_set():
                    connection.abort()
        await server.wait_closed()

    async def __aenter__(self) -> "FakeAPNs":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def answer(self, headers: dict[str, str], body: bytes) -> Answer:
        """(status, headers, JSON body or None) for one request, as APNs would answer it."""
        path = headers.get(":path", "")
        if path.startswith("/_fake/"):
            return self._control(headers.get(":method", ""), path, body)
        apns_id = headers.get("apns-id") or str(uuid.uuid4())

        def refuse(status: int, reason: str, **extra: Any) -> Answer:
            retry_after = extra.pop("retry_after", None)
            more = {"retry-after": f"{retry_after:g}"} if retry_after is not None else {}
            return status, {"apns-id": apns_id, "content-type": "application/json", **more}, \
                {"reason": reason, **extra}

        if headers.get(":method") != "POST":
            return refuse(405, "MethodNotAllowed")
        match = _DEVICE_PATH.fullmatch(path)
        if not match:
            return refuse(404, "BadPath")
        token_problem, provider_token = self._check_provider_token(headers.get("authorization"))
        if token_problem:
            return refuse(403, token_problem)
        problem = self._check_request(match[1], headers, body)
        if problem:
            return refuse(413 if problem == "PayloadTooLarge" else 400, problem)
        device = match[1]
        decision = self.script.decide(device)
        if decision.delay:
            await asyncio.sleep(decision.delay)
        if decision.kind == "rate_limit":
            return refuse(429, "TooManyRequests", retry_after=decision.retry_after)
        if decision.kind == "fail":
            return refuse(decision.status, _REASONS.get(decision.status, "InternalServerError"))
        if decision.kind == "invalid":
            return refuse(400, "BadDeviceToken")
        if decision.kind == "unregistered":
            return refuse(410, "Unregistered", timestamp=time.time_ns() // 1_000_000)
        self.script.record({
            "apns_id": apns_id, "token": device, "topic": headers["apns-topic"],
            "headers": {k: v for k, v in headers.items() if not k.startswith(":")},
            "payload": json.loads(body), "jwt": provider_token,
        })
        if decision.hang:
            await asyncio.sleep(decision.hang)
        return 200, {"apns-id": apns_id}, None

    def _check_provider_token(self, authorization: str | None) -> tuple[str | None, dict[str, Any]]:
        """(Apple's reason to refuse, or None; the token's header and claims)."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return "MissingProviderToken", {}
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(token, self._key.public_key(), algorithms=["ES256"],
                                options={"require": ["iss", "iat"], "verify_iat": False})
        except jwt.PyJWTError:
            return "InvalidProviderToken", {}
        if header.get("kid") != self.key_id or claims["iss"] != self.team_id:
            return "InvalidProviderToken", {}
        if not isinstance(claims["iat"], int) or claims["iat"] < time.time() - TOKEN_MAX_AGE:
            return "ExpiredProviderToken", {}
        return None, {"header": header, "claims": claims}

    def _check_request(self, device: str, headers: dict[str, str], body: bytes) -> str | None:
        """Apple's reason to refuse a malformed request, or None."""
        topic = headers.get("apns-topic")
        if not topic:
            return "MissingTopic"
        if topic != self.topic:
            return "TopicDisallowed"
        if not device:
            return "MissingDeviceToken"
        if not re.fullmatch(r"[0-9a-fA-F]+", device):
            return "BadDeviceToken"
        if "apns-id" in headers and not _UUID.fullmatch(headers["apns-id"]):
            return "BadMessageId"
        if len(headers.get("apns-collapse-id", "").encode()) > 64:
            return "BadCollapseId"
        if headers.get("apns-priority", "10") not in ("1", "5", "10"):
            return "BadPriority"
        if headers.get("apns-push-type", "alert") not in _PUSH_TYPES:
            return "InvalidPushType"
        if len(body) > MAX_PAYLOAD:
            return "PayloadTooLarge"
        try:
            payload = json.loads(body)
        except ValueError:
            return "PayloadEmpty"
        if not isinstance(payload, dict) or not isinstance(payload.get("aps"), dict):
            return "PayloadEmpty"
        return None

    def _control(self, method: str, path: str, body: bytes) -> Answer:
        json_type = {"content-type": "application/json"}
        if (method, path) == ("GET", "/_fake/received"):
            return 200, json_type, self.script.received
        if (method, path) != ("POST", "/_fake/script"):
            return 404, json_type, {"error": "unknown control route"}
        try:
            step = json.loads(body)
            action = step.pop("action", None)
            if action not in SCRIPT_ACTIONS:
                return 400, json_type, {"error": f"action must be one of {SCRIPT_ACTIONS}"}
            getattr(self.script, action)(**step)
        except (ValueError, TypeError, AttributeError) as exc:
            return 400, json_type, {"error": str(exc)}
        return 200, json_type, {"ok": True}


class _Connection(asyncio.Protocol):
    """One client's HTTP/2 connection; each request is answered by a task of its own."""

    def __init__(self, fake: FakeAPNs) -> None:
        self.fake = fake
        self.h2 = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
        self.transport: asyncio.Transport | None = None
        self.requests: dict[int, tuple[dict[str, str], bytearray]] = {}
        self.answering: dict[int, asyncio.Task[None]] = {}
        self.lost = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.fake._connections.add(self)
        self.fake.connections_accepted += 1
        self.h2.initiate_connection()
        self._flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except ProtocolError:
            self._flush()
            self.abort()
            return
        for event in events:
            if isinstance(event, RequestReceived):
                self.requests[event.stream_id] = (dict(event.headers), bytearray())
            elif isinstance(event, DataReceived):
                if event.stream_id in self.requests:
                    self.requests[event.stream_id][1].extend(event.data)
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, StreamEnded) and event.stream_id in self.requests:
                headers, body = self.requests.pop(event.stream_id)
                task = asyncio.ensure_future(self._answer(event.stream_id, headers, bytes(body)))
                self.answering[event.stream_id] = task
                task.add_done_callback(lambda _, sid=event.stream_id: self.answering.pop(sid, None))
            elif isinstance(event, StreamReset):
                self.requests.pop(event.stream_id, None)
                if event.stream_id in self.answering:
                    self.answering[event.stream_id].cancel()
            elif isinstance(event, ConnectionTerminated):
                self.close()
        self._flush()

    async def _answer(self, stream_id: int, headers: dict[str, str], body: bytes) -> None:
        status, response_headers, answer = await self.fake.answer(headers, body)
        if self.transport is None or self.transport.is_closing():
            return
        data = json.dumps(answer).encode() if answer is not None else b""
        try:
            self.h2.send_headers(stream_id, [(":status", str(status)), *response_headers.items()],
                                 end_stream=not data)
            if data:
                self.h2.send_data(stream_id, data, end_stream=True)
        except ProtocolError:
            return  # the client reset the stream meanwhile
        self._flush()

    def _flush(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self.h2.data_to_send())

    def close(self) -> None:
        """Say GOAWAY and close the TLS connection."""
        if self.transport is not None and not self.transport.is_closing():
            self.h2.close_connection()
            self._flush()
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        for task in list(self.answering.values()):
            task.cancel()
        self.fake._connections.discard(self)
        self.lost.set()


def main() -> None:
    """``python -m testing.fakes.apns --port N --key-out P --ca-out P``: serve until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--key-id", default=DEFAULT_KEY_ID)
    parser.add_argument("--team-id", default=DEFAULT_TEAM_ID)
    parser.add_argument("--topic", default=DEFAULT_TOPIC)
    parser.add_argument("--key-out", metavar="PATH", help="write the team's .p8 key here (HERALD_APNS_KEY)")
    parser.add_argument("--ca-out", metavar="PATH", help="write the fake's CA here (HERALD_APNS_CA_FILE)")
    parser.add_argument("--unregistered", metavar="TOKEN", action="append", default=[],
                        help="a device token to answer 410 Unregistered for (repeatable)")
    args = parser.parse_args()
    fake = FakeAPNs(key_id=args.key_id, team_id=args.team_id, topic=args.topic)
    for token in args.unregistered:
        fake.script.unregistered(token)
    if args.key_out:
        fake.write_key(args.key_out)
    if args.ca_out:
        fake.write_ca(args.ca_out)
    run_standalone(fake, args.port)


if __name__ == "__main__":
    main()
