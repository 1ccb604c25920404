"""Logging: one JSON object per line, carrying the event being handled.

``herald worker`` logs JSON by default (``HERALD_LOG_FORMAT=json|text``).
While an agent handles an event, :func:`event_context` holds what is safe to
log about it (the agent, the notification id, the record's topic, partition
and offset: never a user id, an address or a payload), and every line logged
meanwhile, from any module, carries those fields. So one notification can be
followed through every agent with ``grep`` or a log query on its id.
"""

from __future__ import annotations

import contextlib
import json
import logging
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Mapping

FORMATS = ("json", "text")
#: The fields a log line may carry from the event context.
CONTEXT_FIELDS = ("agent", "notification_id", "topic", "partition", "offset")
#: Longer ids are cut: a log line must not carry a payload smuggled in as an id.
MAX_ID_LENGTH = 100

_context: ContextVar[Mapping[str, Any]] = ContextVar("herald_log_context", default={})


class Lazy:
    """A context field worked out only when a log line needs it, then kept.

    Reading an event's notification id may mean parsing its raw JSON: not
    something to do for every event of a hot path when most log nothing.
    """

    def __init__(self, compute: Callable[[], Any]) -> None:
        self._compute: Callable[[], Any] | None = compute
        self._value: Any = None

    def get(self) -> Any:
        """The value, computed on the first call."""
        if self._compute is not None:
            self._value, self._compute = self._compute(), None
        return self._value


def _resolved(value: Any) -> Any:
    return value.get() if isinstance(value, Lazy) else value


@contextlib.contextmanager
def event_context(**fields: Any) -> Iterator[None]:
    """Within the block, every log line carries ``fields`` (``None`` values are left out)."""
    token = _context.set({**_context.get(),
                          **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def current(field: str) -> Any:
    """A field of the current event context, or ``None`` outside one."""
    return _resolved(_context.get().get(field))


def notification_id_of(value: Any) -> str | None:
    """The notification id an event carries, whatever record type it is.

    Deliveries and status events carry ``notification_id``, notifications
    ``id``; a raw public record (bytes) is read for its ``id``.
    """
    if isinstance(value, (bytes, bytearray)):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            return None
    if isinstance(value, Mapping):
        found = value.get("notification_id") or value.get("id")
    else:
        found = getattr(value, "notification_id", None) or getattr(value, "id", None)
    return found[:MAX_ID_LENGTH] if isinstance(found, str) and found else None


class ContextFilter(logging.Filter):
    """Copies the event context onto each record (as attributes, for any formatter)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _context.get().items():
            if (value := _resolved(value)) is not None:
                setattr(record, name, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The classic line, with the notification id and agent appended when known."""

    def __init__(self) -> None:
        super().__init__("[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extra = " ".join(f"{name}={getattr(record, name)}" for name in ("agent", "notification_id")
                         if getattr(record, name, None) is not None)
        return f"{text} [{extra}]" if extra else text


def log_format(env: Mapping[str, str], default: str = "json") -> str:
    """``HERALD_LOG_FORMAT`` checked; a bad value raises ``ValueError`` naming it."""
    chosen = (env.get("HERALD_LOG_FORMAT") or default).strip().lower()
    if chosen not in FORMATS:
        raise ValueError(f"HERALD_LOG_FORMAT: expected one of {', '.join(FORMATS)}, "
                         f"got {chosen!r}")
    return chosen


def logging_config(fmt: str, level: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` writing ``fmt`` lines to stderr.

    ``level`` applies to herald's own loggers; libraries (Faust, aiokafka)
    stay at info or above, so ``debug`` shows herald's line per handled
    event without the libraries' flood.
    """
    formatter = JsonFormatter if fmt == "json" else TextFormatter
    number = logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise ValueError(f"HERALD_LOG_LEVEL: unknown level {level!r}")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": ContextFilter}},
        "formatters": {"herald": {"()": formatter}},
        "handlers": {"default": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                                 "formatter": "herald", "filters": ["context"]}},
        "root": {"level": max(number, logging.INFO), "handlers": ["default"]},
        "loggers": {"herald": {"level": number}},
    }
