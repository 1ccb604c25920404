"""What the provider tests share: deliveries to send, a port nobody listens on, fixture makers."""

from __future__ import annotations

import inspect
import socket
from typing import Any, AsyncContextManager, Callable, Iterable

import pytest

from providers.base import Provider
from schemas.records import Delivery, PushToken


def delivery(**fields: Any) -> Delivery:
    """A ``Delivery`` of notification ``n-1`` to user ``u-42``; ``fields`` say the rest."""
    return Delivery(**{"notification_id": "n-1", "user_id": "u-42", "category": "security",
                       "created_at": "2024-05-01T10:00:00+00:00", **fields})


def email(**overrides: Any) -> Delivery:
    """A security email to ada@example.org, with a subject and a text body."""
    return delivery(**{"channel": "email", "address": "ada@example.org", "title": "New sign-in",
                       "body": "From Paris", "priority": "high", **overrides})


def sms(**overrides: Any) -> Delivery:
    """A critical SMS with a one-time code to +33612345678."""
    return delivery(**{"channel": "sms", "address": "+33612345678", "title": None,
                       "body": "Your code is 123456", "priority": "critical", **overrides})


def push(platform: str, tokens: Iterable[str], **overrides: Any) -> Delivery:
    """A critical push with a title, a body and data, to ``tokens`` of ``platform``."""
    return delivery(**{"channel": "push", "address": "", "title": "New sign-in", "body": "From Paris",
                       "priority": "critical", "data": {"city": "Paris"},
                       "push_tokens": [PushToken(token=t, platform=platform) for t in tokens],
                       **overrides})


def closed_port() -> int:
    """A local TCP port that was free a moment ago: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fake_fixture(start: Callable[[], AsyncContextManager[Any]]) -> Any:
    """A ``fake`` fixture: the fake ``start()`` returns, running for the test."""

    @pytest.fixture
    async def fake():
        async with start() as running:
            yield running

    return fake


def provider_fixture(build: Callable[..., Provider]) -> Any:
    """A ``provider`` fixture: what ``build`` returns, closed after the test.

    ``build`` is given the fixtures its parameters name (``lambda fake: ...``).
    """

    async def provider(**fixtures: Any):
        built = build(**fixtures)
        yield built
        await built.aclose()

    provider.__signature__ = inspect.signature(build)  # pytest reads the fixtures to pass from it
    return pytest.fixture(provider)
