"""herald's one error tree.

::

    HeraldError
    ├── InvalidEvent                 bad input: dead-lettered with its reason
    └── DeliveryError                a provider could not deliver
        ├── TransientDeliveryError   retriable: timeouts, 5xx, 429
        └── PermanentDeliveryError   not retriable: 4xx, bad address
            ├── InvalidRecipient     the address itself is wrong
            └── TokenUnregistered    the push token is gone: remove it

Callers branch on ``retriable``, never on message strings. Vendor exceptions
are translated into these at the provider boundary.
"""

from __future__ import annotations


class HeraldError(Exception):
    """Base of every error herald raises on purpose."""

    retriable = False


class InvalidEvent(HeraldError):
    """An input record does not parse or breaks a rule of the public contract."""


class DeliveryError(HeraldError):
    """A provider did not deliver."""


class TransientDeliveryError(DeliveryError):
    """Delivery may succeed later (timeout, 5xx, 429)."""

    retriable = True

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentDeliveryError(DeliveryError):
    """Delivery will never succeed as addressed (4xx, invalid address)."""


class InvalidRecipient(PermanentDeliveryError):
    """The address (email, phone number, token) is invalid."""


class TokenUnregistered(PermanentDeliveryError):
    """The push token is no longer registered and must be removed."""

    def __init__(self, message: str, tokens: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.tokens = tokens


class ProviderDisabled(HeraldError):
    """A provider cannot run with the given settings; the message names what is missing."""
