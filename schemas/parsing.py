"""Validation of the public JSON contract (DESIGN.md, "Public contract").

Each ``parse_*`` function takes the raw bytes of a Kafka record and returns a
record, or raises :class:`~app.errors.InvalidEvent` whose message names the
field at fault. Unknown fields are ignored, never fatal.

Whatever parses is fit for everything downstream: it re-serializes as strict
JSON and UTF-8, and PostgreSQL can store it. So known fields refuse NUL
characters and lone surrogates (PostgreSQL text and ``jsonb`` cannot hold
them; UTF-8 cannot encode a surrogate), ``NaN`` and infinite numbers
(``jsonb`` has none), ``data`` nested deeper than :data:`MAX_DATA_DEPTH`,
and times outside :data:`YEARS`. Identifiers (ids, user ids, keys, names)
also refuse control characters: ``\\x1f`` separates the parts of composite
table keys, and a user id holding one could share keys with another user.
Messages quote values with ``repr``, so a hostile value never reaches a log
line or a dead letter raw.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from app.errors import InvalidEvent
from schemas.records import (
    CHANNELS,
    PRIORITIES,
    PRESENCE_EVENTS,
    PUSH_PLATFORMS,
    Notification,
    PresenceChanged,
    Preferences,
    PushToken,
    UserUpdate,
)

MAX_ID_LENGTH = 200
MAX_TEXT_LENGTH = 64 * 1024
MAX_DATA_DEPTH = 32
#: Integers in ``data`` must fit 64 bits: records are serialised with orjson,
#: which refuses larger ones (and JSON parsers in most languages lose them).
INT_RANGE = (-(2**63), 2**64)
#: A record larger than this is refused before decoding: re-serialized with
#: more fields on its way (lanes, deliveries, status events) it could pass
#: Kafka's 1 MiB message limit and fail a produce.
MAX_RECORD_BYTES = 256 * 1024
#: Years a time may fall in: far enough from datetime's limits that adding a
#: window or a time-to-live never overflows.
YEARS = (1970, 9000)
_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
HH_MM = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")

T = TypeVar("T")


def now_iso() -> str:
    """The current time as ISO-8601 with an offset (UTC)."""
    return datetime.now(timezone.utc).isoformat()


def decode_object(raw: bytes | str | None) -> dict[str, Any]:
    """Decode a record's value into a JSON object or say why it is not one."""
    if raw is None:
        raise InvalidEvent("value: empty record (tombstone) is not an event")
    if len(raw) > MAX_RECORD_BYTES:
        raise InvalidEvent(f"value: {len(raw)} bytes, more than the {MAX_RECORD_BYTES} "
                           "a record may have")
    try:
        value = json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
    except UnicodeDecodeError as exc:
        raise InvalidEvent(f"value: not UTF-8 ({exc.reason})") from exc
    except ValueError as exc:
        raise InvalidEvent(f"value: not JSON ({exc})") from exc
    except RecursionError as exc:
        raise InvalidEvent("value: JSON nested too deeply") from exc
    if not isinstance(value, dict):
        raise InvalidEvent(f"value: expected a JSON object, got {type(value).__name__}")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise ValueError(f"{text[:20]} is out of range")
    return number


def check_text(name: str, value: str, *, identifier: bool) -> str:
    """``value`` if it is storable text (an identifier: without control characters)."""
    if _SURROGATE.search(value):
        raise InvalidEvent(f"{name}: contains a lone surrogate (not valid Unicode text)")
    if "\x00" in value:
        raise InvalidEvent(f"{name}: contains a NUL character")
    if identifier and (found := _CONTROL.search(value)):
        raise InvalidEvent(f"{name}: contains the control character {found.group()!r}")
    return value


def check_id(name: str, value: str) -> str:
    """``value`` if it can be an id (1 to MAX_ID_LENGTH storable characters); else InvalidEvent."""
    if not value or len(value) > MAX_ID_LENGTH:
        raise InvalidEvent(f"{name}: must be 1 to {MAX_ID_LENGTH} characters")
    return check_text(name, value, identifier=True)


def _text(obj: Mapping[str, Any], name: str, *, required: bool = False,
          max_length: int = MAX_ID_LENGTH) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise InvalidEvent(f"{name}: required")
        return None
    if not isinstance(value, str):
        raise InvalidEvent(f"{name}: expected a string, got {type(value).__name__}")
    if required and not value.strip():
        raise InvalidEvent(f"{name}: must not be empty")
    if len(value) > max_length:
        raise InvalidEvent(f"{name}: longer than {max_length} characters")
    # Short fields are identifiers, long ones free text (titles, bodies).
    return check_text(name, value, identifier=max_length <= MAX_ID_LENGTH * 20)


def _choice(obj: Mapping[str, Any], name: str, choices: tuple[str, ...], default: str) -> str:
    value = _text(obj, name) or default
    if value not in choices:
        raise InvalidEvent(f"{name}: must be one of {', '.join(choices)} (got {value!r})")
    return value


def _list(obj: Mapping[str, Any], name: str, item: Callable[[Any], T]) -> list[T] | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, list):
        raise InvalidEvent(f"{name}: expected a list, got {type(value).__name__}")
    try:
        return [item(element) for element in value]
    except InvalidEvent as exc:
        raise InvalidEvent(f"{name}: {exc}") from exc


def _channel(value: Any) -> str:
    if value not in CHANNELS:
        raise InvalidEvent(f"unknown channel {value!r} (expected {', '.join(CHANNELS)})")
    return str(value)


def _channels(obj: Mapping[str, Any], name: str) -> list[str] | None:
    channels = _list(obj, name, _channel)
    if channels is None:
        return None
    if not channels:
        raise InvalidEvent(f"{name}: must not be empty")
    return list(dict.fromkeys(channels))


def _timestamp(obj: Mapping[str, Any], name: str) -> str | None:
    value = _text(obj, name)
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidEvent(f"{name}: not an ISO-8601 time ({value!r})") from exc
    if parsed.tzinfo is None:
        raise InvalidEvent(f"{name}: ISO-8601 time needs an offset, e.g. +00:00 ({value!r})")
    if not YEARS[0] <= parsed.year <= YEARS[1]:
        raise InvalidEvent(f"{name}: year outside {YEARS[0]}-{YEARS[1]} ({value!r})")
    return parsed.isoformat()


def _object(obj: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidEvent(f"{name}: expected an object, got {type(value).__name__}")
    return value


def _data(obj: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = _object(obj, name) or {}
    _check_json(name, value, 0)
    return value


def _check_json(where: str, value: Any, depth: int) -> None:
    """Refuse what PostgreSQL's ``jsonb`` cannot store (NaN was refused at decoding)."""
    if depth > MAX_DATA_DEPTH:
        raise InvalidEvent(f"{where}: nested deeper than {MAX_DATA_DEPTH} levels")
    if isinstance(value, str):
        check_text(where, value, identifier=False)
    elif isinstance(value, int) and not INT_RANGE[0] <= value < INT_RANGE[1]:
        raise InvalidEvent(f"{where}: integer of {len(str(abs(value)))} digits is outside the "
                           "64-bit range records are serialised with (send it as a string)")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(f"{where}: key {key!r}", key, identifier=False)
            _check_json(f"{where}.{key}" if key.isidentifier() else f"{where}[{key!r}]",
                        item, depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_json(f"{where}[{index}]", item, depth + 1)


def parse_notification(raw: bytes | str | None) -> Notification:
    """Validate a ``notifications`` record and fill in its defaults."""
    obj = decode_object(raw)
    audience = _text(obj, "audience")
    user_id = _text(obj, "user_id", required=audience is None) or ""
    title = _text(obj, "title", max_length=MAX_TEXT_LENGTH)
    body = _text(obj, "body", max_length=MAX_TEXT_LENGTH)
    template = _text(obj, "template")
    if title is None and body is None and template is None:
        raise InvalidEvent("title/body/template: one of them is required")
    # Built from values checked here (Faust's constructor checks each again, in 8 us).
    return Notification.from_values({
        "id": _text(obj, "id") or str(uuid.uuid4()),
        "user_id": user_id,
        "category": _text(obj, "category") or "general",
        "priority": _choice(obj, "priority", PRIORITIES, "normal"),
        "created_at": _timestamp(obj, "created_at") or now_iso(),
        "title": title,
        "body": body,
        "template": template,
        "data": _data(obj, "data"),
        "locale": _text(obj, "locale"),
        "channels": _channels(obj, "channels"),
        "fallback": _channels(obj, "fallback") or [],
        "idempotency_key": _text(obj, "idempotency_key"),
        "send_at": _timestamp(obj, "send_at"),
        "expires_at": _timestamp(obj, "expires_at"),
        "audience": audience,
    })


def _push_token(value: Any) -> PushToken:
    if not isinstance(value, dict):
        raise InvalidEvent("expected objects {token, platform}")
    token = _text(value, "token", required=True, max_length=4096)
    platform = _choice(value, "platform", PUSH_PLATFORMS, "fcm")
    return PushToken(token=token, platform=platform)


def _string(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 4096:
        raise InvalidEvent("expected non-empty strings of at most 4096 characters")
    return check_text("item", value, identifier=True)


def mask(value: str) -> str:
    """A contact detail or token shown in part, for messages and logs.

    ``+33612345678`` → ``+336***78``; ``alice@example.org`` → ``al***@example.org``;
    a push token keeps its first 4 and last 2 characters. Enough to tell two
    apart in an incident, never enough to reach the person.
    """
    local, at, domain = value.rpartition("@")
    if at and local:
        return f"{local[:2]}***@{domain}"
    if len(value) < 8:
        return "***"
    return f"{value[:4]}***{value[-2:]}"


def _email(obj: Mapping[str, Any]) -> str | None:
    email = _text(obj, "email", max_length=320)
    if email is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
        raise InvalidEvent(f"email: not an email address ({mask(email)!r})")
    return email


def _phone(obj: Mapping[str, Any]) -> str | None:
    phone = _text(obj, "phone", max_length=20)
    if phone is not None and not E164.match(phone):
        raise InvalidEvent(f"phone: expected E.164, e.g. +33612345678 ({mask(phone)!r})")
    return phone


def _timezone(obj: Mapping[str, Any]) -> str | None:
    name = _text(obj, "timezone", max_length=64)
    if name is not None:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise InvalidEvent(f"timezone: unknown time zone {name!r}") from exc
    return name


def _preferences(obj: Mapping[str, Any]) -> Preferences | None:
    prefs = _object(obj, "preferences")
    if prefs is None:
        return None
    categories: dict[str, dict[str, bool]] = {}
    for category, channels in (_object(prefs, "categories") or {}).items():
        check_text(f"preferences.categories: key {category!r}", category, identifier=True)
        if not isinstance(channels, dict):
            raise InvalidEvent(f"preferences.categories.{category}: expected an object")
        for channel, allowed in channels.items():
            _channel_or_fail(f"preferences.categories.{category}", channel)
            if not isinstance(allowed, bool):
                raise InvalidEvent(f"preferences.categories.{category}.{channel}: expected true/false")
        categories[category] = dict(channels)
    push_when_online = prefs.get("push_when_online", False)
    if not isinstance(push_when_online, bool):
        raise InvalidEvent("preferences.push_when_online: expected true/false")
    quiet = _object(prefs, "quiet_hours")
    if quiet is not None:
        for bound in ("start", "end"):
            if not isinstance(quiet.get(bound), str) or not HH_MM.match(quiet[bound]):
                raise InvalidEvent(f"preferences.quiet_hours.{bound}: expected HH:MM")
        quiet = {"start": quiet["start"], "end": quiet["end"]}
    return Preferences(categories=categories, quiet_hours=quiet,
                       push_when_online=push_when_online)


def _channel_or_fail(where: str, channel: str) -> None:
    try:
        _channel(channel)
    except InvalidEvent as exc:
        raise InvalidEvent(f"{where}: {exc}") from exc


def parse_user_update(raw: bytes | str | None) -> UserUpdate:
    """Validate a ``user-updates`` record; absent fields stay ``None``."""
    obj = decode_object(raw)
    topics = _object(obj, "topics") or {}
    return UserUpdate(
        user_id=_text(obj, "user_id", required=True),
        email=_email(obj),
        phone=_phone(obj),
        push_tokens=_list(obj, "push_tokens", _push_token),
        remove_push_tokens=_list(obj, "remove_push_tokens", _string) or [],
        timezone=_timezone(obj),
        locale=_text(obj, "locale", max_length=35),
        preferences=_preferences(obj),
        subscribe=_list(topics, "subscribe", _audience_name) or [],
        unsubscribe=_list(topics, "unsubscribe", _audience_name) or [],
    )


def _audience_name(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        raise InvalidEvent(f"expected audience names (non-empty strings), got {value!r}")
    return check_text("audience name", value, identifier=True)


def parse_presence(raw: bytes | str | None) -> PresenceChanged:
    """Validate a ``presence`` record from a gateway."""
    obj = decode_object(raw)
    return PresenceChanged(
        user_id=_text(obj, "user_id", required=True),
        node_id=_text(obj, "node_id", required=True),
        event=_choice(obj, "event", PRESENCE_EVENTS, "heartbeat"),
        at=_timestamp(obj, "at") or now_iso(),
    )
