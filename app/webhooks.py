"""Provider status webhooks: Twilio status callbacks and SendGrid event webhooks.

Each request is verified with the provider's own signature scheme (through
its SDK's validator) before anything is believed; a bad or missing signature
gets 403, a malformed body 400. Accepted updates become DELIVERED or FAILED
``delivery-events`` for the recorder.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Mapping

from faust.web import Request, Response, View

from agents.emitters import emit_status
from app.context import Herald

logger = logging.getLogger("herald.webhooks")

FORM = "application/x-www-form-urlencoded"
#: Twilio ``MessageStatus`` → herald status (others are progress, not outcomes).
TWILIO_STATUSES = {"delivered": "DELIVERED", "undelivered": "FAILED", "failed": "FAILED"}
#: SendGrid event → herald status.
SENDGRID_EVENTS = {"delivered": "DELIVERED", "bounce": "FAILED", "dropped": "FAILED"}


def twilio_update(params: Mapping[str, str], query: Mapping[str, str]) -> dict[str, Any] | None:
    """The status change a Twilio callback reports, or ``None`` if it is only progress."""
    status = TWILIO_STATUSES.get(params.get("MessageStatus", ""))
    if status is None or not query.get("notification_id"):
        return None
    error = params.get("ErrorCode")
    return {"notification_id": query["notification_id"], "channel": query.get("channel", "sms"),
            "status": status, "provider_message_id": params.get("MessageSid"),
            "error": f"twilio error {error}" if error else None}


def sendgrid_updates(events: Any) -> list[dict[str, Any]]:
    """The status changes in a SendGrid event batch (events without herald's ids are skipped)."""
    if not isinstance(events, list):
        raise ValueError("expected a JSON array of events")
    updates = []
    for event in events:
        status = SENDGRID_EVENTS.get(event.get("event", "")) if isinstance(event, dict) else None
        if status is None or not event.get("herald_notification_id"):
            continue
        updates.append({
            "notification_id": event["herald_notification_id"],
            "channel": event.get("herald_channel", "email"), "status": status,
            "provider_message_id": event.get("sg_message_id"),
            "error": event.get("reason") or event.get("response"),
        })
    return updates


def register(herald: Herald) -> None:
    """Declare the webhook views on the app."""
    app, env = herald.app, herald.settings.provider_env

    async def record(updates: list[dict[str, Any]]) -> None:
        for update in updates:
            await emit_status(herald, update["notification_id"], update["channel"],
                              update["status"], reason="provider webhook", error=update["error"],
                              provider_message_id=update["provider_message_id"])

    @app.page("/v1/webhooks/twilio")
    class TwilioStatus(View):
        """Twilio's status callback for an SMS (form-encoded, X-Twilio-Signature)."""

        async def post(self, request: Request) -> Response:
            from twilio.request_validator import RequestValidator

            token = env.get("HERALD_TWILIO_AUTH_TOKEN")
            if not token:
                return self.json({"error": "HERALD_TWILIO_AUTH_TOKEN is not set"}, status=503)
            if request.content_type != FORM:  # type: ignore[attr-defined]
                return self.json({"error": f"expected a {FORM} body (a Twilio status callback)"},
                                 status=415)
            try:
                params = dict(await request.post())
            except ValueError as exc:  # bad percent-encoding or charset
                return self.json({"error": f"malformed form body: {exc}"}, status=400)
            url = env.get("HERALD_PUBLIC_URL", "").rstrip("/") + request.path_qs \
                if env.get("HERALD_PUBLIC_URL") else str(request.url)
            signature = request.headers.get("X-Twilio-Signature", "")
            if not RequestValidator(token).validate(url, params, signature):
                return self.json({"error": "invalid X-Twilio-Signature"}, status=403)
            update = twilio_update(params, request.query)
            await record([update] if update else [])
            return self.json({"accepted": 1 if update else 0})

    @app.page("/v1/webhooks/sendgrid")
    class SendGridEvents(View):
        """SendGrid's event webhook (JSON array, signed with ECDSA)."""

        async def post(self, request: Request) -> Response:
            from sendgrid.helpers.eventwebhook import EventWebhook

            key = env.get("HERALD_SENDGRID_WEBHOOK_PUBLIC_KEY")
            if not key:
                return self.json({"error": "HERALD_SENDGRID_WEBHOOK_PUBLIC_KEY is not set"},
                                  status=503)
            payload = (await request.read()).decode("utf-8", errors="replace")
            signature = request.headers.get("X-Twilio-Email-Event-Webhook-Signature", "")
            timestamp = request.headers.get("X-Twilio-Email-Event-Webhook-Timestamp", "")
            try:
                valid = EventWebhook(key).verify_signature(payload, signature, timestamp)
            except Exception:  # noqa: BLE001 - a malformed signature is an invalid one
                valid = False
            if not valid:
                return self.json({"error": "invalid event webhook signature"}, status=403)
            try:
                updates = sendgrid_updates(json.loads(payload))
            except ValueError as exc:
                return self.json({"error": str(exc)}, status=400)
            await record(updates)
            return self.json({"accepted": len(updates)})
