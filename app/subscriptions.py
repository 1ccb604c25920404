"""GraphQL over the gateway's WebSocket: the graphql-transport-ws protocol.

A client that offers the ``graphql-transport-ws`` subprotocol on ``/v1/ws``
speaks the protocol of https://github.com/enisdenjo/graphql-ws (PROTOCOL.md):
``connection_init`` (credentials in its payload: ``{"token": "<JWT>"}`` or
``{"Authorization": "Bearer <JWT>"}``; ``?access_token=`` works too) →
``connection_ack``; then ``subscribe`` / ``next`` / ``error`` / ``complete``
per operation id, and ``ping`` / ``pong``. The schema::

    subscription { notifications(userId: ID!, after: ID) { id title body createdAt } }
    mutation { ack(id: ID!) markRead(id: ID!) }

``after`` resumes like ``?last_id=`` on the plain WebSocket. A user
subscribes only to their own notifications.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator, Mapping

from aiohttp import WSMsgType, web
from graphql import (
    ExecutionResult, GraphQLError, GraphQLSchema, OperationType, build_schema, execute,
    get_operation_ast, parse, subscribe, validate,
)

from app.auth import AuthError

if TYPE_CHECKING:
    from app.gateway import Gateway, Session

logger = logging.getLogger("herald.gateway.graphql")

PROTOCOL = "graphql-transport-ws"
#: Seconds a client has to send ``connection_init`` (the protocol's 4408).
INIT_TIMEOUT = 10.0

SDL = """
scalar JSON

"An in-app notification, as the inbox API returns it."
type Notification {
  id: ID!
  category: String!
  priority: String!
  title: String
  body: String
  data: JSON
  createdAt: String!
  "Set on notifications replayed from the inbox (e.g. READ)."
  status: String
}

type Query {
  "The gateway node answering."
  node: String!
}

type Mutation {
  "The notification reached the client: DELIVERED."
  ack(id: ID!): Boolean!
  "The user read it: READ."
  markRead(id: ID!): Boolean!
}

type Subscription {
  "The user's in-app notifications, live; after: resume after that id."
  notifications(userId: ID!, after: ID): Notification!
}
"""


@dataclass
class Context:
    """What resolvers see: the gateway and the authenticated user."""

    gateway: "Gateway"
    user_id: str


def _notification(frame: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": frame["id"], "category": frame.get("category"),
            "priority": frame.get("priority"), "title": frame.get("title"),
            "body": frame.get("body"), "data": frame.get("data"),
            "createdAt": frame["created_at"], "status": frame.get("status")}


async def _subscribe_notifications(_root: Any, info: Any, userId: str,
                                   after: str | None = None) -> AsyncIterator[dict[str, Any]]:
    from app.gateway import Session

    context: Context = info.context
    if userId != context.user_id:
        raise GraphQLError(f"user {context.user_id!r} may not subscribe to the notifications "
                           f"of user {userId!r}")
    return _frames(context.gateway, Session(userId, "graphql"), after)


async def _frames(gateway: "Gateway", session: "Session",
                  after: str | None) -> AsyncIterator[dict[str, Any]]:
    async for frame in gateway.stream(session, after):
        if frame["type"] == "notification":
            yield _notification(frame)
        elif frame["type"] == "error":
            logger.info("graphql subscription: %s", frame["error"])


def _acknowledge(kind: str) -> Any:
    async def resolve(_root: Any, info: Any, id: str) -> bool:  # noqa: A002 - the GraphQL name
        context: Context = info.context
        problem = await context.gateway.acknowledge(None, context.user_id, id, kind)
        if problem:
            raise GraphQLError(problem)
        return True
    return resolve


def build() -> GraphQLSchema:
    """The gateway's schema with its resolvers attached."""
    schema = build_schema(SDL)
    assert schema.subscription_type and schema.mutation_type and schema.query_type
    field = schema.subscription_type.fields["notifications"]
    field.subscribe = _subscribe_notifications
    field.resolve = lambda payload, _info, **_args: payload
    schema.mutation_type.fields["ack"].resolve = _acknowledge("ack")
    schema.mutation_type.fields["markRead"].resolve = _acknowledge("read")
    schema.query_type.fields["node"].resolve = lambda _root, info: info.context.gateway.node
    return schema


SCHEMA = build()


def credentials(payload: Any, query: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """The (headers, query) to authenticate a ``connection_init`` payload with."""
    headers: dict[str, str] = {}
    if isinstance(payload, dict):
        token = payload.get("token") or payload.get("access_token")
        authorization = payload.get("Authorization") or payload.get("authorization")
        if isinstance(token, str):
            headers["Authorization"] = f"Bearer {token}"
        elif isinstance(authorization, str):
            headers["Authorization"] = authorization
    return headers, {k: v for k, v in query.items() if k in ("access_token", "user_id")}


async def run_operation(ws: web.WebSocketResponse, context: Context, op_id: str,
                        payload: Any) -> None:
    """Run one ``subscribe`` message's operation and stream its results as ``next``."""
    async def send(kind: str, body: Any = None) -> None:
        message: dict[str, Any] = {"type": kind, "id": op_id}
        if body is not None:
            message["payload"] = body
        if not ws.closed:
            await ws.send_json(message)

    def errors(found: list[GraphQLError]) -> list[dict[str, Any]]:
        return [error.formatted for error in found]

    if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
        await send("error", [{"message": "payload.query must be a GraphQL document string"}])
        return
    try:
        document = parse(payload["query"])
    except GraphQLError as exc:
        await send("error", errors([exc]))
        return
    if found := validate(SCHEMA, document):
        await send("error", errors(found))
        return
    variables = payload.get("variables") if isinstance(payload.get("variables"), dict) else None
    name = payload.get("operationName") if isinstance(payload.get("operationName"), str) else None
    operation = get_operation_ast(document, name)
    if operation is None:
        await send("error", [{"message": "no operation to run (name it with operationName)"}])
        return
    if operation.operation != OperationType.SUBSCRIPTION:
        result = execute(SCHEMA, document, context_value=context, variable_values=variables,
                         operation_name=name)
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            result = await result
        assert isinstance(result, ExecutionResult)
        await send("next", result.formatted)
        await send("complete")
        return
    stream = await subscribe(SCHEMA, document, context_value=context, variable_values=variables,
                             operation_name=name)
    if isinstance(stream, ExecutionResult):
        await send("error", errors(stream.errors or []))
        return
    try:
        async for result in stream:
            await send("next", result.formatted)
    finally:
        with contextlib.suppress(Exception):
            await stream.aclose()  # type: ignore[attr-defined]
    await send("complete")


async def serve(gateway: "Gateway", request: web.Request) -> web.WebSocketResponse:
    """One graphql-transport-ws connection, from ``connection_init`` to close."""
    from app.gateway import MAX_CLIENT_MESSAGE, session_user

    ws = web.WebSocketResponse(protocols=(PROTOCOL,), max_msg_size=MAX_CLIENT_MESSAGE,
                               heartbeat=gateway.herald.settings.ws_heartbeat_seconds)
    await ws.prepare(request)
    gateway.sockets.add(ws)
    context: Context | None = None
    running: dict[str, asyncio.Task[None]] = {}

    async def close(code: int, reason: str) -> None:
        await ws.close(code=code, message=reason.encode()[:120])

    init_timer = asyncio.get_running_loop().call_later(
        INIT_TIMEOUT, lambda: context is None and asyncio.ensure_future(
            close(4408, "Connection initialisation timeout")))
    try:
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            try:
                body = json.loads(message.data)
                kind = body["type"]
            except (ValueError, TypeError, KeyError):
                await close(4400, "Invalid message: expected a JSON object with a 'type'")
                break
            if kind == "connection_init":
                if context is not None:
                    await close(4429, "Too many initialisation requests")
                    break
                headers, query = credentials(body.get("payload"), request.query)
                try:
                    user_id = session_user(gateway.auth, headers or request.headers, query)
                except AuthError as exc:
                    await close(4403 if exc.status == 403 else 4401, f"{exc.message}")
                    break
                context = Context(gateway, user_id)
                await ws.send_json({"type": "connection_ack"})
            elif kind == "ping":
                await ws.send_json({"type": "pong"})
            elif kind == "pong":
                continue
            elif context is None:
                await close(4401, "Unauthorized: send connection_init first")
                break
            elif kind == "subscribe":
                op_id = body.get("id")
                if not isinstance(op_id, str) or not op_id:
                    await close(4400, "Invalid message: subscribe needs an 'id'")
                    break
                if op_id in running and not running[op_id].done():
                    await close(4409, f"Subscriber for {op_id} already exists")
                    break
                running[op_id] = asyncio.ensure_future(
                    _guarded(run_operation(ws, context, op_id, body.get("payload"))))
            elif kind == "complete":
                task = running.pop(str(body.get("id")), None)
                if task is not None:
                    task.cancel()
            else:
                await close(4400, f"Invalid message type {kind!r}")
                break
    finally:
        gateway.sockets.discard(ws)
        init_timer.cancel()
        for task in running.values():
            task.cancel()
        await asyncio.gather(*running.values(), return_exceptions=True)
    return ws


async def _guarded(operation: Any) -> None:
    try:
        await operation
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001 - one operation's failure must not end the connection
        logger.exception("graphql operation failed")
