"""Faust records of every event and table value herald keeps.

They serialize as plain JSON (no Faust metadata), so consumers in any
language read them. Public input (``notifications``, ``user-updates``) is
parsed and validated in :mod:`schemas.parsing` before it becomes a record.
"""

from __future__ import annotations

import functools
from typing import Any, Dict, List, Optional, TypeVar

import faust
from faust.utils import json as faust_json

CHANNELS = ("push", "email", "sms", "inapp")
PRIORITIES = ("critical", "high", "normal", "low")
PUSH_PLATFORMS = ("fcm", "apns")
URGENT_PRIORITIES = ("critical", "high")
LANES = ("urgent", "bulk")
PRESENCE_EVENTS = ("connect", "disconnect", "heartbeat")


M = TypeVar("M", bound="Model")


class Model(faust.Record, abstract=True, include_metadata=False, serializer="json"):
    """Base of herald's records: JSON without Faust's type metadata."""

    @classmethod
    def decode(cls: type[M], raw: bytes | str) -> M:
        """The record ``raw`` holds, as :meth:`loads` builds it, in a fifth of the time.

        Faust's ``loads`` passes every value through its field's descriptor
        (12-13 us for a ``Notification`` or a ``Delivery``, where the JSON
        takes 1 us); the hot path decodes each record once per hop. Here the
        values are set as they are, which is what Faust does for herald's
        fields (none coerces): a ``None`` optional field takes its default (the
        same object Faust's record shares), a nested record (push tokens) stays
        a dict until it is read, as in Faust's (its field converts it then), a key
        that is no field is kept as an attribute, and a missing required field
        raises ``TypeError``.
        """
        return cls.from_values(faust_json.loads(raw))

    @classmethod
    def from_values(cls: type[M], data: dict[str, Any]) -> M:
        """The record of ``data`` (field name to value), as :meth:`decode` builds it."""
        required, optional = _fields(cls)
        if not required <= data.keys():
            raise TypeError(f"{cls.__name__} is missing {sorted(required - data.keys())}")
        record = object.__new__(cls)
        values = record.__dict__
        values["__evaluated_fields__"] = set()
        values.update(cls._options.defaults)
        values.update(data)
        for name, value in data.items():
            if value is None and name in optional:
                values[name] = cls._options.defaults[name]
        return record


@functools.cache
def _fields(cls: type[Model]) -> tuple[frozenset[str], frozenset[str]]:
    """A record's required fields and its optional ones."""
    options = cls._options
    return frozenset(options.fields) - options.optionalset, frozenset(options.optionalset)


class Notification(Model):
    """``SendNotification``: one notification for one user, as the router sees it."""

    id: str
    user_id: str
    category: str
    priority: str
    created_at: str
    title: Optional[str] = None
    body: Optional[str] = None
    template: Optional[str] = None
    data: Dict[str, Any] = {}  # noqa: RUF012 - faust copies field defaults
    locale: Optional[str] = None
    channels: Optional[List[str]] = None
    fallback: List[str] = []  # noqa: RUF012
    idempotency_key: Optional[str] = None
    send_at: Optional[str] = None
    expires_at: Optional[str] = None
    audience: Optional[str] = None
    #: Internal, never read from producers: set when the scheduler releases a
    #: held notification (dedup and holds are behind it) and on digests.
    released: bool = False
    digest: bool = False

    @property
    def lane(self) -> str:
        """The transport lane: critical and high never wait behind normal and low."""
        return "urgent" if self.priority in URGENT_PRIORITIES else "bulk"


class PushToken(Model):
    """A device token and the push service it belongs to."""

    token: str
    platform: str


class Contacts(Model):
    """Where a user can be reached: the value of the ``contacts`` table."""

    email: Optional[str] = None
    phone: Optional[str] = None
    push_tokens: List[PushToken] = []  # noqa: RUF012
    timezone: Optional[str] = None
    locale: Optional[str] = None


class Preferences(Model):
    """What a user agreed to receive: the value of the ``preferences`` table.

    ``categories`` maps a category to ``{channel: allowed}``; a channel or
    category that is absent is allowed.
    """

    categories: Dict[str, Dict[str, bool]] = {}  # noqa: RUF012
    quiet_hours: Optional[Dict[str, str]] = None
    push_when_online: bool = False


class UserUpdate(Model):
    """A change to a user's contacts or preferences, as read from ``user-updates``.

    A field left ``None`` was absent from the update and keeps its stored value.
    """

    user_id: str
    email: Optional[str] = None
    phone: Optional[str] = None
    push_tokens: Optional[List[PushToken]] = None
    remove_push_tokens: List[str] = []  # noqa: RUF012
    timezone: Optional[str] = None
    locale: Optional[str] = None
    preferences: Optional[Preferences] = None
    subscribe: List[str] = []  # noqa: RUF012
    unsubscribe: List[str] = []  # noqa: RUF012


class PresenceChanged(Model):
    """A gateway session of a user connected, disconnected or is still alive."""

    user_id: str
    node_id: str
    event: str
    at: str


class MembershipChanged(Model):
    """A user joined or left an audience (keyed by the audience name)."""

    audience: str
    user_id: str
    member: bool


class FanOut(Model):
    """One audience notification to copy to every member, resumable at a cursor."""

    notification: Dict[str, Any]
    after: Optional[str] = None
    copied: int = 0


class Delivery(Model):
    """``DeliverNotification``: one notification on one channel, rendered and addressed."""

    notification_id: str
    user_id: str
    channel: str
    address: str
    title: Optional[str]
    body: Optional[str]
    category: str
    priority: str
    created_at: str
    data: Dict[str, Any] = {}  # noqa: RUF012
    push_tokens: List[PushToken] = []  # noqa: RUF012
    fallback: List[str] = []  # noqa: RUF012
    attempt: int = 1
    not_before: Optional[str] = None
    html: Optional[str] = None
    last_error: Optional[str] = None
    lane: str = "bulk"
    #: The notification as routed, to re-route it to a fallback channel.
    notification: Optional[Dict[str, Any]] = None


class DeliveryEvent(Model):
    """``DeliveryStatusChanged``: what happened to a notification on a channel.

    ``channel`` is ``"*"`` when the event concerns the notification as a
    whole (a suppressed duplicate, say). ``notification`` carries the
    notification's own columns on the first event the router emits, so the
    recorder can write the ``notifications`` row.
    """

    notification_id: str
    channel: str
    status: str
    at: str
    user_id: Optional[str] = None
    reason: Optional[str] = None
    error: Optional[str] = None
    attempts: int = 0
    provider_message_id: Optional[str] = None
    notification: Optional[Dict[str, Any]] = None


class DeadLetter(Model):
    """A record herald gave up on, with why, and the original to replay it."""

    reason: str
    topic: str
    at: str
    error: Optional[str] = None
    partition: Optional[int] = None
    offset: Optional[int] = None
    key: Optional[str] = None
    payload: Optional[str] = None
    headers: Dict[str, str] = {}  # noqa: RUF012
    attempts: int = 0
    delivery: Optional[Dict[str, Any]] = None
