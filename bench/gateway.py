"""WebSocket clients of herald's gateway, as a browser or app would connect.

Protocol: ``ws://HOST:PORT/v1/ws?access_token=<JWT HS256, sub=user id>``;
the server sends ``{"type": "welcome"}`` then ``{"type": "notification",
"id", "created_at", ...}`` frames; the client answers ``{"type": "ack",
"id"}``. Each frame's created_at → received time is one latency sample.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime
from typing import Any

import aiohttp
import jwt

from bench.processes import ROOT

UNAVAILABLE = "gateway not available (app/gateway.py is not on this branch yet)"


def available() -> bool:
    return (ROOT / "app" / "gateway.py").exists()


def token(secret: str, user_id: str) -> str:
    return jwt.encode({"sub": user_id, "exp": int(time.time()) + 3600}, secret, "HS256")


class Clients:
    """Many WebSocket sessions in one aiohttp session, each recording frame latencies."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.sockets: list[aiohttp.ClientWebSocketResponse] = []
        self.latencies: list[float] = []
        self.received: dict[str, float] = {}
        self.readers: list[asyncio.Task[None]] = []
        self.last_frame = time.monotonic()

    async def open(self, url: str) -> None:
        ws = await self.session.ws_connect(url, heartbeat=None, autoping=True)
        welcome = await ws.receive_json(timeout=30)
        if welcome.get("type") != "welcome":
            raise RuntimeError(f"expected a welcome frame, got {welcome!r}")
        self.sockets.append(ws)
        self.readers.append(asyncio.create_task(self._read(ws)))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            now = time.time()
            frame: dict[str, Any] = json.loads(message.data)
            if frame.get("type") != "notification":
                continue
            self.last_frame = time.monotonic()
            self.received[frame["id"]] = now
            if frame.get("created_at"):
                created = datetime.fromisoformat(frame["created_at"]).timestamp()
                self.latencies.append(now - created)
            await ws.send_json({"type": "ack", "id": frame["id"]})

    async def drain(self, settle: float) -> list[float]:
        """Wait until no frame came for ``settle`` seconds; the latencies seen."""
        while time.monotonic() - self.last_frame < settle:
            await asyncio.sleep(0.2)
        return list(self.latencies)

    async def close(self) -> None:
        for reader in self.readers:
            reader.cancel()
        for ws in self.sockets:
            await ws.close()
        await self.session.close()


async def connect(web_port: int, secret: str, user_ids: list[str],
                  concurrency: int = 200, errors: list[BaseException] | None = None) -> Clients:
    """One authenticated session per user id, ``concurrency`` handshakes at a time.

    With ``errors`` given, a session that cannot be opened (out of file
    descriptors, say) is noted there and the others are kept.
    """
    connector = aiohttp.TCPConnector(limit=0)
    clients = Clients(aiohttp.ClientSession(connector=connector))
    gate = asyncio.Semaphore(concurrency)

    async def one(user_id: str) -> None:
        async with gate:
            await clients.open(f"ws://127.0.0.1:{web_port}/v1/ws?access_token="
                               f"{token(secret, user_id)}")

    outcomes = await asyncio.gather(*(one(u) for u in user_ids),
                                    return_exceptions=errors is not None)
    if errors is not None:
        errors.extend(o for o in outcomes if isinstance(o, BaseException))
    return clients
