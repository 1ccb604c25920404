"""One channel's providers: failover between them, a breaker and a rate cap for each.

``HERALD_CHANNELS`` names them, e.g. ``push=fcm+apns;email=sendgrid>smtp;sms=twilio``:
``>`` lists failover providers in order (the next is used while the one
before has an open circuit), ``+`` combines push providers by device
platform. A provider whose settings are missing is disabled with a start-up
message naming the variable; a channel left without any provider dead-letters
its deliveries with that reason instead of crashing at the first send.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable, Mapping, Sequence

from app import metrics
from app.errors import PermanentDeliveryError, ProviderDisabled, TransientDeliveryError
from providers import load_provider
from providers.base import Provider, Receipt
from rules.breaker import Breaker, BreakerPolicy, allow, failed, succeeded
from schemas.records import CHANNELS, Delivery
from tables.ratelimit import BucketPolicy, parse_policy, take

logger = logging.getLogger("herald.providers")

DEFAULT_CHANNELS = "push=log;email=log;sms=log;inapp=gateway"
#: The provider of a channel the spec does not name.
DEFAULT_PROVIDER = {"inapp": "gateway"}

StateListener = Callable[[str, str], None]

#: The provider label of an outcome no provider answered (every circuit open).
NO_PROVIDER = "none"


def provider_of(exc: BaseException) -> str:
    """The provider whose answer ``exc`` is, as :meth:`ChannelSender.send` marked it."""
    return str(getattr(exc, "herald_provider", NO_PROVIDER))


def parse_channels(spec: str) -> dict[str, list[list[str]]]:
    """``"email=sendgrid>smtp;push=fcm+apns"`` → {channel: [[failover step providers]]}."""
    channels: dict[str, list[list[str]]] = {}
    for entry in filter(None, (part.strip() for part in spec.split(";"))):
        channel, sep, chain = entry.partition("=")
        channel = channel.strip()
        if not sep or channel not in CHANNELS:
            raise ValueError(f"{entry!r}: expected CHANNEL=PROVIDER[>PROVIDER...] with a channel "
                             f"of {', '.join(CHANNELS)}")
        steps = [[name.strip() for name in step.split("+")] for step in chain.split(">")]
        if any(not name for step in steps for name in step):
            raise ValueError(f"{entry!r}: empty provider name")
        channels[channel] = steps
    for channel in CHANNELS:
        channels.setdefault(channel, [[DEFAULT_PROVIDER.get(channel, "log")]])
    return channels


def parse_rate_caps(spec: str) -> dict[str, BucketPolicy]:
    """``"twilio=10/second,sendgrid=600/minute"`` → {provider: bucket policy}."""
    caps = {}
    for entry in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, rate = entry.partition("=")
        if not sep:
            raise ValueError(f"{entry!r}: expected PROVIDER=N/second|minute|hour|day")
        caps[name.strip()] = parse_policy(rate)
    return caps


class DisabledProvider(Provider):
    """Stands in for a provider that could not be built: every send fails permanently."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__()
        self.name = name
        self.reason = reason

    async def _send(self, delivery: Delivery) -> Receipt:
        raise PermanentDeliveryError(f"provider {self.name} is disabled: {self.reason}")


class PlatformPush(Provider):
    """Push through one provider per device platform (FCM tokens to FCM, APNs to APNs).

    The delivery succeeds when any platform accepted it; a platform that
    failed is logged, since retrying would send again to the devices that
    already received it.
    """

    def __init__(self, providers: Sequence[Provider]) -> None:
        super().__init__(timeout=max(p.timeout for p in providers) * len(providers))
        self.providers = list(providers)
        self.name = "+".join(p.name for p in providers)

    async def _send(self, delivery: Delivery) -> Receipt:
        receipts, errors = [], []
        for provider in self.providers:
            if not any(token.platform == provider.name for token in delivery.push_tokens):
                continue
            try:
                receipts.append(await provider.send(delivery))
            except Exception as exc:  # noqa: BLE001 - the delivery's outcome is decided below
                errors.append(exc)
        if not receipts:
            raise errors[0] if errors else PermanentDeliveryError("no push token for any platform")
        for error in errors:
            logger.warning("push partly failed for %s: %s", delivery.notification_id, error)
        gone = tuple(token for receipt in receipts for token in receipt.unregistered_tokens)
        return Receipt(self.name, receipts[0].message_id, gone)

    async def aclose(self) -> None:
        for provider in self.providers:
            await provider.aclose()


def build_provider(names: Sequence[str], env: Mapping[str, str]) -> Provider:
    """The provider of one failover step, or a disabled stand-in saying why."""
    built = []
    for name in names:
        try:
            built.append(load_provider(name).from_env(env))
        except ProviderDisabled as exc:
            logger.warning("provider %s disabled: %s", name, exc)
            built.append(DisabledProvider(name, str(exc)))
    return built[0] if len(built) == 1 else PlatformPush(built)


class ChannelSender:
    """Sends a channel's deliveries through its providers, in failover order."""

    def __init__(self, channel: str, providers: Sequence[Provider], *,
                 breaker_policy: BreakerPolicy | None = None,
                 caps: Mapping[str, BucketPolicy] | None = None,
                 on_state: StateListener | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.channel = channel
        self.providers = list(providers)
        self.policy = breaker_policy or BreakerPolicy()
        self.caps = dict(caps or {})
        self.breakers = {p.name: Breaker() for p in self.providers}
        self.buckets: dict[str, dict[str, float] | None] = {p.name: None for p in self.providers}
        self.on_state = on_state or (lambda provider, state: None)
        self.clock, self.sleep = clock, sleep

    def _set(self, name: str, breaker: Breaker) -> None:
        if breaker.state != self.breakers[name].state:
            logger.warning("circuit of %s is now %s", name, breaker.state)
            self.on_state(name, breaker.state)
        self.breakers[name] = breaker

    async def _within_cap(self, name: str) -> None:
        cap = self.caps.get(name)
        while cap is not None:
            taken = take(self.buckets[name], self.clock(), cap)
            self.buckets[name] = taken.state
            if taken.allowed:
                return
            await self.sleep(taken.retry_after)

    async def send(self, delivery: Delivery) -> Receipt:
        """Send through the first provider whose circuit lets the call through."""
        for provider in self.providers:
            allowed, breaker = allow(self.breakers[provider.name], self.clock(), self.policy)
            self._set(provider.name, breaker)
            if not allowed:
                continue
            await self._within_cap(provider.name)
            try:
                receipt = await provider.send(delivery)
            except (TransientDeliveryError, PermanentDeliveryError) as exc:
                exc.herald_provider = provider.name  # type: ignore[union-attr]
                metrics.delivery_outcome(self.channel, provider.name, "failed")
                if exc.retriable:
                    self._set(provider.name, failed(self.breakers[provider.name], self.clock(),
                                                    self.policy))
                else:
                    # The provider answered: it is up, the delivery is what is wrong.
                    self._set(provider.name, succeeded(self.breakers[provider.name]))
                raise
            metrics.delivery_outcome(self.channel, provider.name, "sent")
            self._set(provider.name, succeeded(self.breakers[provider.name]))
            return receipt
        raise TransientDeliveryError(f"every provider of {self.channel} has an open circuit",
                                     retry_after=self.policy.open_seconds)

    async def aclose(self) -> None:
        """Close every provider."""
        for provider in self.providers:
            await provider.aclose()
