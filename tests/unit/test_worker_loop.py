"""The worker's event loop: uvloop (issue 7: half the wait per wake-up at 1,000/s)."""

from __future__ import annotations

import asyncio

import uvloop

from app import cli


def test_the_worker_runs_on_uvloop() -> None:
    before = asyncio.get_event_loop_policy()
    try:
        cli._use_uvloop()  # noqa: SLF001
        assert isinstance(asyncio.get_event_loop_policy(), uvloop.EventLoopPolicy)
    finally:
        asyncio.set_event_loop_policy(before)
