"""The scripted behaviour the fake providers share, their control routes and standalone entry points."""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path

import aiohttp
import pytest

from app.errors import TransientDeliveryError
from providers.twilio import TwilioProvider
from testing.fakes.scripted import Script
from testing.fakes.sendgrid import FakeSendGrid
from testing.fakes.twilio import DEFAULT_ACCOUNT_SID, FakeTwilio
from tests.providers.support import sms

ROOT = Path(__file__).resolve().parents[2]


def test_accepts_when_nothing_is_scripted():
    decision = Script().decide("a@example.org")

    assert (decision.kind, decision.delay, decision.hang) == ("accept", 0.0, 0.0)


def test_fail_next_fails_n_times_with_the_fakes_failure_status_then_accepts():
    script = Script(failure_status=451)
    script.fail_next(2)
    script.fail_next(1, status=502)

    kinds = [(d.kind, d.status) for d in (script.decide(None) for _ in range(4))]

    assert kinds == [("fail", 451), ("fail", 451), ("fail", 502), ("accept", 200)]
    assert script.requests == 4


def test_fail_for_fails_everything_until_the_window_ends():
    script = Script()
    script.fail_for(60)
    assert [script.decide(None).kind for _ in range(3)] == ["fail"] * 3

    script.fail_for(0)

    assert script.decide(None).kind == "accept"


def test_rate_limit_carries_retry_after():
    script = Script()
    script.rate_limit_next(1, retry_after=2)

    decision = script.decide(None)

    assert (decision.kind, decision.status, decision.retry_after) == ("rate_limit", 429, 2)
    assert script.decide(None).kind == "accept"


def test_rejections_are_per_address_and_lasting():
    script = Script()
    script.invalid("bad")
    script.unregistered("gone")

    assert [script.decide(a).kind for a in ("bad", "gone", "ok", "bad")] == [
        "invalid", "unregistered", "accept", "invalid"]


def test_an_outage_comes_before_an_address_rejection():
    script = Script()
    script.invalid("bad")
    script.fail_next(1)

    assert [script.decide("bad").kind for _ in range(2)] == ["fail", "invalid"]


def test_slow_delays_every_answer_until_switched_off():
    script = Script()
    script.slow(1.5)
    script.fail_next(1)

    assert [script.decide(None).delay for _ in range(2)] == [1.5, 1.5]
    script.slow(0)
    assert script.decide(None).delay == 0


def test_accept_then_hang_applies_to_the_next_accepted_messages_only():
    script = Script()
    script.accept_then_hang(30, n=1)

    assert [script.decide(None).hang for _ in range(2)] == [30, 0]


def test_reset_forgets_script_and_record():
    script = Script()
    script.fail_next(3)
    script.record({"to": "x"})

    script.reset()

    assert (script.decide(None).kind, script.count, script.received) == ("accept", 0, [])


def test_received_is_a_copy_and_counts_are_safe_across_threads():
    # Given
    script = Script()

    # When: several threads record at once
    threads = [threading.Thread(target=lambda: [script.record({"n": i}) for i in range(200)]) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then
    assert script.count == 800
    script.received.clear()
    assert len(script.received) == 800


async def test_wait_for_count_gives_up_at_its_deadline():
    with pytest.raises(TimeoutError, match="0 of 1"):
        await Script().wait_for_count(1, timeout=0.05)


async def test_a_message_accepted_before_a_hang_is_received_although_the_sender_timed_out():
    # Given: the crash window between a provider's acceptance and the worker's commit
    async with FakeTwilio() as fake:
        fake.script.accept_then_hang(30)
        provider = TwilioProvider(DEFAULT_ACCOUNT_SID, "fake-token", "+15005550006", base_url=fake.url,
                                  timeout=0.3)
        try:
            # When
            with pytest.raises(TransientDeliveryError):
                await provider.send(sms(user_id="u-1", body="hello", priority="high"))
        finally:
            await provider.aclose()

        # Then
        assert [m["to"] for m in fake.received] == ["+33612345678"]


async def test_control_routes_script_and_inspect_a_running_fake():
    async with FakeSendGrid() as fake, aiohttp.ClientSession() as http:
        async with http.post(f"{fake.url}/_fake/script", json={"action": "fail_next", "n": 2}) as response:
            assert response.status == 200
        async with http.post(f"{fake.url}/_fake/script", json={"action": "os.system"}) as response:
            assert response.status == 400
        async with http.get(f"{fake.url}/_fake/received") as response:
            assert await response.json() == []

        assert [fake.script.decide(None).kind for _ in range(3)] == ["fail", "fail", "accept"]


@pytest.mark.parametrize("module", ["sendgrid", "twilio", "smtp"])
async def test_standalone_fake_prints_its_url_and_answers(module):
    # Given
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", f"testing.fakes.{module}", "--port", "0", cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        # When
        url = (await asyncio.wait_for(process.stdout.readline(), 20)).decode().strip()

        # Then: it listens on 127.0.0.1 and speaks first (SMTP) or answers (HTTP)
        scheme, _, address = url.partition("://")
        host, port = address.rsplit(":", 1)
        assert host == "127.0.0.1"
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            if scheme == "smtp":
                assert (await reader.readline()).startswith(b"220 ")
            else:
                writer.write(b"GET /_fake/received HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert (await reader.readline()).startswith(b"HTTP/1.1 200")
        finally:
            writer.close()
            await writer.wait_closed()
    finally:
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 20) == 0
