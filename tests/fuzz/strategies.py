"""Hypothesis strategies for hostile input: shared by the unit and integration fuzz tests.

Every strategy draws *records as bytes* (or text for HTTP parameters), the
way an outside producer or client would send them: malformed, oversized,
wrongly typed, unicode-heavy (lone surrogates, RTL overrides, NUL, emoji,
byte-order marks) and hostile (SQL, Jinja, format strings, path traversal).
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

#: Strings that broke or could break something somewhere: kept as explicit
#: examples because random text rarely hits them.
NASTY_STRINGS = (
    "", " ", "\x00", "a\x00b", "\ud800", "\udfff", "x\udc80y", "\u202eevil\u202c", "\u200f",
    "\ufeff", "\uffff", "\U0010ffff", "👩‍👩‍👧‍👦", "🔥" * 50, "𝕳𝖊𝖗𝖆𝖑𝖉", "Z̴̡̛͖a̷l̶g̸o̵",
    "مرحبا بالعالم", "שלום", "\r\n", "\x1b[31m", "' OR '1'='1", "'; DROP TABLE notifications; --",
    "\\", "%s%s%s%n", "{0.__class__}", "{{ 7*7 }}", "{% raw %}", "${jndi:ldap://x}",
    "../../../etc/passwd", "<script>alert(1)</script>", "null", "NaN", "1e999", "-0",
    "u-\x7f", "a" * 300,
)

_any_char = st.characters(codec=None, exclude_categories=())
#: Over the limits (64 KiB texts, 200-character ids), built lazily: a literal
#: would make hypothesis print 70 kB for every example it describes.
oversized_text = st.integers(min_value=201, max_value=70_000).map(lambda n: "é" * n)
hostile_text = st.one_of(st.sampled_from(NASTY_STRINGS), st.text(_any_char, max_size=40),
                         oversized_text)

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
    st.floats(allow_nan=True, allow_infinity=True), hostile_text)
json_values = st.recursive(
    _scalars,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(hostile_text, children, max_size=4)),
    max_leaves=12)

NOTIFICATION_FIELDS = ("id", "idempotency_key", "user_id", "category", "priority", "title",
                       "body", "template", "data", "locale", "channels", "fallback", "send_at",
                       "expires_at", "audience", "created_at")
USER_UPDATE_FIELDS = ("user_id", "email", "phone", "push_tokens", "remove_push_tokens",
                      "timezone", "locale", "preferences", "topics")
PRESENCE_FIELDS = ("user_id", "node_id", "event", "at")


def encode(value: Any, how: str) -> bytes:
    """``value`` as bytes a producer could send: escaped JSON, raw UTF-8, or broken UTF-8."""
    if how == "ascii":
        return json.dumps(value).encode()
    # Lone surrogates cannot be UTF-8: surrogatepass writes them anyway (CESU-8 style).
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


def _objects(fields: tuple[str, ...], valid: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A valid record with some fields replaced by hostile values, some dropped or added."""
    return st.builds(
        lambda changed, dropped, extra: {
            **{k: v for k, v in valid.items() if k not in dropped}, **changed, **extra},
        st.dictionaries(st.sampled_from(fields), json_values, max_size=4),
        st.sets(st.sampled_from(tuple(valid)), max_size=2),
        st.dictionaries(hostile_text, json_values, max_size=2))


def _records(fields: tuple[str, ...], valid: dict[str, Any]) -> st.SearchStrategy[bytes]:
    structured = st.builds(encode, st.one_of(_objects(fields, valid), json_values),
                           st.sampled_from(("ascii", "raw")))
    deep = st.integers(min_value=500, max_value=100_000).map(
        lambda depth: b"[" * depth + b"]" * depth)
    deep_data = st.integers(min_value=30, max_value=3000).map(
        lambda depth: json.dumps(valid)[:-1].encode() + b', "data": '
        + b'{"x": ' * depth + b"{}" + b"}" * depth + b"}")
    long_number = st.integers(min_value=4000, max_value=6000).map(lambda n: b"1" * n)
    return st.one_of(structured, st.binary(max_size=200), deep, deep_data, long_number,
                     st.sampled_from((b"", b"null", b"{}", b"[]", b"\xff\xfe{", b"{\"a\":",
                                      b"NaN", b"{\"user_id\": NaN}")))


VALID_NOTIFICATION = {"user_id": "u-fuzz", "title": "Hello", "body": "World",
                      "channels": ["inapp"]}
VALID_USER_UPDATE = {"user_id": "u-fuzz", "email": "a@example.org", "phone": "+33612345678",
                     "push_tokens": [{"token": "tok", "platform": "fcm"}], "locale": "fr",
                     "timezone": "Europe/Paris",
                     "preferences": {"categories": {"marketing": {"email": False}},
                                     "quiet_hours": {"start": "22:00", "end": "07:00"}}}
VALID_PRESENCE = {"user_id": "u-fuzz", "node_id": "node-1", "event": "connect",
                  "at": "2026-01-01T10:00:00+00:00"}

notification_records = _records(NOTIFICATION_FIELDS, VALID_NOTIFICATION)
user_update_records = _records(USER_UPDATE_FIELDS, VALID_USER_UPDATE)
presence_records = _records(PRESENCE_FIELDS, VALID_PRESENCE)
