"""The container descriptions agree with each other and with the code.

Nothing here needs Docker or a cluster. The tests read the Dockerfile,
.dockerignore, docker-compose.yml and k8s/ as data and check what would
otherwise only show up on a user's machine: a port, path, user id or setting
name that one file changed and another did not, a Kafka listener a client
cannot reach, an environment the settings parser rejects, a manifest that
kustomize would not apply. The Dockerfile's health check is run for real
against a throwaway HTTP server on loopback.

k8s/secret.example.yaml is deliberately left out of kustomization.yaml, so
that `kubectl apply -k k8s/` never overwrites real credentials with the
placeholder; the tests hold that decision in place.

Manifests are also validated against the Kubernetes OpenAPI schemas when the
optional `kubernetes-validate` package is installed (its schemas ship inside
it, so it works offline).
"""

from __future__ import annotations

import dataclasses
import functools
import http.server
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import threading
import tomllib
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import pytest
import yaml
from click.testing import CliRunner

from app.cli import main as herald_cli
from app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
NAMESPACE = "herald"
NOT_IN_KUSTOMIZATION = {"kustomization.yaml", "secret.example.yaml"}
# Settings every deployment must give; the rest have defaults in the code.
REQUIRED_SETTINGS = {"HERALD_KAFKA_BOOTSTRAP", "HERALD_DATABASE_URL"}
# What the compose file and the ConfigMap both pin down explicitly.
DEPLOYED_SETTINGS = REQUIRED_SETTINGS | {
    "HERALD_PARTITIONS",
    "HERALD_REPLICATION_FACTOR",
    "HERALD_WEB_PORT",
    "HERALD_WEB_BIND",
    "HERALD_DATA_DIR",
}
KNOWN_KINDS = {
    ("v1", "Namespace"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "Service"),
    ("apps/v1", "StatefulSet"),
    ("policy/v1", "PodDisruptionBudget"),
    ("kustomize.config.k8s.io/v1beta1", "Kustomization"),
}
CLUSTER_SCOPED_KINDS = {"Namespace", "Kustomization"}
#: The two herald workers of docker-compose.yml.
WORKERS = ("herald-1", "herald-2")
#: Read by the CLI (app/logs.py) rather than app.settings.Settings.
CLI_SETTINGS = {"HERALD_LOG_FORMAT"}
PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"


# --- loading ---------------------------------------------------------------


def _read_yaml_documents(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc is not None]


@functools.cache
def compose() -> dict[str, Any]:
    (document,) = _read_yaml_documents(ROOT / "docker-compose.yml")
    return document


def service(name: str) -> dict[str, Any]:
    svc: dict[str, Any] = compose()["services"][name]
    return svc


def environment(svc: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a mapping, whichever syntax the file uses."""
    raw = svc.get("environment", {})
    if isinstance(raw, list):
        return dict(item.split("=", 1) for item in raw)
    return {key: str(value) for key, value in raw.items()}


def k8s_files() -> list[Path]:
    return sorted(K8S.glob("*.yaml")) + sorted(K8S.glob("*.yml"))


@functools.cache
def k8s_documents() -> tuple[tuple[str, dict[str, Any]], ...]:
    return tuple((path.name, doc) for path in k8s_files() for doc in _read_yaml_documents(path))


def k8s_objects(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in k8s_documents() if doc.get("kind") == kind]


def k8s_object(kind: str) -> dict[str, Any]:
    (obj,) = k8s_objects(kind)
    return obj


def worker_pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = k8s_object("StatefulSet")["spec"]["template"]["spec"]
    return spec


def worker_container() -> dict[str, Any]:
    containers: list[dict[str, Any]] = worker_pod_spec()["containers"]
    (container,) = containers
    return container


def container_port(container: dict[str, Any], port: int | str) -> int:
    """Resolve a probe's or Service's port (a number or a port name)."""
    for declared in container.get("ports", []):
        if port in (declared["containerPort"], declared.get("name")):
            return int(declared["containerPort"])
    raise AssertionError(f"port {port!r} is not declared by container {container['name']!r}")


def k8s_environment() -> dict[str, str]:
    """The worker's environment: ConfigMap, example Secret, then the env list."""
    env = dict(k8s_object("ConfigMap")["data"])
    env.update(k8s_object("Secret")["stringData"])
    # What the downward API would inject into the first pod.
    field_values = {"metadata.name": "herald-0", "status.podIP": "10.0.0.7"}
    for variable in worker_container().get("env", []):
        if "value" in variable:
            env[variable["name"]] = variable["value"]
        else:
            env[variable["name"]] = field_values[variable["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


@dataclasses.dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    stage: int


@functools.cache
def dockerfile() -> tuple[Instruction, ...]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # Docker drops comment lines even inside a continuation.
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a line continuation"
    instructions: list[Instruction] = []
    stage = -1
    for line in logical:
        keyword, _, args = line.partition(" ")
        if keyword.upper() == "FROM":
            stage += 1
        instructions.append(Instruction(keyword.upper(), args.strip(), stage))
    return tuple(instructions)


def final_stage() -> list[Instruction]:
    last = max(instruction.stage for instruction in dockerfile())
    return [instruction for instruction in dockerfile() if instruction.stage == last]


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in final_stage():
        if instruction.keyword == "ENV":
            for pair in shlex.split(instruction.args):
                key, sep, value = pair.partition("=")
                assert sep, f"use ENV KEY=value, not the legacy form: {instruction.args!r}"
                env[key] = value
    return env


def dockerfile_user_id() -> int:
    users = [instruction.args for instruction in final_stage() if instruction.keyword == "USER"]
    assert users, "the runtime stage never switches away from root"
    user = users[-1].split(":")[0]
    assert (
        user.isdigit()
    ), f"USER {user!r}: Kubernetes can only verify runAsNonRoot for a numeric uid"
    return int(user)


def healthcheck_command() -> list[str]:
    (check,) = [i.args for i in final_stage() if i.keyword == "HEALTHCHECK"]
    _, sep, command = check.partition("CMD ")
    assert sep, f"HEALTHCHECK without CMD: {check!r}"
    argv = json.loads(command)
    assert isinstance(argv, list), "HEALTHCHECK CMD should use the exec (JSON) form"
    return argv


@functools.cache
def pyproject() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as stream:
        return tomllib.load(stream)


def dockerignored(path: str) -> bool:
    """Whether .dockerignore keeps ``path`` out of the build context.

    Docker's rules: patterns are relative to the context root, ``**`` spans
    directories, the last matching line wins, ``!`` re-includes, and a
    directory's pattern covers everything under it.
    """
    rules: list[tuple[bool, re.Pattern[str]]] = []
    for raw in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        source = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
        source = source.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        rules.append((negate, re.compile(source + r"\Z")))
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for negate, regex in rules:
        if any(regex.match(prefix) for prefix in prefixes):
            ignored = not negate
    return ignored


def quantity(value: str | int) -> float:
    """A Kubernetes resource quantity (``500m``, ``2``, ``768Mi``) as a number."""
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value))
    assert match and match.group(2) in {"", *units}, f"unreadable quantity {value!r}"
    return float(match.group(1)) * units.get(match.group(2), 1)


def seconds(duration: str) -> int:
    """A compose duration such as ``60s`` or ``1m30s``."""
    parts = re.findall(r"(\d+)(h|m|s)", duration)
    assert (
        parts and "".join(n + u for n, u in parts) == duration
    ), f"unreadable duration {duration!r}"
    return sum(int(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


def published_ports(svc: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host ip, host port, container port) for each published port."""
    result = []
    for port in svc.get("ports", []):
        if isinstance(port, dict):
            result.append((port.get("host_ip", ""), int(port["published"]), int(port["target"])))
            continue
        pieces = str(port).split(":")
        assert len(pieces) == 3, f"port {port!r} does not name the host address to bind"
        result.append((pieces[0], int(pieces[1]), int(pieces[2])))
    return result


def kafka_listeners(spec: str) -> dict[str, tuple[str, int]]:
    """``NAME://host:port,...`` as {NAME: (host, port)}."""
    listeners = {}
    for item in spec.split(","):
        name, _, address = item.partition("://")
        host, _, port = address.rpartition(":")
        listeners[name] = (host, int(port))
    return listeners


# --- Dockerfile ------------------------------------------------------------


def test_every_stage_builds_on_python_311_slim() -> None:
    # Given the FROM lines
    images = [i.args.split()[0] for i in dockerfile() if i.keyword == "FROM"]

    # Then each stage uses the interpreter the project is built for
    assert images and set(images) == {"python:3.11-slim"}


def test_image_installs_the_project_and_the_runtime_stage_gets_it() -> None:
    # Given the stages and the stage that runs pip
    installs = [
        i
        for i in dockerfile()
        if i.keyword == "RUN" and re.search(r"pip install --no-cache-dir \.(\s|$)", i.args)
    ]
    assert installs, "no stage runs `pip install --no-cache-dir .`"
    install_stage = installs[-1].stage
    last_stage = final_stage()[0].stage

    # Then the runtime stage installs it itself or copies it from that stage
    if install_stage != last_stage:
        (from_line,) = [i for i in dockerfile() if i.keyword == "FROM" and i.stage == install_stage]
        stage_name = from_line.args.split()[-1]
        copies = [i.args for i in final_stage() if i.keyword == "COPY"]
        assert any(f"--from={stage_name}" in c or f"--from={install_stage}" in c for c in copies)


def test_image_runs_as_a_non_root_user() -> None:
    # When the runtime stage's last USER is read
    uid = dockerfile_user_id()

    # Then it is not root
    assert uid != 0


def test_image_environment_opens_the_web_port_and_points_at_the_data_volume() -> None:
    # Given the runtime stage's ENV, EXPOSE and CMD
    env = dockerfile_env()
    exposed = [i.args for i in final_stage() if i.keyword == "EXPOSE"]
    (cmd,) = [i.args for i in final_stage() if i.keyword == "CMD"]

    # Then the worker listens on all interfaces, on the exposed port, with
    # its tables under the data directory, started as `herald worker`
    assert env["HERALD_WEB_BIND"] == "0.0.0.0"
    assert env["HERALD_DATA_DIR"] == "/var/lib/herald"
    assert exposed == [env.get("HERALD_WEB_PORT", "6066")] == ["6066"]
    assert json.loads(cmd) == ["herald", "worker"]


def test_image_command_is_a_console_script_of_the_project() -> None:
    # Given the command the image starts
    (cmd,) = [json.loads(i.args) for i in final_stage() if i.keyword == "CMD"]

    # Then pip install . creates it
    assert cmd[0] in pyproject()["project"]["scripts"]


def test_healthcheck_uses_python_against_the_loopback_healthz() -> None:
    # Given the health check's command
    argv = healthcheck_command()

    # Then it needs nothing the slim image lacks and probes /healthz locally
    assert argv[0] == "python"
    assert not {"curl", "wget"} & set(" ".join(argv).split())
    assert "127.0.0.1" in argv[-1] and "/healthz" in argv[-1]


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[int, type[_Health]]]:
    handler = type("Handler", (_Health,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def run_healthcheck(port: int) -> int:
    env = {k: v for k, v in os.environ.items() if k.lower() not in {"no_proxy", "http_proxy"}}
    # A dead proxy: the check must reach 127.0.0.1 directly even when the
    # container's environment sets one.
    env.update(
        HERALD_WEB_PORT=str(port), http_proxy="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9"
    )
    argv = healthcheck_command()
    completed = subprocess.run(
        [sys.executable, *argv[1:]], env=env, capture_output=True, timeout=30
    )
    return completed.returncode


def test_healthcheck_passes_when_healthz_answers_200(
    health_server: tuple[int, type[_Health]],
) -> None:
    # Given a server whose /healthz answers 200
    port, _ = health_server

    # When the image's health check runs against it
    # Then it reports healthy
    assert run_healthcheck(port) == 0


def test_healthcheck_fails_when_healthz_answers_503(
    health_server: tuple[int, type[_Health]],
) -> None:
    # Given a server whose /healthz answers 503
    port, handler = health_server
    handler.status = 503

    # Then the health check reports unhealthy
    assert run_healthcheck(port) != 0


def test_healthcheck_fails_when_nothing_listens() -> None:
    # Given a port nobody listens on
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    # Then the health check reports unhealthy
    assert run_healthcheck(port) != 0


# --- .dockerignore ---------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        ".git/HEAD",
        ".local/herald.env",
        ".local/kafka/data/x",
        ".venv/bin/python",
        "app/__pycache__/cli.cpython-311.pyc",
        "tests/unit/test_x.py",
    ],
)
def test_dockerignore_keeps_local_state_out_of_the_context(path: str) -> None:
    assert dockerignored(path)


def test_dockerignore_keeps_what_pip_install_needs() -> None:
    # Given the files the build reads: metadata, readme, packages, package data
    packages = [
        p.rstrip("*") for p in pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    ]
    data = [
        f"{package}/{pattern.replace('*', 'x')}"
        for package, patterns in pyproject()["tool"]["setuptools"].get("package-data", {}).items()
        for pattern in patterns
    ]
    needed = [
        "pyproject.toml",
        pyproject()["project"]["readme"],
        *(f"{p}/__init__.py" for p in packages),
        *data,
    ]

    # Then none of them is ignored
    assert [path for path in needed if dockerignored(path)] == []


def test_every_top_level_package_is_installed_into_the_image() -> None:
    # Given the repository's top-level Python packages (tests aside)
    packages = sorted(p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name != "tests")
    include = pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]

    # Then `pip install .` ships each of them; the image has nothing else
    missing = [
        p for p in packages if not any(re.fullmatch(i.replace("*", ".*"), p) for i in include)
    ]
    assert missing == [], f"not in [tool.setuptools.packages.find] include: {missing}"


# --- docker-compose.yml ----------------------------------------------------


def test_compose_file_is_compose_spec_with_the_stack_services() -> None:
    assert "version" not in compose()
    assert {"kafka", "postgres", "migrate", *WORKERS, "prometheus", "grafana"} <= set(
        compose()["services"]
    )


@pytest.mark.parametrize("worker", WORKERS)
def test_compose_herald_environment_is_herald_settings_only(worker: str) -> None:
    # Given the worker's environment
    names = set(environment(service(worker)))

    # Then it sets herald's settings, every one by its HERALD_ name
    assert DEPLOYED_SETTINGS <= names
    assert {n for n in names if not n.startswith("HERALD_")} == set()


@pytest.mark.parametrize("worker", WORKERS)
def test_compose_herald_environment_is_accepted_by_the_settings(worker: str) -> None:
    # Given the worker's environment
    env = environment(service(worker))

    # When herald builds its settings from it
    settings = Settings.from_env(env)

    # Then it starts as the container needs, with one replica per record
    # because the stack has one broker, and as many partitions as the broker
    # gives the topics it creates
    assert settings.web_bind == "0.0.0.0"
    assert str(settings.data_dir) == dockerfile_env()["HERALD_DATA_DIR"]
    assert settings.replication_factor == 1
    assert settings.partitions == int(environment(service("kafka"))["KAFKA_NUM_PARTITIONS"])
    # and it has an identity and an address of its own
    assert settings.node_id == settings.web_host == worker


@pytest.mark.parametrize("worker", WORKERS)
def test_compose_herald_variables_name_real_settings(worker: str) -> None:
    # Given the settings herald reads (field web_port <- HERALD_WEB_PORT)
    fields = {f"HERALD_{f.name.upper()}" for f in dataclasses.fields(Settings)} | CLI_SETTINGS

    # Then no variable in compose is a typo the worker would silently ignore
    ignored = set(environment(service(worker))) - fields
    assert (
        ignored == set()
    ), f"compose sets variables app.settings.Settings does not read: {ignored}"


def test_compose_uses_kafka_39() -> None:
    assert re.fullmatch(r"apache/kafka:3\.9\.\d+", service("kafka")["image"])


def test_compose_kafka_is_a_consistent_single_kraft_node() -> None:
    # Given the broker's settings
    env = environment(service("kafka"))
    listeners = kafka_listeners(env["KAFKA_LISTENERS"])
    advertised = kafka_listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    protocols = dict(
        item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    controllers = env["KAFKA_CONTROLLER_LISTENER_NAMES"].split(",")
    voter_id, _, voter = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].partition("@")

    # Then it is broker and controller at once, voting for itself on its
    # controller listener, every listener has a protocol, and only client
    # listeners are advertised
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert voter_id == env["KAFKA_NODE_ID"]
    assert int(voter.rpartition(":")[2]) == listeners[controllers[0]][1]
    assert set(listeners) <= set(protocols)
    assert set(controllers) <= set(listeners) and not set(controllers) & set(advertised)
    assert set(advertised) <= set(listeners)
    assert all(advertised[name][1] == listeners[name][1] for name in advertised)
    assert env.get("KAFKA_INTER_BROKER_LISTENER_NAME", "PLAINTEXT") in advertised
    # One broker cannot hold more replicas than one.
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert env[key] == "1", key


def test_compose_herald_bootstraps_on_a_listener_advertised_inside_the_network() -> None:
    # Given where herald bootstraps and what the broker advertises
    bootstrap = environment(service("herald-1"))["HERALD_KAFKA_BOOTSTRAP"]
    advertised = kafka_listeners(environment(service("kafka"))["KAFKA_ADVERTISED_LISTENERS"])
    host, _, port = bootstrap.rpartition(":")

    # Then the address is one the broker hands back to clients, under a name
    # that resolves on the compose network; otherwise the first metadata
    # answer redirects herald somewhere it cannot reach
    assert (host, int(port)) in advertised.values()
    assert host in {"kafka", service("kafka").get("hostname")}


def test_compose_kafka_external_listener_is_published_for_host_tools() -> None:
    # Given the listener advertised as localhost
    advertised = kafka_listeners(environment(service("kafka"))["KAFKA_ADVERTISED_LISTENERS"])
    external = [port for host, port in advertised.values() if host == "localhost"]

    # Then the same port is published on the host's loopback
    assert external == [29092]
    assert ("127.0.0.1", 29092, 29092) in published_ports(service("kafka"))


def test_compose_kafka_healthcheck_asks_the_broker_itself() -> None:
    # Given the health check and the broker's client listeners
    test = " ".join(service("kafka")["healthcheck"]["test"])
    env = environment(service("kafka"))
    client_ports = {
        port
        for name, (_, port) in kafka_listeners(env["KAFKA_LISTENERS"]).items()
        if name not in env["KAFKA_CONTROLLER_LISTENER_NAMES"].split(",")
    }

    # Then it makes a real request to a client listener
    match = re.search(
        r"/opt/kafka/bin/kafka-broker-api-versions\.sh --bootstrap-server localhost:(\d+)", test
    )
    assert match and int(match.group(1)) in client_ports


def test_compose_kafka_keeps_its_log_on_the_volume() -> None:
    env = environment(service("kafka"))
    assert f"kafka-data:{env['KAFKA_LOG_DIRS']}" in service("kafka")["volumes"]


def test_compose_postgres_is_15_and_checked_with_the_configured_role() -> None:
    # Given the database service
    env = environment(service("postgres"))
    test = service("postgres")["healthcheck"]["test"]

    # Then it is PostgreSQL 15 and its check logs in as the configured user
    assert re.fullmatch(r"postgres:15(\.\d+)?", service("postgres")["image"])
    assert env["POSTGRES_USER"] == env["POSTGRES_DB"] == env["POSTGRES_PASSWORD"] == "herald"
    assert "pg_isready" in test
    assert test[test.index("-U") + 1] == env["POSTGRES_USER"]
    assert test[test.index("-d") + 1] == env["POSTGRES_DB"]


def test_compose_database_url_matches_the_postgres_service() -> None:
    # Given herald's database URL and the database service's credentials
    url = urlsplit(environment(service("herald-1"))["HERALD_DATABASE_URL"])
    env = environment(service("postgres"))

    # Then herald logs in where the database is and as who it creates
    assert url.hostname == "postgres" and url.port == 5432
    assert (url.username, url.password) == (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"])
    assert url.path == "/" + env["POSTGRES_DB"]


def test_compose_publishes_ports_on_loopback_only() -> None:
    # Given every published port of every service
    ports = [(name, p) for name, svc in compose()["services"].items() for p in published_ports(svc)]

    # Then none is reachable from other machines
    assert ports and [(name, p) for name, p in ports if p[0] != "127.0.0.1"] == []
    assert ("postgres", ("127.0.0.1", 5432, 5432)) in ports


def test_compose_herald_starts_after_healthy_dependencies() -> None:
    # Given what the worker and the migration wait for
    conditions = {
        (waiting, name): dep["condition"]
        for waiting in (*WORKERS, "migrate")
        for name, dep in service(waiting)["depends_on"].items()
    }

    # Then each worker waits for a healthy kafka and postgres and a finished
    # migration, the migration for a healthy postgres; and each service
    # waited on as healthy has a health check, or it would never become so
    assert conditions == {
        **{(worker, "kafka"): "service_healthy" for worker in WORKERS},
        **{(worker, "postgres"): "service_healthy" for worker in WORKERS},
        **{(worker, "migrate"): "service_completed_successfully" for worker in WORKERS},
        ("migrate", "postgres"): "service_healthy",
    }
    for (_, name), condition in conditions.items():
        if condition == "service_healthy":
            assert not service(name).get("healthcheck", {"disable": True}).get("disable"), name


@pytest.mark.parametrize("worker", WORKERS)
def test_compose_migration_runs_the_worker_image_with_the_worker_settings(worker: str) -> None:
    migrate, herald = service("migrate"), service(worker)
    assert migrate["command"] == ["herald", "db", "migrate"]
    assert (migrate["build"], migrate["image"]) == (herald["build"], herald["image"])
    # the worker adds only its identity and address to the shared settings
    assert environment(herald) == {
        **environment(migrate), "HERALD_NODE_ID": worker, "HERALD_WEB_HOST": worker}
    assert migrate.get("restart", "no") == "no"


@pytest.mark.parametrize("worker", WORKERS)
def test_compose_herald_is_built_here_and_kept_running(worker: str) -> None:
    herald = service(worker)
    build = herald["build"]
    assert (build if isinstance(build, str) else build["context"]) in {".", "./"}
    assert herald["restart"] == "unless-stopped"
    assert herald.get("deploy", {}).get("replicas", 1) == 1


def test_compose_workers_publish_their_web_ports_and_mount_data_dirs_of_their_own() -> None:
    # Given each worker's settings, ports and volumes
    ports, volumes = [], []
    for worker in WORKERS:
        env = environment(service(worker))
        ((host, published, target),) = published_ports(service(worker))
        ports.append(published)
        (volume,) = [v for v in service(worker)["volumes"]
                     if v.endswith(":" + env["HERALD_DATA_DIR"])]
        volumes.append(volume.split(":")[0])
        # Then each publishes the port it listens on, on loopback
        assert (host, target) == ("127.0.0.1", int(env["HERALD_WEB_PORT"]))

    # and no two share a host port or a RocksDB directory (a named volume)
    assert len(set(ports)) == len(set(volumes)) == len(WORKERS)
    assert set(volumes) <= set(compose()["volumes"])


def test_compose_named_volumes_are_declared() -> None:
    used = {
        v.split(":")[0]
        for svc in compose()["services"].values()
        for v in svc.get("volumes", [])
        if not v.startswith((".", "/", "~"))
    }
    assert used and used <= set(compose()["volumes"] or {})


def drain_timeout() -> float:
    """How long a stopping worker gets to drain (``herald pool --drain-timeout``)."""
    from app.cli import pool

    (option,) = [p for p in pool.params if p.name == "drain_timeout"]
    return float(option.default)


def test_compose_and_kubernetes_allow_the_same_graceful_stop_longer_than_the_drain() -> None:
    graces = {seconds(service(worker)["stop_grace_period"]) for worker in WORKERS}
    assert graces == {worker_pod_spec()["terminationGracePeriodSeconds"]}
    assert graces.pop() > drain_timeout()


# --- k8s/ ------------------------------------------------------------------


@pytest.mark.parametrize("path", k8s_files(), ids=lambda p: p.name)
def test_manifest_documents_are_well_formed(path: Path) -> None:
    # Given every document of the file
    documents = _read_yaml_documents(path)

    # Then each is a known kind with a name
    assert documents
    for doc in documents:
        assert (doc.get("apiVersion"), doc.get("kind")) in KNOWN_KINDS
        if doc["kind"] != "Kustomization":
            assert doc["metadata"]["name"]


def test_manifests_are_in_the_herald_namespace() -> None:
    # Given the namespaced objects
    objects = [doc for _, doc in k8s_documents() if doc["kind"] not in CLUSTER_SCOPED_KINDS]

    # Then each is in the namespace the kustomization and namespace.yaml create
    assert objects and {doc["metadata"].get("namespace") for doc in objects} == {NAMESPACE}
    assert k8s_object("Namespace")["metadata"]["name"] == NAMESPACE
    assert k8s_object("Kustomization")["namespace"] == NAMESPACE


def test_manifest_objects_are_unique() -> None:
    keys = [(doc["kind"], doc.get("metadata", {}).get("name")) for _, doc in k8s_documents()]
    assert len(keys) == len(set(keys))


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    # Given the files in k8s/ and the kustomization's resources
    resources = k8s_object("Kustomization")["resources"]
    files = {path.name for path in k8s_files()}

    # Then it applies every manifest once and never the placeholder Secret
    assert len(resources) == len(set(resources))
    assert set(resources) == files - NOT_IN_KUSTOMIZATION
    assert "secret.example.yaml" in files and "secret.example.yaml" not in resources


def test_kustomization_image_is_the_container_image() -> None:
    (image,) = k8s_object("Kustomization")["images"]
    assert image["name"] == worker_container()["image"]


@pytest.mark.parametrize(
    "item",
    [
        pytest.param(doc, id=f"{name}:{doc['kind']}/{doc['metadata']['name']}")
        for name, doc in k8s_documents()
        if doc["kind"] != "Kustomization"
    ],
)
def test_manifest_matches_the_kubernetes_schema(item: dict[str, Any]) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    try:
        kubernetes_validate.validate(item, "1.28.0", strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{exc.json_path}: {exc.message}")


def test_configmap_holds_herald_settings_as_strings_without_secrets() -> None:
    # Given the ConfigMap
    data = k8s_object("ConfigMap")["data"]

    # Then every key is a setting, every value a string (the API server
    # rejects numbers), and the database URL with its password is not here
    assert {key for key in data if not key.startswith("HERALD_")} == set()
    assert {key: value for key, value in data.items() if not isinstance(value, str)} == {}
    assert DEPLOYED_SETTINGS - {"HERALD_DATABASE_URL"} <= set(data)
    assert "HERALD_DATABASE_URL" not in data
    assert data["HERALD_REPLICATION_FACTOR"] == "3"


def test_secret_example_holds_the_database_url() -> None:
    # Given the example Secret
    secret = k8s_object("Secret")
    data = secret["stringData"]

    # Then it carries the database URL, only settings, none also in the
    # ConfigMap (whichever envFrom came last would win silently)
    assert urlsplit(data["HERALD_DATABASE_URL"]).scheme == "postgresql"
    assert {key for key in data if not key.startswith("HERALD_")} == set()
    assert set(data) & set(k8s_object("ConfigMap")["data"]) == set()


def test_worker_environment_comes_from_the_configmap_and_secret() -> None:
    # Given where the container's environment comes from
    container = worker_container()
    sources = {(kind, ref["name"]) for item in container["envFrom"] for kind, ref in item.items()}

    # Then it names the ConfigMap and the Secret that exist, and its own
    # variables are settings too
    assert sources == {
        ("configMapRef", k8s_object("ConfigMap")["metadata"]["name"]),
        ("secretRef", k8s_object("Secret")["metadata"]["name"]),
    }
    assert {
        v["name"] for v in container.get("env", []) if not v["name"].startswith("HERALD_")
    } == set()


def test_worker_environment_is_accepted_by_the_settings() -> None:
    # When herald builds its settings from what a pod gets
    settings = Settings.from_env(k8s_environment())

    # Then it listens on the pod's address and keeps its tables on the volume
    assert settings.web_bind == "0.0.0.0"
    assert settings.web_port == container_port(worker_container(), "http")
    assert settings.replication_factor == 3


def test_worker_variables_name_real_settings() -> None:
    # Given the settings herald reads (field web_port <- HERALD_WEB_PORT)
    fields = {f"HERALD_{f.name.upper()}" for f in dataclasses.fields(Settings)}

    # Then no variable the pod gets is one the worker would silently ignore.
    # HERALD_NODE_ID (the pod name: a stable worker identity) and
    # HERALD_WEB_HOST (the pod IP: the address peers reach this worker at)
    # matter once there is more than one worker.
    ignored = set(k8s_environment()) - fields
    assert ignored == set(), f"k8s/ sets variables app.settings.Settings does not read: {ignored}"


def test_statefulset_runs_three_workers_each_with_its_own_volume() -> None:
    # Given the StatefulSet and the data directory setting
    spec = k8s_object("StatefulSet")["spec"]
    data_dir = k8s_object("ConfigMap")["data"]["HERALD_DATA_DIR"]
    (claim,) = spec["volumeClaimTemplates"]
    mounts = {m["mountPath"]: m["name"] for m in worker_container()["volumeMounts"]}

    # Then three workers run, each mounting its own claim at the data dir
    assert spec["replicas"] == 3
    assert mounts[data_dir] == claim["metadata"]["name"]
    assert claim["metadata"]["name"] not in {
        v["name"] for v in worker_pod_spec().get("volumes", [])
    }
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert data_dir == dockerfile_env()["HERALD_DATA_DIR"]


def test_statefulset_probes_hit_health_endpoints_on_the_web_port() -> None:
    # Given the container, its probes and the configured web port
    container = worker_container()
    web_port = int(k8s_object("ConfigMap")["data"]["HERALD_WEB_PORT"])

    # Then liveness asks /healthz and readiness /readyz, on the port herald
    # listens on
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        if probe in container:
            assert container_port(container, container[probe]["httpGet"]["port"]) == web_port, probe
    assert web_port == int(dockerfile_env()["HERALD_WEB_PORT"])


def test_statefulset_selects_its_own_pods() -> None:
    spec = k8s_object("StatefulSet")["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()


def test_statefulset_runs_as_the_image_user_and_stops_gracefully() -> None:
    # Given the pod spec
    pod = worker_pod_spec()

    # Then it runs as the image's uid with a writable volume, without the
    # Docker-link variables that would land in HERALD_*, and has time to
    # commit and flush on SIGTERM
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert (
        pod["securityContext"]["runAsUser"]
        == pod["securityContext"]["fsGroup"]
        == dockerfile_user_id()
    )
    assert pod["enableServiceLinks"] is False
    assert pod["terminationGracePeriodSeconds"] > drain_timeout()


def test_statefulset_sets_resource_requests_within_limits() -> None:
    resources = worker_container()["resources"]
    for resource in ("cpu", "memory"):
        assert quantity(resources["requests"][resource]) <= quantity(
            resources["limits"][resource]
        ), resource


def test_services_reach_the_worker_web_port() -> None:
    # Given the Services and the pods they should select
    labels = k8s_object("StatefulSet")["spec"]["template"]["metadata"]["labels"]
    web_port = int(k8s_object("ConfigMap")["data"]["HERALD_WEB_PORT"])

    # Then each selects the workers and forwards to the web port
    for svc in k8s_objects("Service"):
        assert svc["spec"]["selector"].items() <= labels.items(), svc["metadata"]["name"]
        for port in svc["spec"]["ports"]:
            assert (
                container_port(worker_container(), port.get("targetPort", port["port"])) == web_port
            )


def test_statefulset_is_governed_by_a_headless_service_beside_a_clusterip_one() -> None:
    # Given the Services by type
    services = {svc["metadata"]["name"]: svc["spec"] for svc in k8s_objects("Service")}
    governing = services[k8s_object("StatefulSet")["spec"]["serviceName"]]

    # Then the StatefulSet's service is headless and another balances the API
    assert governing["clusterIP"] == "None"
    assert [
        s
        for s in services.values()
        if s.get("type", "ClusterIP") == "ClusterIP" and s.get("clusterIP") != "None"
    ]


def test_disruption_budget_covers_the_workers() -> None:
    labels = k8s_object("StatefulSet")["spec"]["template"]["metadata"]["labels"]
    budget = k8s_object("PodDisruptionBudget")["spec"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()
    assert budget["maxUnavailable"] == 1


def test_statefulset_migrates_the_database_before_each_worker_starts() -> None:
    # Given the pod's init containers and its worker container
    (migrate,) = worker_pod_spec()["initContainers"]
    worker = worker_container()

    # Then the same image migrates with the same settings first
    assert migrate["command"] == ["herald", "db", "migrate"]
    assert migrate["image"] == worker["image"]
    assert migrate["envFrom"] == worker["envFrom"]


# --- the commands the deployments run ---------------------------------------


def deployed_commands() -> list[Any]:
    """Every command line a deployment starts, named by where it comes from."""
    commands = [("Dockerfile CMD", json.loads(i.args)) for i in final_stage() if i.keyword == "CMD"]
    commands += [
        (f"compose {name}", svc["command"])
        for name, svc in compose()["services"].items()
        if "command" in svc
    ]
    pod = worker_pod_spec()
    commands += [
        (f"k8s {c['name']}", c["command"])
        for c in pod.get("initContainers", []) + pod["containers"]
    ]
    return [pytest.param(argv, id=f"{where}: {' '.join(argv)}") for where, argv in commands]


@pytest.mark.parametrize("argv", deployed_commands())
def test_deployed_command_exists_in_the_cli(argv: list[str]) -> None:
    # Given a command the image, compose or the StatefulSet runs
    # When herald's CLI is asked for its help
    result = CliRunner().invoke(herald_cli, [*argv[1:], "--help"])

    # Then it is the installed console script, and the subcommand exists
    assert argv[0] in pyproject()["project"]["scripts"]
    assert result.exit_code == 0, result.output


# --- monitoring: Prometheus, alert rules, Grafana ----------------------------


def exported_metrics() -> set[str]:
    """Every sample name app/metrics.py exports (a counter ``x`` is ``x_total``, ...)."""
    from app import metrics

    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
    }
    return {
        family.name + suffix
        for family in metrics.REGISTRY.collect()
        for suffix in suffixes[family.type]
    }


def metric_names(expr: str) -> set[str]:
    """The herald metrics a PromQL expression reads."""
    return set(re.findall(r"\bherald_[a-z_]+\b", expr))


@functools.cache
def alert_rules() -> list[dict[str, Any]]:
    (document,) = _read_yaml_documents(PROMETHEUS / "alerts.yml")
    return [rule for group in document["groups"] for rule in group["rules"]]


@functools.cache
def dashboard() -> dict[str, Any]:
    with (GRAFANA / "dashboards" / "herald.json").open(encoding="utf-8") as stream:
        loaded: dict[str, Any] = json.load(stream)
    return loaded


def dashboard_exprs() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"] for target in panel["targets"]]


def mounts(svc: dict[str, Any]) -> dict[str, str]:
    """A service's bind mounts as {container path: host path}."""
    found = {}
    for volume in svc.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("."):
            found[target] = source
    return found


def test_alert_rules_cover_what_operators_must_hear_about() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert {
        "HeraldDeliveryFailureRateHigh",
        "HeraldSendLatencyOverSLA",
        "HeraldConsumerLagHigh",
        "HeraldDeadLettersGrowing",
        "HeraldCircuitOpen",
        "HeraldWebSocketDisconnectsHigh",
    } <= names
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"page", "warning"}, rule["alert"]
        assert "Runbook" in rule["annotations"]["description"], rule["alert"]


def test_alert_rules_read_only_metrics_herald_exports() -> None:
    read = set().union(*(metric_names(rule["expr"]) for rule in alert_rules()))
    assert read <= exported_metrics(), read - exported_metrics()
    assert {"herald_ws_sessions", "herald_ws_disconnects_total"} <= read


def test_dashboard_panels_read_only_metrics_herald_exports() -> None:
    # Given the dashboard's panels
    panels = dashboard()["panels"]

    # Then each has a query, a unique id, uses the provisioned datasource,
    # and every metric it reads exists
    assert panels and len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == datasource()["uid"], panel["title"]
        for target in panel["targets"]:
            missing = metric_names(target["expr"]) - exported_metrics()
            assert not missing, f"{panel['title']}: {missing}"


def test_dashboard_shows_every_metric_herald_exports() -> None:
    from app import metrics

    shown = set().union(*map(metric_names, dashboard_exprs()))
    families = {family.name for family in metrics.REGISTRY.collect()}
    assert {f for f in families if not any(name.startswith(f) for name in shown)} == set()


def datasource() -> dict[str, Any]:
    (document,) = _read_yaml_documents(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    (source,) = document["datasources"]
    return dict(source)


def test_compose_grafana_provisions_the_datasource_and_the_dashboard() -> None:
    # Given Grafana's mounts and its dashboard provider
    grafana = mounts(service("grafana"))
    (provider_file,) = _read_yaml_documents(
        GRAFANA / "provisioning" / "dashboards" / "herald.yml"
    )
    (provider,) = provider_file["providers"]

    # Then the provisioning folder is mounted where Grafana reads it, the
    # dashboards where the provider looks, and the datasource points at the
    # compose Prometheus
    assert (ROOT / grafana["/etc/grafana/provisioning"]).resolve() == (
        GRAFANA / "provisioning"
    ).resolve()
    assert (ROOT / grafana[provider["options"]["path"]]).resolve() == (
        GRAFANA / "dashboards"
    ).resolve()
    assert urlsplit(datasource()["url"]).hostname == "prometheus"
    assert urlsplit(datasource()["url"]).port == published_ports(service("prometheus"))[0][2]


def test_compose_prometheus_scrapes_both_workers_with_the_rules_file() -> None:
    # Given Prometheus' mounts and configuration
    prometheus = mounts(service("prometheus"))
    (config,) = _read_yaml_documents(ROOT / prometheus["/etc/prometheus/prometheus.yml"])
    (job,) = config["scrape_configs"]
    (targets,) = [group["targets"] for group in job["static_configs"]]

    # Then it scrapes every worker on its web port, and the rules file it
    # loads is mounted from deploy/prometheus/alerts.yml
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert sorted(targets) == sorted(
        f"{worker}:{environment(service(worker))['HERALD_WEB_PORT']}" for worker in WORKERS
    )
    (rule_file,) = config["rule_files"]
    assert (ROOT / prometheus[rule_file]).resolve() == (PROMETHEUS / "alerts.yml").resolve()


# --- k8s/keda: autoscaling on consumer lag -----------------------------------


def keda_documents() -> list[dict[str, Any]]:
    return [doc for path in sorted((K8S / "keda").glob("*.yaml"))
            for doc in _read_yaml_documents(path)]


def test_keda_overlay_adds_the_scaled_object_to_the_base() -> None:
    (kustomization,) = [d for d in keda_documents() if d["kind"] == "Kustomization"]
    assert kustomization["resources"] == ["../", "scaledobject.yaml"]
    assert kustomization["namespace"] == NAMESPACE


def test_keda_scales_the_statefulset_on_the_group_lag_within_the_partitions() -> None:
    # Given the ScaledObject, the StatefulSet and the settings
    (scaled,) = [d for d in keda_documents() if d["kind"] == "ScaledObject"]
    spec = scaled["spec"]
    settings = Settings.from_env(k8s_environment())
    (trigger,) = spec["triggers"]

    # Then it scales the workers, between their usual count and the
    # partition count, on the lag of herald's own group at its brokers
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["metadata"]["namespace"] == NAMESPACE
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "name": k8s_object("StatefulSet")["metadata"]["name"]}
    assert spec["minReplicaCount"] == k8s_object("StatefulSet")["spec"]["replicas"]
    assert spec["maxReplicaCount"] == settings.partitions
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["bootstrapServers"] == settings.kafka_bootstrap
    assert trigger["metadata"]["consumerGroup"] == settings.app_id
    assert all(isinstance(v, str) for v in trigger["metadata"].values())
    assert int(trigger["metadata"]["lagThreshold"]) * spec["maxReplicaCount"] <= 10000
