"""The one small interface every provider implements.

A provider implements :meth:`Provider._send` (and :meth:`Provider.aclose` if it
holds a client). The base class bounds each call with a timeout and maps
anything unexpected to a transient error, so callers only ever see
:mod:`app.errors`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Mapping

from app.errors import DeliveryError, TransientDeliveryError
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
            return await asyncio.wait_for(self._send(delivery), self.timeout)
        except DeliveryError:
            raise
        except asyncio.TimeoutError as exc:
            raise TransientDeliveryError(f"{self.name}: no answer within {self.timeout}s") from exc
        except Exception as exc:  # noqa: BLE001 - unknown failures are retried, not lost
            raise TransientDeliveryError(f"{self.name}: {type(exc).__name__}: {exc}") from exc

    async def _send(self, delivery: Delivery) -> Receipt:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release the provider's clients."""
