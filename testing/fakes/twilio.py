"""A fake Twilio: ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json``.

HTTP Basic auth with the account SID and auth token (401, error 20003,
otherwise), form-encoded ``To``/``From``/``Body``, Twilio's JSON error shape
(``code``, ``message``, ``more_info``, ``status``), and 201 with a message
resource (``sid`` "SM" + 32 hex, ``status`` "queued") on success.

::

    async with FakeTwilio(account_sid=SID, auth_token="secret") as fake:
        provider = TwilioProvider(SID, "secret", "+15005550006", base_url=fake.url)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import re
import secrets
from datetime import datetime, timezone
from email.utils import format_datetime

from aiohttp import web

from testing.fakes.scripted import HttpFake, Script, run_standalone

DEFAULT_ACCOUNT_SID = "AC" + "0" * 32
_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
_API_VERSION = "2010-04-01"


def _error(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({
        "code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }, status=status, headers=headers)


class FakeTwilio(HttpFake):
    """Twilio's Programmable Messaging create-message endpoint, scripted by :attr:`script`.

    Each accepted message is recorded as ``{"sid", "account_sid", "to",
    "from", "body", "form"}``.
    """

    def __init__(self, account_sid: str = DEFAULT_ACCOUNT_SID, auth_token: str = "fake-token",
                 script: Script | None = None) -> None:
        super().__init__(script)
        self.account_sid = account_sid
        self.auth_token = auth_token

    def routes(self) -> list[web.RouteDef]:
        return [web.post(f"/{_API_VERSION}/Accounts/{{account_sid}}/Messages.json", self._create_message)]

    def _authorized(self, request: web.Request) -> bool:
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode("ascii")
        return request.headers.get("Authorization") == f"Basic {expected}" \
            and request.match_info["account_sid"] == self.account_sid

    async def _create_message(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _error(401, 20003, "Authenticate", headers={"WWW-Authenticate": 'Basic realm="Twilio API"'})
        form = await request.post()
        to, sender, body = (str(form.get(name, "")) for name in ("To", "From", "Body"))
        if not to:
            return _error(400, 21604, "A 'To' phone number is required.")
        if not sender and not form.get("MessagingServiceSid"):
            return _error(400, 21603, "A 'From' phone number is required.")
        if not body and not form.get("MediaUrl"):
            return _error(400, 21602, "Message body is required.")
        if not _E164.match(to):
            return _error(400, 21211, f"Invalid 'To' Phone Number: {to}")
        decision = self.script.decide(to)
        if decision.delay:
            await asyncio.sleep(decision.delay)
        if decision.kind == "rate_limit":
            return _error(429, 20429, "Too Many Requests", headers={"Retry-After": f"{decision.retry_after:g}"})
        if decision.kind == "fail":
            return _error(decision.status, 20500, "Internal Server Error")
        if decision.kind == "invalid":
            return _error(400, 21211, f"Invalid 'To' Phone Number: {to}")
        if decision.kind == "unregistered":
            return _error(400, 21614, f"'To' number {to} is not a valid mobile number")
        resource = self._resource(to, sender, body)
        self.script.record({"sid": resource["sid"], "account_sid": self.account_sid, "to": to,
                            "from": sender, "body": body, "form": dict(form)})
        if decision.hang:
            await asyncio.sleep(decision.hang)
        return web.json_response(resource, status=201)

    def _resource(self, to: str, sender: str, body: str) -> dict[str, object]:
        sid = "SM" + secrets.token_hex(16)
        now = format_datetime(datetime.now(timezone.utc), usegmt=True)
        uri = f"/{_API_VERSION}/Accounts/{self.account_sid}/Messages/{sid}"
        return {
            "account_sid": self.account_sid, "api_version": _API_VERSION, "body": body,
            "date_created": now, "date_sent": None, "date_updated": now, "direction": "outbound-api",
            "error_code": None, "error_message": None, "from": sender, "messaging_service_sid": None,
            "num_media": "0", "num_segments": "1", "price": None, "price_unit": "USD", "sid": sid,
            "status": "queued", "subresource_uris": {"media": f"{uri}/Media.json"}, "to": to,
            "uri": f"{uri}.json",
        }


def main() -> None:
    """``python -m testing.fakes.twilio --port N [--account-sid AC… --auth-token T]``: serve until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--account-sid", default=DEFAULT_ACCOUNT_SID)
    parser.add_argument("--auth-token", default="fake-token")
    args = parser.parse_args()
    run_standalone(FakeTwilio(account_sid=args.account_sid, auth_token=args.auth_token), args.port)


if __name__ == "__main__":
    main()
