"""ConfirmedTable: a delivery's intent is in Kafka before a provider hears of it."""

from __future__ import annotations

import asyncio

import faust
import pytest

from tables.confirmed import ConfirmedTable


def declare() -> tuple[faust.App, ConfirmedTable]:
    app = faust.App("confirmed-test", broker="kafka://127.0.0.1:1", store="memory://")
    table = app.tables.add(ConfirmedTable(app, name="sends", beacon=app.tables.beacon,
                                          key_type=str, value_type=None, partitions=2))
    return app, table


def pending(app: faust.App) -> list:
    """What waits in Faust's changelog buffer: the producer has not sent it yet."""
    return list(app.producer.buffer.pending._queue)  # noqa: SLF001


async def acknowledge(app: faust.App, count: int) -> None:
    """Play the Kafka producer: take ``count`` buffered writes and acknowledge them."""
    for _ in range(count):
        await asyncio.sleep(0)
        app.producer.buffer.pending.get_nowait().set_result(None)


def test_confirmed_waits_until_every_write_is_acknowledged() -> None:
    async def scenario() -> list[str]:
        app, table = declare()
        table.send_changelog(0, "u\x1fn-1\x1fpush", {"state": "sending"})
        table.send_changelog(1, "u\x1fn-2\x1fpush", {"state": "sending"})
        assert len(pending(app)) == 2
        log: list[str] = []

        async def wait() -> None:
            await table.confirmed()
            log.append(f"confirmed with {len(pending(app))} pending")

        waiter = asyncio.create_task(wait())
        await acknowledge(app, 1)
        await asyncio.sleep(0)
        log.append("after one ack")
        await acknowledge(app, 1)
        await waiter
        return log

    assert asyncio.run(scenario()) == ["after one ack", "confirmed with 0 pending"]


def test_confirmed_returns_at_once_when_nothing_was_written_since() -> None:
    async def scenario() -> None:
        app, table = declare()
        table.send_changelog(0, "k", {"state": "sent"})
        await acknowledge(app, 1)
        await table.confirmed()
        await asyncio.wait_for(table.confirmed(), timeout=1)

    asyncio.run(scenario())


def test_a_failed_write_is_raised_not_taken_for_durable() -> None:
    async def scenario() -> None:
        app, table = declare()
        table.send_changelog(0, "k", {"state": "sending"})
        app.producer.buffer.pending.get_nowait().set_exception(OSError("broker gone"))
        await table.confirmed()

    with pytest.raises(OSError, match="broker gone"):
        asyncio.run(scenario())


def test_a_batch_waits_for_its_writes_even_when_another_batch_asked_first() -> None:
    # Two delivery batches: both wrote an intent before either asked. The first
    # to ask waits for both writes; the second must still wait for its own.
    async def scenario() -> list[str]:
        app, table = declare()
        table.send_changelog(0, "u\x1fn-1\x1fpush", {"state": "sending"})
        table.send_changelog(1, "u\x1fn-2\x1femail", {"state": "sending"})
        log: list[str] = []

        async def batch(name: str) -> None:
            await table.confirmed()
            log.append(f"{name} confirmed")

        first = asyncio.create_task(batch("push"))
        await asyncio.sleep(0)
        second = asyncio.create_task(batch("email"))
        await asyncio.sleep(0)
        log.append("nothing acknowledged yet")
        await acknowledge(app, 2)
        await asyncio.gather(first, second)
        return log

    assert asyncio.run(scenario()) == ["nothing acknowledged yet", "push confirmed",
                                       "email confirmed"]


def test_a_failed_write_is_told_once_then_forgotten() -> None:
    async def scenario() -> None:
        app, table = declare()
        table.send_changelog(0, "k", {"state": "sending"})
        app.producer.buffer.pending.get_nowait().set_exception(OSError("broker gone"))
        with pytest.raises(OSError, match="broker gone"):
            await table.confirmed()
        await asyncio.wait_for(table.confirmed(), timeout=1)

    asyncio.run(scenario())
