"""Waiting for a condition with a deadline: the one way tests and harnesses wait."""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable, TypeVar

T = TypeVar("T")


class NotInTime(AssertionError, TimeoutError):
    """The condition did not hold within the deadline (a test failure, a harness timeout)."""


async def eventually(check: Callable[[], Awaitable[T | None]], *, timeout: float = 60.0,
                     interval: float = 0.2, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy; :class:`NotInTime` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise NotInTime(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)
