"""Delivery statuses and how a batch of status events folds into table rows.

A status never moves backwards: READ stays READ whatever arrives later, and a
replayed event changes nothing. The same order is enforced in SQL
(``herald_status_rank``, migration 001) so concurrent writers agree.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping

#: Rank of each status; a row only moves to a higher rank (migration 002).
#: An attempt that failed and will be retried is QUEUED again (more attempts,
#: its error); FAILED is a failure reported after sending (a bounce), so it
#: outranks SENT; DEAD is dead-lettered; SUPPRESSED was never sent.
STATUS_RANK: Mapping[str, int] = {
    "CREATED": 0,
    "SCHEDULED": 1,
    "QUEUED": 2,
    "SUPPRESSED": 4,
    "SENT": 4,
    "FAILED": 5,
    "DEAD": 5,
    "DELIVERED": 6,
    "READ": 7,
}

#: The timestamp column each status sets the first time it is reached.
STATUS_TIME_COLUMN: Mapping[str, str] = {
    "QUEUED": "queued_at",
    "SENT": "sent_at",
    "DELIVERED": "delivered_at",
    "READ": "read_at",
}


@dataclass(frozen=True)
class DeliveryRow:
    """The state of one (notification, channel) after a batch of events."""

    notification_id: str
    channel: str
    status: str
    attempts: int
    at: str
    reason: str | None = None
    last_error: str | None = None
    provider_message_id: str | None = None
    queued_at: str | None = None
    sent_at: str | None = None
    delivered_at: str | None = None
    read_at: str | None = None


#: Failures a later attempt (a replay from the DLQ) supersedes.
SUPERSEDED_BY_RETRY = frozenset({"DEAD", "FAILED"})


def _outranks(status: str, attempts: int, row: DeliveryRow) -> bool:
    rank, current = STATUS_RANK[status], STATUS_RANK[row.status]
    if 0 < attempts < row.attempts:
        # An older attempt's event (a redelivery) never overrides a newer
        # attempt; events tied to no attempt (0: router, webhooks) may.
        return False
    if row.status in SUPERSEDED_BY_RETRY and attempts > row.attempts:
        return True
    return rank > current or (rank == current and attempts > row.attempts)


def fold_event(row: DeliveryRow | None, event: Any) -> DeliveryRow:
    """``row`` after one status event (a :class:`~schemas.records.DeliveryEvent`)."""
    times = {STATUS_TIME_COLUMN[event.status]: event.at} if event.status in STATUS_TIME_COLUMN else {}
    if row is None:
        return DeliveryRow(
            notification_id=event.notification_id, channel=event.channel, status=event.status,
            attempts=event.attempts, at=event.at, reason=event.reason, last_error=event.error,
            provider_message_id=event.provider_message_id, **times,
        )
    # A timestamp is kept from the first event that set it, whatever the order.
    times = {column: value for column, value in times.items() if getattr(row, column) is None}
    row = replace(row, **times)
    if not _outranks(event.status, event.attempts, row):
        return row
    return replace(
        row, status=event.status, attempts=max(event.attempts, row.attempts), at=event.at,
        reason=event.reason or row.reason, last_error=event.error or row.last_error,
        provider_message_id=event.provider_message_id or row.provider_message_id,
    )


def fold_events(events: Iterable[Any]) -> list[DeliveryRow]:
    """One row per (notification, channel) from a batch of status events, in order."""
    rows: dict[tuple[str, str], DeliveryRow] = {}
    for event in events:
        key = (event.notification_id, event.channel)
        rows[key] = fold_event(rows.get(key), event)
    return list(rows.values())
