"""The one small interface every provider implements.

A provider implements :meth:`Provider._send` (and :meth:`Provider.aclose` if it
holds a client). The base class bounds each call with a timeout and maps
anything unexpected to a transient error, so callers only ever see
:mod:`app.errors`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Any, Mapping

from app.errors import DeliveryError, InvalidRecipient, TokenUnregistered, TransientDeliveryError
from schemas.parsing import mask
from schemas.records import Delivery


@dataclass(frozen=True)
class Receipt:
    """Proof that a provider accepted a delivery.

    ``unregistered_tokens`` lists push tokens the provider rejected as gone
    while it delivered to the others; herald removes them from the user.
    """

    provider: str
    message_id: str
    unregistered_tokens: tuple[str, ...] = ()


class Provider:
    """Base of every provider: timeouts and error classification."""

    name = "base"

    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Provider":
        """Build the provider from ``HERALD_*`` settings.

        Raises :class:`~app.errors.ProviderDisabled` naming the missing
        variable, so a provider without credentials is reported at start-up
        instead of failing at the first send.
        """
        return cls()

    async def send(self, delivery: Delivery) -> Receipt:
        """Deliver ``delivery`` or raise a :class:`~app.errors.DeliveryError`."""
        try:
            # asyncio.timeout, not wait_for: no task of its own per call.
            async with asyncio.timeout(self.timeout):
                return await self._send(delivery)
        except DeliveryError as exc:
            raise masked(exc, delivery)
        except TimeoutError as exc:
            raise TransientDeliveryError(f"{self.name}: no answer within {self.timeout}s") from exc
        except Exception as exc:  # noqa: BLE001 - unknown failures are retried, not lost
            raise masked(TransientDeliveryError(f"{self.name}: {type(exc).__name__}: {exc}"),
                         delivery) from exc

    async def _send(self, delivery: Delivery) -> Receipt:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release the provider's clients."""


class PushProvider(Provider):
    """Base of the push providers: one send per device token of the provider's platform.

    A push provider implements :meth:`_send_to` for one token; the delivery
    is delivered when any of the user's devices accepted it (see
    :func:`combine_push_outcomes`).
    """

    #: The ``PushToken.platform`` this provider sends to, and how messages name its tokens.
    platform = "base"
    token_kind = "push"

    async def _send(self, delivery: Delivery) -> Receipt:
        tokens = [t.token for t in delivery.push_tokens if t.platform == self.platform]
        if not tokens:
            raise InvalidRecipient(
                f"{self.name}: notification {delivery.notification_id} has no {self.token_kind} token")
        outcomes = await asyncio.gather(*(self._send_to(token, delivery) for token in tokens),
                                        return_exceptions=True)
        return combine_push_outcomes(self.name, tokens, outcomes)

    async def _send_to(self, token: str, delivery: Delivery) -> str:
        """Push ``delivery`` to the device of ``token``: the provider's message id, or a ``DeliveryError``."""
        raise NotImplementedError


def masked(error: DeliveryError, delivery: Delivery) -> DeliveryError:
    """``error`` with the delivery's address and push tokens masked in its message.

    Vendors quote the recipient in their errors ("Invalid 'To' Phone Number:
    +336..."); the message travels to logs, dead letters and PostgreSQL, so
    it is masked once here, for every provider.
    """
    message = str(error)
    for secret in (delivery.address, *(token.token for token in delivery.push_tokens)):
        if secret and len(secret) >= 4:
            message = message.replace(secret, mask(secret))
    if error.args and message != str(error):
        error.args = (message, *error.args[1:])
    return error


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header value: delta-seconds or an HTTP date.

    Never negative (a date in the past is ``0.0``); ``None`` when the header
    is absent, empty or unparseable. ``now`` is the current time as a Unix
    timestamp (default :func:`time.time`), which an HTTP date is measured from.
    """
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": UTC without a stated zone
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def combine_push_outcomes(provider: str, tokens: list[str], outcomes: list[Any]) -> Receipt:
    """One receipt for a push sent to each of ``tokens``: delivered if any device accepted it.

    ``outcomes`` are the per-token results in the order of ``tokens``, as
    ``asyncio.gather(..., return_exceptions=True)`` returns them: the message
    id (a ``str``) of an accepted send, or the exception of a failed one.
    Anything but a :class:`~app.errors.DeliveryError` is raised again. With
    one device reached, the receipt lists the tokens found unregistered; with
    every token unregistered, :class:`~app.errors.TokenUnregistered` carries
    them all; otherwise the first retriable failure is raised, else the first
    failure.
    """
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, DeliveryError):
            raise outcome
    accepted = [o for o in outcomes if isinstance(o, str)]
    gone = tuple(t for t, o in zip(tokens, outcomes) if isinstance(o, TokenUnregistered))
    if accepted:
        return Receipt(provider, accepted[0], gone)
    if len(gone) == len(tokens):
        raise TokenUnregistered(f"{provider}: every token is unregistered ({len(gone)})", tokens=gone)
    failures = [o for o in outcomes if not isinstance(o, TokenUnregistered)]
    # No device got it: a retry can still reach them if any failure was transient.
    raise next((f for f in failures if f.retriable), failures[0])
