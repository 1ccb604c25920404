"""The REST API's routes and its OpenAPI 3.1 document, built as a plain dict.

:data:`ROUTES` is the one list of paths: ``app/api.py`` registers its views
from it and :func:`build_document` describes each of them, so the document
cannot silently miss a route (``tests/unit/test_openapi.py`` checks both
against the routes actually registered).
"""

from __future__ import annotations

from typing import Any

#: name → (path, HTTP methods) of every view app/api.py serves.
ROUTES: dict[str, tuple[str, tuple[str, ...]]] = {
    "ingest": ("/v1/notifications", ("post",)),
    "inbox": ("/v1/users/{user_id}/notifications", ("get",)),
    "unread_count": ("/v1/users/{user_id}/notifications/unread-count", ("get",)),
    "mark_read": ("/v1/users/{user_id}/notifications/{notification_id}/read", ("post",)),
    "mark_delivered": ("/v1/users/{user_id}/notifications/{notification_id}/delivered",
                       ("post",)),
    "read_all": ("/v1/users/{user_id}/notifications/read-all", ("post",)),
    "preferences": ("/v1/users/{user_id}/preferences", ("put",)),
    "contacts": ("/v1/users/{user_id}/contacts", ("put",)),
    "openapi": ("/v1/openapi.json", ("get",)),
}

_ERROR = {"$ref": "#/components/schemas/Error"}
_SERVICE: list[dict[str, list[str]]] = [{"apiKey": []}, {"apiKeyHeader": []}]
_USER: list[dict[str, list[str]]] = [{"userJwt": []}, {"apiKey": []}, {"apiKeyHeader": []}]


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    """Error responses; a 429 also declares its Retry-After header."""
    meaning = {400: "Invalid request; the message names the field",
               401: "Missing, malformed, invalid or expired credentials",
               403: "Valid credentials not allowed here (e.g. another user's inbox)",
               404: "Not in this user's inbox",
               413: "Body larger than HERALD_MAX_BODY_BYTES",
               429: "Over the API key's ingest rate (HERALD_INGEST_RATE); see Retry-After",
               503: "Authentication not configured, or the inbox store is unavailable"}
    answers = {str(code): _json(_ERROR, meaning[code]) for code in codes}
    if "429" in answers:
        answers["429"]["headers"] = {"Retry-After": {
            "description": "Seconds to wait", "schema": {"type": "integer", "minimum": 1}}}
    return answers


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string"}}


def _query_param(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema}


_USER_ID = _path_param("user_id", "The user whose data this is (a JWT's sub must match)")


def _schemas() -> dict[str, Any]:
    channel = {"type": "string", "enum": ["push", "email", "sms", "inapp"]}
    text, timestamp = {"type": "string"}, {"type": "string", "format": "date-time"}
    return {
        "Error": {"type": "object", "required": ["error"],
                  "properties": {"error": {"type": "string"}}},
        "Accepted": {"type": "object", "required": ["id"], "properties": {"id": text}},
        "Notification": {
            "type": "object", "description": "The public notification contract (DESIGN.md); "
            "user_id or audience, and title, body or template, are required; unknown fields "
            "are ignored.",
            "properties": {
                "id": text, "idempotency_key": text, "user_id": text, "category": text,
                "priority": {"type": "string", "enum": ["critical", "high", "normal", "low"]},
                "title": text, "body": text, "template": text, "data": {"type": "object"},
                "locale": text, "channels": {"type": "array", "items": channel},
                "fallback": {"type": "array", "items": channel}, "send_at": timestamp,
                "expires_at": timestamp, "audience": text},
        },
        "InboxItem": {
            "type": "object",
            "properties": {"id": text, "category": text, "priority": text,
                           "title": {"type": ["string", "null"]},
                           "body": {"type": ["string", "null"]}, "data": {"type": "object"},
                           "created_at": timestamp, "status": text, "read": {"type": "boolean"},
                           "read_at": {"type": ["string", "null"], "format": "date-time"}},
        },
        "InboxPage": {
            "type": "object", "required": ["items", "next_cursor"],
            "properties": {"items": {"type": "array",
                                     "items": {"$ref": "#/components/schemas/InboxItem"}},
                           "next_cursor": {"type": ["string", "null"]}},
        },
        "UnreadCount": {"type": "object", "required": ["unread"],
                        "properties": {"unread": {"type": "integer", "minimum": 0}}},
        "Marked": {"type": "object", "properties": {"marked": {"type": "integer"}}},
        "Preferences": {
            "type": "object", "description": "Fields of the user-updates contract about "
            "preferences; a field present replaces the stored one.",
            "properties": {
                "preferences": {"type": "object", "properties": {
                    "categories": {"type": "object", "additionalProperties": {
                        "type": "object", "additionalProperties": {"type": "boolean"}}},
                    "quiet_hours": {"type": "object", "properties": {
                        "start": {"type": "string", "pattern": "^[0-2][0-9]:[0-5][0-9]$"},
                        "end": {"type": "string", "pattern": "^[0-2][0-9]:[0-5][0-9]$"}}},
                    "push_when_online": {"type": "boolean"}}},
                "timezone": text, "locale": text,
                "topics": {"type": "object", "properties": {
                    "subscribe": {"type": "array", "items": text},
                    "unsubscribe": {"type": "array", "items": text}}}},
        },
        "Contacts": {
            "type": "object", "description": "Fields of the user-updates contract about "
            "addresses; a field present replaces the stored one.",
            "properties": {
                "email": {"type": "string", "format": "email"},
                "phone": {"type": "string", "pattern": "^\\+[1-9][0-9]{6,14}$"},
                "push_tokens": {"type": "array", "items": {
                    "type": "object", "required": ["token"],
                    "properties": {"token": text,
                                   "platform": {"type": "string", "enum": ["fcm", "apns"]}}}},
                "remove_push_tokens": {"type": "array", "items": text}},
        },
    }


def _operations() -> dict[str, dict[str, Any]]:
    accepted = _json({"$ref": "#/components/schemas/Accepted"}, "Accepted for delivery")
    return {
        "ingest": {
            "summary": "Send a notification", "security": _SERVICE,
            "description": "Needs an API key with the ingest scope. Produced to the "
                           "notifications topic keyed by user_id (or audience). Each API key "
                           "may be limited to a rate (HERALD_INGEST_RATE, a token bucket per "
                           "key and worker): over it, 429 with a Retry-After in seconds.",
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Notification"}}}},
            "responses": {"202": accepted, **_errors(400, 401, 403, 413, 429, 503)}},
        "inbox": {
            "summary": "A user's in-app notifications, newest first", "security": _USER,
            "parameters": [
                _USER_ID,
                _query_param("status", {"type": "string", "enum": ["unread", "all"],
                                        "default": "all"}, "Only unread ones, or all"),
                _query_param("limit", {"type": "integer", "minimum": 1, "maximum": 200,
                                       "default": 50}, "Page size"),
                _query_param("cursor", {"type": "string"}, "next_cursor of the previous page"),
                _query_param("q", {"type": "string"}, "Words to find in title or body")],
            "responses": {"200": _json({"$ref": "#/components/schemas/InboxPage"}, "A page"),
                          **_errors(400, 401, 403, 503)}},
        "unread_count": {
            "summary": "How many inbox notifications are unread", "security": _USER,
            "parameters": [_USER_ID],
            "responses": {"200": _json({"$ref": "#/components/schemas/UnreadCount"}, "Count"),
                          **_errors(401, 403, 503)}},
        "mark_read": {
            "summary": "Mark one notification read (recorded asynchronously)", "security": _USER,
            "parameters": [_USER_ID, _path_param("notification_id", "The notification")],
            "responses": {"202": _json({"$ref": "#/components/schemas/Accepted"}, "Accepted"),
                          **_errors(401, 403, 404, 503)}},
        "mark_delivered": {
            "summary": "Acknowledge one notification as shown to the user (DELIVERED), for "
                       "clients of /v1/sse; WebSocket clients send {\"type\": \"ack\"}",
            "security": _USER,
            "parameters": [_USER_ID, _path_param("notification_id", "The notification")],
            "responses": {"202": _json({"$ref": "#/components/schemas/Accepted"}, "Accepted"),
                          **_errors(401, 403, 404, 503)}},
        "read_all": {
            "summary": "Mark every unread notification read (recorded asynchronously)",
            "security": _USER, "parameters": [_USER_ID],
            "responses": {"202": _json({"$ref": "#/components/schemas/Marked"},
                                       "How many were marked"), **_errors(401, 403, 503)}},
        "preferences": {
            "summary": "Replace a user's preferences", "security": _USER,
            "parameters": [_USER_ID],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Preferences"}}}},
            "responses": {"202": _json({"type": "object"}, "Accepted"),
                          **_errors(400, 401, 403, 413, 503)}},
        "contacts": {
            "summary": "Replace a user's contacts (email, phone, push tokens)", "security": _USER,
            "parameters": [_USER_ID],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Contacts"}}}},
            "responses": {"202": _json({"type": "object"}, "Accepted"),
                          **_errors(400, 401, 403, 413, 503)}},
        "openapi": {
            "summary": "This document", "security": [],
            "responses": {"200": _json({"type": "object"}, "The OpenAPI 3.1 document")}},
    }


def build_document(server_url: str | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route in :data:`ROUTES`."""
    operations = _operations()
    paths: dict[str, Any] = {}
    for name, (path, methods) in ROUTES.items():
        for method in methods:
            paths.setdefault(path, {})[method] = {"operationId": name, **operations[name]}
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "herald", "version": "1",
                 "description": "Notification ingest, inbox, preferences and contacts. "
                                "Every 4xx body is {\"error\": \"...\"}."},
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer",
                           "description": "A service API key from HERALD_API_KEYS"},
                "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "userJwt": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                            "description": "HS256 or RS256; sub is the user id"},
            },
        },
    }
    if server_url:
        document["servers"] = [{"url": server_url}]
    return document
