"""The OpenAPI document describes exactly the routes the API registers."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import faust

from app import api
from app.openapi import ROUTES, build_document
from app.settings import Settings

REQUIRED = {"HERALD_KAFKA_BOOTSTRAP": "127.0.0.1:9092",
            "HERALD_DATABASE_URL": "postgresql://herald:secret@127.0.0.1:5432/herald"}


def registered_routes() -> dict[str, set[str]]:
    """Path → methods of the views app/api.py declares on a Faust app (no broker needed)."""
    app = faust.App("openapi-test", broker="memory://", autodiscover=False, web_enabled=True)
    herald = SimpleNamespace(app=app, settings=Settings.from_env(REQUIRED))
    api.register(herald)  # type: ignore[arg-type]
    routes: dict[str, set[str]] = {}
    for route in app.web.web_app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("formatter") or info.get("path")
        if path and path.startswith("/v1/") and route.method not in ("HEAD", "*"):
            routes.setdefault(path, set()).add(route.method.lower())
    return routes


def test_the_document_is_openapi_3_1_json():
    document = json.loads(json.dumps(build_document("http://127.0.0.1:6066")))
    assert document["openapi"] == "3.1.0"
    assert document["servers"] == [{"url": "http://127.0.0.1:6066"}]
    assert set(document["components"]["securitySchemes"]) == {"apiKey", "apiKeyHeader",
                                                              "userJwt"}


def test_the_document_lists_every_registered_route_and_nothing_else():
    paths = build_document()["paths"]
    registered = registered_routes()
    assert registered == {path: set(operations) for path, operations in paths.items()}
    assert set(registered) == {path for path, _ in ROUTES.values()}


def test_every_operation_declares_its_path_parameters_responses_and_security():
    document = build_document()
    schemes = set(document["components"]["securitySchemes"])
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == set(re.findall(r"{(\w+)}", path)), where
            assert operation["responses"], where
            for requirement in operation["security"]:
                assert set(requirement) <= schemes, where
            for code, response in operation["responses"].items():
                if code.startswith("4"):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, where


def test_every_reference_resolves():
    document = build_document()
    text = json.dumps(document)
    for ref in set(re.findall(r'"\$ref": "#/([^"]+)"', text)):
        node = document
        for part in ref.split("/"):
            node = node[part]
        assert isinstance(node, dict)


def test_protected_operations_name_their_errors():
    paths = build_document()["paths"]
    ingest = paths["/v1/notifications"]["post"]
    assert {"202", "400", "401", "403", "413", "503"} <= set(ingest["responses"])
    inbox = paths["/v1/users/{user_id}/notifications"]["get"]
    assert {p["name"] for p in inbox["parameters"]} == {"user_id", "status", "limit", "cursor", "q"}
