"""A fake Firebase Cloud Messaging: HTTP v1 ``messages:send`` and the OAuth token endpoint.

``POST /token`` plays Google's OAuth server for a service account: it takes
the JWT-bearer grant, checks the assertion's RS256 signature against the
fake's service-account key, and issues an access token. ``POST
/v1/projects/{project}/messages:send`` wants that token as a Bearer (401
otherwise), a ``{"message": {"token" or "fid": ...}}`` body, and answers 200 with
``{"name": "projects/{project}/messages/{id}"}`` or FCM v1's error shape
(``{"error": {"code", "message", "status", "details": [{"@type": ...FcmError,
"errorCode"}]}}``): UNREGISTERED 404, INVALID_ARGUMENT 400, QUOTA_EXCEEDED
429 with Retry-After, UNAVAILABLE 503, SENDER_ID_MISMATCH 403...

The fake makes its own service account: write it where firebase-admin reads
it, and its ``token_uri`` points back at the fake::

    async with FakeFCM(project_id="herald-test") as fake:
        path = fake.write_service_account(tmp_path / "service-account.json")
        provider = FCMProvider(str(path), base_url=fake.url)
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from testing.fakes.scripted import HttpFake, Script, run_standalone

DEFAULT_PROJECT_ID = "herald-test"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: google-auth always signs for Google's endpoint, wherever token_uri sends the grant.
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
#: Either scope lets an access token call messages:send.
_SEND_SCOPES = frozenset({"https://www.googleapis.com/auth/firebase.messaging",
                          "https://www.googleapis.com/auth/cloud-platform"})
_FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"

#: HTTP status -> (google.rpc status, FCM errorCode) as FCM v1 answers them.
_ERRORS = {
    400: ("INVALID_ARGUMENT", "INVALID_ARGUMENT"),
    401: ("UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR"),
    403: ("PERMISSION_DENIED", "SENDER_ID_MISMATCH"),
    404: ("NOT_FOUND", "UNREGISTERED"),
    429: ("RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"),
    500: ("INTERNAL", "INTERNAL"),
    503: ("UNAVAILABLE", "UNAVAILABLE"),
}


def fcm_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """An FCM v1 error answer with its ``FcmError`` detail."""
    rpc_status, error_code = _ERRORS.get(status, ("UNKNOWN", None))
    error: dict[str, Any] = {"code": status, "message": message, "status": rpc_status}
    if error_code:
        error["details"] = [{"@type": _FCM_ERROR_TYPE, "errorCode": error_code}]
    return web.json_response({"error": error}, status=status, headers=headers)


@functools.cache
def _service_account_key() -> rsa.RSAPrivateKey:
    # One per process: a 2048-bit RSA key takes a noticeable fraction of a second to make.
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _oauth_error(error: str, description: str) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=400)


class FakeFCM(HttpFake):
    """FCM HTTP v1 send and the OAuth token endpoint, scripted by :attr:`script`.

    Each accepted message is recorded as ``{"name", "project", "token",
    "target", "message", "authorization"}``: ``token`` is the device
    addressed, ``target`` the field that named it (``"token"`` or, since
    FCM's 2026 move to installation ids, ``"fid"``), ``message`` the JSON
    ``message`` object as sent. ``access_tokens`` lists the tokens the fake issued.
    With ``service_account_file`` the fake writes its credentials there when
    it starts (the standalone demo uses that).
    """

    def __init__(self, project_id: str = DEFAULT_PROJECT_ID, script: Script | None = None,
                 service_account_file: str | None = None) -> None:
        super().__init__(script)
        self.project_id = project_id
        self.client_email = f"firebase-adminsdk@{project_id}.iam.gserviceaccount.com"
        self.service_account_file = service_account_file
        self.access_tokens: list[str] = []
        self._key = _service_account_key()

    async def start(self, port: int = 0) -> str:
        url = await super().start(port)
        if self.service_account_file:
            self.write_service_account(self.service_account_file)
        return url

    @property
    def token_uri(self) -> str:
        """Where google-auth exchanges the service account's signed JWT for an access token."""
        return f"{self.url}/token"

    def service_account(self) -> dict[str, str]:
        """A service-account JSON whose key the fake knows and whose token_uri is the fake."""
        if not self.url:
            raise RuntimeError("start the fake first: the token_uri needs its port")
        pem = self._key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()).decode()
        return {
            "type": "service_account", "project_id": self.project_id,
            "private_key_id": "fake-key-1", "private_key": pem, "client_email": self.client_email,
            "client_id": "100000000000000000000", "token_uri": self.token_uri,
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        }

    def write_service_account(self, path: str | Path) -> Path:
        """Write :meth:`service_account` to ``path`` and return it."""
        path = Path(path)
        path.write_text(json.dumps(self.service_account(), indent=2), encoding="utf-8")
        return path

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/token", self._token),
            web.post("/v1/projects/{project}/messages:send", self._send),
        ]

    async def _token(self, request: web.Request) -> web.Response:
        form = parse_qs(await request.text())
        if form.get("grant_type") != [JWT_BEARER_GRANT] or len(form.get("assertion", [])) != 1:
            return _oauth_error("unsupported_grant_type", f"expected grant_type={JWT_BEARER_GRANT}")
        try:
            claims = jwt.decode(form["assertion"][0], self._key.public_key(), algorithms=["RS256"],
                                audience=[self.token_uri, GOOGLE_TOKEN_AUDIENCE],
                                issuer=self.client_email, leeway=5,
                                options={"require": ["iat", "exp", "scope"]})
        except jwt.PyJWTError as exc:
            return _oauth_error("invalid_grant", f"Invalid JWT Signature or claims: {exc}")
        if not _SEND_SCOPES & set(str(claims["scope"]).split()):
            return _oauth_error("invalid_scope", "no scope that may send FCM messages")
        token = f"ya29.fake-{secrets.token_urlsafe(24)}"
        self.access_tokens.append(token)
        return web.json_response({"access_token": token, "expires_in": 3599, "token_type": "Bearer"})

    async def _send(self, request: web.Request) -> web.Response:
        authorization = request.headers.get("Authorization", "")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or token not in self.access_tokens:
            return fcm_error(401, "Request had invalid authentication credentials.",
                             headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'})
        project = request.match_info["project"]
        if project != self.project_id:
            return fcm_error(403, f"Permission denied on project {project}.")
        try:
            body = await request.json()
            message = body["message"]
            if not isinstance(message, dict):
                raise TypeError("message is not an object")
            targets = [field for field in ("fid", "token", "topic", "condition") if field in message]
        except (ValueError, KeyError, TypeError):
            return fcm_error(400, "Invalid JSON payload: a message is required.")
        if targets not in (["fid"], ["token"]):
            return fcm_error(400, "Exactly one device target (fid or token) is required.")
        device = message[targets[0]]
        decision = self.script.decide(device)
        if decision.delay:
            await asyncio.sleep(decision.delay)
        if decision.kind == "rate_limit":
            return fcm_error(429, "Quota exceeded for sending messages.",
                             headers={"Retry-After": f"{decision.retry_after:g}"})
        if decision.kind == "fail":
            return fcm_error(decision.status, "The service failed (scripted).")
        if decision.kind == "invalid":
            return fcm_error(400, "The registration token is not a valid FCM registration token")
        if decision.kind == "unregistered":
            return fcm_error(404, "Requested entity was not found.")
        name = f"projects/{project}/messages/0:{time.time_ns() // 1_000_000}%{secrets.token_hex(8)}"
        if body.get("validate_only"):
            return web.json_response({"name": f"projects/{project}/messages/fake_message_id"})
        self.script.record({"name": name, "project": project, "token": device, "target": targets[0],
                            "message": message, "authorization": authorization})
        if decision.hang:
            await asyncio.sleep(decision.hang)
        return web.json_response({"name": name})


def main() -> None:
    """``python -m testing.fakes.fcm --port N [--project-id P] [--service-account PATH]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--project-id", default=DEFAULT_PROJECT_ID)
    parser.add_argument("--service-account", metavar="PATH",
                        help="write the matching service-account JSON here (for HERALD_FCM_CREDENTIALS)")
    args = parser.parse_args()
    run_standalone(FakeFCM(project_id=args.project_id, service_account_file=args.service_account),
                   args.port)


if __name__ == "__main__":
    main()
