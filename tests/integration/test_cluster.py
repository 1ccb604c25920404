"""Two workers in one group: any worker answers table lookups, any worker's sessions get
in-app notifications whichever worker processes the user's partition."""

from __future__ import annotations

from typing import Any, Iterator

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer

from rules.partitioning import partition_for
from tests.integration.conftest import (
    KAFKA_PORT, PG_PORT, STACK_DIR, Worker, eventually, free_port, fresh_stack, produce,
)
from tests.integration.test_api import ADMIN, INGEST
from tests.integration.test_gateway import next_frame, token_of

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(worker_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[Worker, Worker]]:
    """Workers A and B on a stack of their own (a new group on the shared stack would
    first consume every earlier test's backlog)."""
    with fresh_stack(STACK_DIR.parent / f"{STACK_DIR.name}-cluster", KAFKA_PORT + 200,
                     PG_PORT + 200) as stack:
        stack_vars = {k: v for k, v in stack.items() if k.startswith("HERALD_")}
        logs = tmp_path_factory.mktemp("cluster-logs")
        workers = []
        for name in ("a", "b"):
            env = {**worker_env, **stack_vars, "HERALD_WEB_PORT": str(free_port()),
                   "HERALD_NODE_ID": f"worker-{name}", "HERALD_TABLES_AUTH": "admin",
                   "HERALD_DATA_DIR": str(tmp_path_factory.mktemp(f"cluster-data-{name}"))}
            workers.append(Worker(env, logs / f"worker-{name}.log"))
        try:
            for worker in workers:
                worker.start()
            yield workers[0], workers[1]
        finally:
            for worker in workers:
                worker.stop()


def user_partitions(worker: Worker) -> list[int] | None:
    status, body = worker.get("/readyz")
    return body["user_partitions"] if status == 200 else None


async def settled(a: Worker, b: Worker, partitions: int) -> tuple[list[int], list[int]]:
    """Wait until both workers are ready and share the partitions between them."""
    async def split() -> tuple[list[int], list[int]] | None:
        mine, theirs = user_partitions(a), user_partitions(b)
        if mine and theirs and sorted(mine + theirs) == list(range(partitions)):
            return mine, theirs
        return None
    return await eventually(split, timeout=120, what="both workers holding partitions")


def user_on(partitions: list[int], count: int, prefix: str) -> str:
    """A user id whose records land on one of ``partitions``."""
    return next(f"{prefix}-{i}" for i in range(10_000)
                if partition_for(f"{prefix}-{i}", count) in partitions)


async def test_any_worker_answers_table_lookups_and_delivers_to_its_sessions(cluster, unique):
    a, b = cluster
    count = int(a.env["HERALD_PARTITIONS"])
    on_a, on_b = await settled(a, b, count)
    # Given a user whose partition worker B processes
    user = user_on(on_b, count, f"cluster-{unique}")
    producer = AIOKafkaProducer(bootstrap_servers=a.env["HERALD_KAFKA_BOOTSTRAP"], acks="all")
    await producer.start()
    try:
        await produce(producer, "user-updates", user, {"user_id": user, "email": "c@example.org"})

        # When either worker is asked for the user's contacts
        seen: list[Any] = []

        async def both_answer() -> list[Any] | None:
            answers = [w.get(f"/v1/tables/contacts/{user}", ADMIN) for w in (a, b)]
            seen[:] = answers
            return answers if all(status == 200 for status, _ in answers) else None
        try:
            answers = await eventually(both_answer, what="contacts from both workers")
        except AssertionError:
            raise AssertionError(f"last answers {seen}; partitions now {user_partitions(a)} "
                                 f"{user_partitions(b)}; user on {partition_for(user, count)}")
        # Then both give the owner's current value
        assert answers[0][1] == answers[1][1]
        assert answers[0][1]["value"]["email"] == "c@example.org"
        # And each lists the tables with the keys it holds itself
        local = {w.env["HERALD_NODE_ID"]: {t["name"]: t["local_keys"]
                                           for t in w.get("/v1/tables", ADMIN)[1]["tables"]}
                 for w in (a, b)}
        # (with HERALD_TABLES_AUTH=admin, contacts are not for anyone who can reach the port)
        assert a.get(f"/v1/tables/contacts/{user}")[0] == 401
        assert b.get("/v1/tables", INGEST)[0] == 403
        assert local["worker-b"]["contacts"] >= 1 and local["worker-a"]["contacts"] == 0

        # When the user opens a WebSocket on worker A
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
            ws = await http.ws_connect(a.url + "/v1/ws",
                                       params={"access_token": token_of(a.env, user)})
            assert (await ws.receive_json(timeout=30))["node_id"] == "worker-a"

            # Then presence, kept by worker B, names worker A's node
            async def present() -> bool:
                status, body = a.get(f"/v1/tables/presence/{user}", ADMIN)
                return status == 200 and "worker-a" in body["value"]
            await eventually(present, what="presence on worker B naming worker A")
            # And an in-app notification processed by B reaches the session on A
            await produce(producer, "notifications", user,
                          {"id": f"n-{unique}", "user_id": user, "title": "Across workers",
                           "channels": ["inapp"]})
            frame = await next_frame(ws)
            assert frame["id"] == f"n-{unique}" and frame["title"] == "Across workers"
            await ws.close()
        # (B still held the user's partition throughout: nothing moved)
        assert user_partitions(b) == on_b and user_partitions(a) == on_a
    finally:
        await producer.stop()


async def test_stopping_a_worker_closes_its_sessions_as_going_away(cluster, unique):
    a, b = cluster
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        # Given sessions on worker B: a plain WebSocket and a GraphQL one
        user = f"leaving-{unique}"
        ws = await http.ws_connect(b.url + "/v1/ws",
                                   params={"access_token": token_of(b.env, user)})
        assert (await ws.receive_json(timeout=30))["node_id"] == "worker-b"
        gql = await http.ws_connect(b.url + "/v1/ws", protocols=("graphql-transport-ws",))
        await gql.send_json({"type": "connection_init",
                             "payload": {"token": token_of(b.env, user)}})
        assert (await gql.receive_json(timeout=30))["type"] == "connection_ack"
        # When B is stopped (SIGTERM)
        assert b.process is not None
        b.process.terminate()
        # Then both are closed with 1001 "going away", so clients reconnect elsewhere
        for socket in (ws, gql):
            message = await socket.receive(timeout=60)
            while message.type == aiohttp.WSMsgType.TEXT:
                message = await socket.receive(timeout=60)
            assert message.type == aiohttp.WSMsgType.CLOSE and message.data == 1001, message
        assert b.process.wait(timeout=60) == 0
