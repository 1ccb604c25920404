"""Composite table keys that start with the owner's id.

Every key of a user's rows starts with the user id, so the partition that
owns a row is the user's partition (a housekeeping pass on partition p only
touches its own rows), and one user's rows sort together.
"""

from __future__ import annotations

SEPARATOR = "\x1f"


def compose(owner: str, *parts: str) -> str:
    """``owner`` and ``parts`` joined into one table key."""
    return SEPARATOR.join((owner, *parts))


def owner_of(key: str) -> str:
    """The owner id a composite key starts with."""
    return key.split(SEPARATOR, 1)[0]
