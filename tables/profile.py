"""Applying a ``user-updates`` record to the stored contacts and preferences.

A field present in the update replaces the stored one; ``push_tokens`` adds
or refreshes tokens; ``remove_push_tokens`` deletes them.
"""

from __future__ import annotations

from schemas.records import Contacts, Preferences, PushToken, UserUpdate


def apply_contacts(current: Contacts | None, update: UserUpdate) -> Contacts:
    """The user's contacts after ``update``."""
    current = current or Contacts()
    tokens: dict[str, PushToken] = {token.token: token for token in current.push_tokens}
    for token in update.push_tokens or []:
        tokens[token.token] = token
    for token_id in update.remove_push_tokens:
        tokens.pop(token_id, None)
    return Contacts(
        email=update.email if update.email is not None else current.email,
        phone=update.phone if update.phone is not None else current.phone,
        push_tokens=list(tokens.values()),
        timezone=update.timezone if update.timezone is not None else current.timezone,
        locale=update.locale if update.locale is not None else current.locale,
    )


def apply_preferences(current: Preferences | None, update: UserUpdate) -> Preferences | None:
    """The user's preferences after ``update``, or ``None`` if it changes none."""
    if update.preferences is None:
        return None
    current = current or Preferences()
    categories = {**current.categories, **update.preferences.categories}
    quiet_hours = update.preferences.quiet_hours or current.quiet_hours
    return Preferences(categories=categories, quiet_hours=quiet_hours)
