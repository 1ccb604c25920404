"""The worker's web views: health, readiness and table inspection.

Table lookups are answered by the worker that owns the key's partition:
Faust's ``table_route`` forwards the request there from any worker.
"""

from __future__ import annotations

from typing import Any

from faust.types import TableT
from faust.web import Request, Response, View

from app import metrics
from app.auth import AuthError, authorize
from app.context import Herald
from app.topics import USER_UPDATES


def _jsonable(value: Any) -> Any:
    return value.asdict() if hasattr(value, "asdict") else value


def register(herald: Herald) -> None:
    """Declare the views on the app."""
    app = herald.app

    @app.page("/healthz")
    class Health(View):
        """The process is up and serving."""

        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok"})

    @app.page("/readyz")
    class Ready(View):
        """The worker holds partitions and has recovered its tables."""

        async def get(self, request: Request) -> Response:
            assignment = app.consumer.assignment() if app.consumer else set()
            assigned = len(assignment)
            ready = assigned > 0 and not app.rebalancing and not app.in_recovery
            # Co-partitioned topics move together: the user-updates partitions
            # say which users this worker processes (the hot path reads the same
            # partitions of the hot topics, agents/hotpath.py).
            users = sorted(tp.partition for tp in assignment if tp.topic == USER_UPDATES)
            body = {"ready": ready, "assigned_partitions": assigned, "user_partitions": users,
                    "rebalancing": bool(app.rebalancing), "recovering": bool(app.in_recovery)}
            return self.json(body, status=200 if ready else 503)

    metrics.install(herald)

    @app.page("/metrics")
    class Metrics(View):
        """Prometheus metrics; lag and table sizes are sampled as they are scraped."""

        async def get(self, request: Request) -> Response:
            await metrics.sample(herald)
            return self.bytes(metrics.exposition(),
                              content_type="text/plain; version=0.0.4")

    @app.page("/v1/tables")
    class TableList(View):
        """The tables and how many keys this worker holds of each."""

        async def get(self, request: Request) -> Response:
            if (refusal := _refused(herald, self, request)) is not None:
                return refusal
            return self.json({"tables": [
                {"name": table.name, "local_keys": len(table), "help": table.help}
                for table in _tables(herald).values()
            ]})

    for name, table in _tables(herald).items():
        _table_view(herald, name, table)


def _tables(herald: Herald) -> dict[str, TableT]:
    return herald.tables.by_name()


def _refused(herald: Herald, view: View, request: Request) -> Response | None:
    """The 401/403 answer when table views need an admin API key and the request has none."""
    settings = herald.settings
    if not settings.tables_need_admin:
        return None
    try:
        authorize(settings.auth, request.headers, scope="admin")
    except AuthError as exc:
        return view.json({"error": f"{exc.message} (table views need an admin API key; "
                                   "HERALD_TABLES_AUTH)"}, status=exc.status)
    return None


def _table_view(herald: Herald, name: str, table: TableT) -> None:
    app = herald.app

    class TableKey(View):
        """One key of one table, from the worker that owns it."""

        async def get(self, request: Request, key: str) -> Response:
            # Checked before routing; the owner checks again (the headers travel along).
            if (refusal := _refused(herald, self, request)) is not None:
                return refusal
            return await self.owned(request, key=key)

        @app.table_route(table=table, match_info="key")
        async def owned(self, request: Request, key: str) -> Response:
            if key not in table:
                return self.json({"error": f"{key!r} not in table {name!r}"}, status=404)
            return self.json({"table": name, "key": key, "value": _jsonable(table[key])})

    TableKey.__name__ = f"Table_{name}"
    app.page(f"/v1/tables/{name}/{{key}}")(TableKey)
