"""A fake SendGrid: ``POST /v3/mail/send`` as the v3 Mail Send API answers it.

Bearer auth against one API key (401 otherwise), the request validated the
way SendGrid does (400 with its ``{"errors": [{"message", "field", "help"}]}``
body), 202 with an ``X-Message-Id`` header on success.

::

    async with FakeSendGrid(api_key="SG.test") as fake:
        provider = SendGridProvider("SG.test", "herald@example.org", base_url=fake.url)
"""

from __future__ import annotations

import argparse
import asyncio
import re
import secrets
from typing import Any

from aiohttp import web

from testing.fakes.scripted import HttpFake, Script, run_standalone

_HELP = "https://docs.sendgrid.com/api-reference/mail-send/errors"
# Looser than RFC 5322 on purpose: SendGrid rejects what plainly is not an address.
_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>.]+$")


def _error(message: str, field: str | None) -> dict[str, Any]:
    return {"message": message, "field": field, "help": _HELP if field else None}


def _errors(status: int, *errors: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"errors": list(errors)}, status=status, headers=headers)


def validate(body: Any) -> list[dict[str, Any]]:
    """SendGrid's validation errors for a mail send request (empty when valid)."""
    if not isinstance(body, dict):
        return [_error("Bad Request", None)]
    errors: list[dict[str, Any]] = []
    personalizations = body.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        errors.append(_error("The personalizations field is required and must have at least one personalization.",
                             "personalizations"))
        personalizations = []
    for i, personalization in enumerate(personalizations):
        to = personalization.get("to") if isinstance(personalization, dict) else None
        if not isinstance(to, list) or not to:
            errors.append(_error("The to array is required for all personalization objects, and must have at "
                                 "least one email object with a valid email address.", f"personalizations.{i}.to"))
            continue
        for j, recipient in enumerate(to):
            email = recipient.get("email") if isinstance(recipient, dict) else None
            if not isinstance(email, str) or not _EMAIL.match(email):
                errors.append(_error("Does not contain a valid address.", f"personalizations.{i}.to.{j}.email"))
    sender = body.get("from")
    if not isinstance(sender, dict) or "email" not in sender:
        errors.append(_error("The from object must be provided for every email send. It is an object that "
                             "requires an email parameter, but may also contain a name parameter.", "from"))
    elif not isinstance(sender["email"], str) or not _EMAIL.match(sender["email"]):
        errors.append(_error("The from email does not contain a valid address.", "from.email"))
    if not body.get("template_id"):
        if not body.get("subject") and not all(
                isinstance(p, dict) and p.get("subject") for p in personalizations):
            errors.append(_error("The subject is required. You can get around this requirement if you use a "
                                 "template with a subject defined or if every personalization has a subject "
                                 "defined.", "subject"))
        content = body.get("content")
        if not isinstance(content, list) or not content:
            errors.append(_error("Unless a valid template_id is provided, the content array is required. It "
                                 "should contain at least 1 item.", "content"))
            content = []
        for k, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("value"), str) or not part["value"]:
                errors.append(_error("The content value must be a string at least one character in length.",
                                     f"content.{k}.value"))
    custom_args = body.get("custom_args", {})
    if not isinstance(custom_args, dict) or not all(isinstance(v, str) for v in custom_args.values()):
        errors.append(_error("Custom args values must be strings.", "custom_args"))
    return errors


class FakeSendGrid(HttpFake):
    """SendGrid's v3 Mail Send endpoint, scripted by :attr:`script`.

    Each accepted message is recorded as ``{"message_id", "from", "to",
    "subject", "text", "html", "custom_args", "payload"}``.
    """

    def __init__(self, api_key: str = "SG.fake-key", script: Script | None = None) -> None:
        super().__init__(script)
        self.api_key = api_key

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v3/mail/send", self._mail_send)]

    async def _mail_send(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _errors(401, _error("The provided authorization grant is invalid, expired, or revoked", None))
        try:
            body = await request.json()
        except ValueError:
            return _errors(400, _error("Bad Request", None))
        errors = validate(body)
        if errors:
            return _errors(400, *errors)
        to = [r["email"] for p in body["personalizations"] for r in p["to"]]
        decision = self.script.decide(to[0])
        if decision.delay:
            await asyncio.sleep(decision.delay)
        if decision.kind == "rate_limit":
            return _errors(429, _error("too many requests", None),
                           headers={"Retry-After": f"{decision.retry_after:g}"})
        if decision.kind == "fail":
            return _errors(decision.status, _error("The service is temporarily unavailable.", None))
        if decision.kind in ("invalid", "unregistered"):
            return _errors(400, _error("Does not contain a valid address.", "personalizations.0.to.0.email"))
        message_id = secrets.token_urlsafe(16)
        content = {part["type"]: part["value"] for part in body.get("content", [])}
        self.script.record({
            "message_id": message_id,
            "from": body["from"]["email"],
            "to": to,
            "subject": body.get("subject"),
            "text": content.get("text/plain"),
            "html": content.get("text/html"),
            "custom_args": body.get("custom_args", {}),
            "payload": body,
        })
        if decision.hang:
            await asyncio.sleep(decision.hang)
        return web.Response(status=202, headers={"X-Message-Id": message_id})


def main() -> None:
    """``python -m testing.fakes.sendgrid --port N [--api-key KEY]``: serve until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--api-key", default="SG.fake-key", help="the only API key accepted")
    args = parser.parse_args()
    run_standalone(FakeSendGrid(api_key=args.api_key), args.port)


if __name__ == "__main__":
    main()
