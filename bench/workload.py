"""What the benchmark sends: users with contacts and preferences, and notifications.

Pure and seeded, so every run sends the same kind of traffic. The number of
deliveries each notification should produce is decided by herald's own
channel rule (:func:`rules.channels.resolve_channels`), so the harness knows
when the last one was sent without guessing.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from rules.channels import apply_presence, resolve_channels

CATEGORIES = ("account", "security", "billing", "social", "marketing", "news")
#: (priority, weight): mostly bulk traffic, a real share of urgent.
PRIORITIES = (("critical", 2), ("high", 10), ("normal", 70), ("low", 18))
CHANNEL_MIXES = (
    (("push",), 25), (("email",), 20), (("inapp",), 15), (("push", "email"), 15),
    (("push", "email", "inapp"), 15), (("sms",), 5), (("push", "sms"), 5),
)
CITIES = ("Paris", "Lyon", "Berlin", "Lisbon", "Osaka", "Toronto", "Nairobi", "Lima")
WORDS = ("order", "shipped", "invoice", "reminder", "account", "update", "friend", "comment",
         "payment", "received", "weekly", "summary", "offer", "security", "device", "new")


@dataclass(frozen=True)
class User:
    """One user as the benchmark preloads it."""

    user_id: str
    update: dict[str, Any]

    @property
    def categories(self) -> dict[str, dict[str, bool]]:
        return dict(self.update.get("preferences", {}).get("categories", {}))


def user_id(index: int) -> str:
    return f"bench-u{index:07d}"


def make_user(index: int, rng: random.Random) -> User:
    """A user with every address and, for some, opt-outs (marketing, news, social)."""
    uid = user_id(index)
    update: dict[str, Any] = {
        "user_id": uid, "email": f"{uid}@example.org", "phone": f"+336{index:08d}",
        "push_tokens": [{"token": f"{uid}-{rng.getrandbits(64):016x}" * 2,
                         "platform": "fcm" if rng.random() < 0.6 else "apns"}],
        "locale": "fr" if rng.random() < 0.2 else "en",
    }
    opt_outs = {category: {channel: False for channel in rng.sample(("email", "sms", "push"), 2)}
                for category in ("marketing", "news", "social") if rng.random() < 0.3}
    if opt_outs:
        update["preferences"] = {"categories": opt_outs}
    return User(uid, update)


def make_users(count: int, seed: int = 7) -> list[User]:
    rng = random.Random(seed)
    return [make_user(index, rng) for index in range(count)]


def _weighted(rng: random.Random, choices: tuple[tuple[Any, int], ...]) -> Any:
    values, weights = zip(*choices)
    return rng.choices(values, weights)[0]


def _sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def make_notification(run: str, index: int, user: User, rng: random.Random,
                      created_at: str | None = None) -> dict[str, Any]:
    """A notification as a service would produce it: title/body or a template, data, keys."""
    notification: dict[str, Any] = {
        "id": f"{run}-n{index:08d}", "idempotency_key": f"{run}-k{index}",
        "user_id": user.user_id, "category": rng.choice(CATEGORIES),
        "priority": _weighted(rng, PRIORITIES), "channels": list(_weighted(rng, CHANNEL_MIXES)),
        "data": {"order_id": f"o-{rng.getrandbits(40):x}", "amount": round(rng.random() * 500, 2),
                 "url": f"https://example.org/o/{index}", "city": rng.choice(CITIES)},
    }
    if rng.random() < 0.25:
        notification["template"] = "new-sign-in"
    else:
        notification["title"] = _sentence(rng, rng.randint(3, 7))
        notification["body"] = " ".join(_sentence(rng, rng.randint(6, 14))
                                        for _ in range(rng.randint(1, 3)))
    if rng.random() < 0.3:
        notification["fallback"] = ["push", "sms", "email"]
    if created_at:
        notification["created_at"] = created_at
    return notification


def routes(notification: dict[str, Any], user: User) -> tuple[list[str], int]:
    """(channels ``notification`` is delivered on, channels suppressed) for ``user``.

    Every user is offline and has every address; rate limits are set out of
    reach, so the router's channel rule alone decides.
    """
    contacts = user.update
    decision = resolve_channels(
        user_id=user.user_id, category=notification["category"],
        priority=notification["priority"], wanted=notification["channels"],
        categories=user.categories, email=contacts["email"], phone=contacts["phone"],
        push_tokens=contacts["push_tokens"])
    decision = apply_presence(decision, online=False, push_when_online=False)
    return [route.channel for route in decision.routes], len(decision.suppressed)


def expected_outcome(notification: dict[str, Any], user: User) -> tuple[int, int]:
    """(deliveries that end SENT, status events in all) for ``notification`` to ``user``."""
    channels, suppressed = routes(notification, user)
    return len(channels), 2 * len(channels) + suppressed  # QUEUED + SENT per route


@dataclass(frozen=True)
class Batch:
    """Notifications ready to produce, and what herald must make of them."""

    records: list[tuple[bytes, bytes]]
    sent: int
    events: int

    @property
    def mean_size(self) -> float:
        return sum(len(value) for _, value in self.records) / max(1, len(self.records))


def make_batch(run: str, count: int, users: list[User], seed: int = 11,
               start: int = 0) -> Batch:
    """``count`` notifications spread over ``users``, encoded as (key, value) bytes."""
    rng = random.Random(seed)
    records, sent, events = [], 0, 0
    for index in range(start, start + count):
        user = users[rng.randrange(len(users))]
        notification = make_notification(run, index, user, rng)
        s, e = expected_outcome(notification, user)
        sent, events = sent + s, events + e
        records.append((user.user_id.encode(), json.dumps(notification).encode()))
    return Batch(records, sent, events)


def encode(value: dict[str, Any]) -> bytes:
    return json.dumps(value).encode()


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def changelog_records(user: User) -> dict[str, tuple[bytes, bytes]]:
    """The ``contacts`` / ``preferences`` changelog records Faust writes for ``user``.

    Keys are the raw user id (tables use the raw key serializer); values are
    the records' JSON without metadata (``schemas.records.Model``). Checked
    against what a worker writes in the throughput part.
    """
    u = user.update
    key = user.user_id.encode()
    contacts = {"email": u["email"], "phone": u["phone"], "push_tokens": u["push_tokens"],
                "timezone": None, "locale": u["locale"]}
    out = {"contacts": (key, encode(contacts))}
    if "preferences" in u:
        out["preferences"] = (key, encode({"categories": u["preferences"]["categories"],
                                           "quiet_hours": None, "push_when_online": False}))
    return out
