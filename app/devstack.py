"""The local stack: a real Kafka (KRaft, one node) and a real PostgreSQL, no Docker.

Kafka's jars are resolved from Maven Central with ``mvn`` into the stack
folder; PostgreSQL uses Debian's server binaries (installed with apt-get when
missing) on a throwaway cluster in the same folder. Both listen on 127.0.0.1
only. ``up`` is idempotent: what already runs is reused. Readiness is polled
(broker metadata, ``pg_isready``), never slept for.
"""

from __future__ import annotations

import asyncio
import base64
import glob
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

KAFKA_VERSION = "3.9.2"
SCALA_VERSION = "2.13"
SLF4J_VERSION = "1.7.36"
RELOAD4J_VERSION = "1.2.25"
READY_TIMEOUT_SECONDS = 120.0

Echo = Callable[[str], None]


class StackError(RuntimeError):
    """The local stack could not be brought up; the message says what to look at."""


def _run(cmd: list[str], *, cwd: Path | None = None, user: str | None = None,
         check: bool = True) -> subprocess.CompletedProcess[str]:
    if user:
        cmd = ["runuser", "-u", user, "--", *cmd]
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise StackError(f"{' '.join(cmd)} failed ({result.returncode}):\n"
                         f"{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return result


def running_pid(pid_file: Path) -> int | None:
    """The pid recorded in ``pid_file`` if that process is alive."""
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _apt_install(packages: list[str], echo: Echo) -> None:
    if os.geteuid() != 0:
        raise StackError(f"missing {', '.join(packages)}; install them (apt-get install "
                         f"{' '.join(packages)}) or run as root")
    echo(f"installing {', '.join(packages)} with apt-get ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]):
        result = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if result.returncode != 0:
            raise StackError(f"{' '.join(cmd)} failed:\n{result.stderr[-2000:]}")


def _cluster_id() -> str:
    """A random KRaft cluster id; never starting with "-", which the tool would take for
    an option (1 start in 64 failed so)."""
    while (cluster := base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode())[0] == "-":
        pass
    return cluster


def port_in_use(port: int) -> bool:
    """Whether something answers on 127.0.0.1:``port``."""
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _claim_port(port: int, what: str) -> None:
    # Another server on the port would answer the readiness checks in place
    # of ours; say so instead of silently using it.
    if port_in_use(port):
        raise StackError(f"cannot start {what}: 127.0.0.1:{port} is already in use by another "
                         f"process (choose other ports with --kafka-port/--pg-port)")


def _reachable_by(user: str, path: Path) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return _run(["test", "-x", str(path)], user=user, check=False).returncode == 0


def postgres_bin_dir() -> Path | None:
    """Debian's newest PostgreSQL server binaries, if installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda path: int(Path(path).parent.parent.name))
    return Path(found[-1]).parent if found else None


async def _kafka_answers(bootstrap: str) -> bool:
    from aiokafka import AIOKafkaClient

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await client.bootstrap()
        return bool(client.cluster.brokers())
    except Exception:  # noqa: BLE001 - not ready yet
        return False
    finally:
        await client.close()


@dataclass(frozen=True)
class DevStack:
    """One local stack: its folder and ports."""

    root: Path
    kafka_port: int
    pg_port: int
    partitions: int = 8

    @classmethod
    def configure(cls, directory: str | None = None, kafka_port: int | None = None,
                  pg_port: int | None = None) -> "DevStack":
        """The stack from explicit values, else ``HERALD_DEV_*`` variables, else defaults."""
        env = os.environ
        return cls(
            root=Path(directory or env.get("HERALD_DEV_DIR") or ".local").resolve(),
            kafka_port=kafka_port or int(env.get("HERALD_DEV_KAFKA_PORT", "9092")),
            pg_port=pg_port or int(env.get("HERALD_DEV_PG_PORT", "5432")),
            partitions=int(env.get("HERALD_PARTITIONS", "8")),
        )

    # -- paths and settings -------------------------------------------------

    @property
    def kafka_dir(self) -> Path:
        return self.root / "kafka"

    @property
    def pg_dir(self) -> Path:
        """Where the PostgreSQL cluster lives: ``<root>/postgres``, or where it can.

        As root the server runs as Debian's ``postgres`` account, which must be
        able to reach its data folder. A clone under a private folder (mktemp
        makes them 0700) is out of its reach; the cluster then lives in
        ``/var/tmp/herald-<hash>/`` and ``<root>/postgres`` points there.
        """
        inside = self.root / "postgres"
        if inside.is_symlink() or os.geteuid() != 0 or _reachable_by("postgres", self.root):
            return inside.resolve() if inside.is_symlink() else inside
        digest = hashlib.sha1(str(self.root).encode()).hexdigest()[:12]
        return Path("/var/tmp") / f"herald-{digest}" / "postgres"

    @property
    def env_file(self) -> Path:
        return self.root / "herald.env"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def database_url(self) -> str:
        return f"postgresql://herald:herald@127.0.0.1:{self.pg_port}/herald"

    def settings(self) -> dict[str, str]:
        """The ``HERALD_*`` settings a worker needs to use this stack."""
        return {
            "HERALD_KAFKA_BOOTSTRAP": self.bootstrap,
            "HERALD_DATABASE_URL": self.database_url,
            "HERALD_PARTITIONS": str(self.partitions),
            "HERALD_REPLICATION_FACTOR": "1",
            "HERALD_DATA_DIR": str(self.root / "data" / "worker"),
            "HERALD_WEB_PORT": os.environ.get("HERALD_WEB_PORT", "6066"),
        }

    # -- commands -----------------------------------------------------------

    def up(self, *, fresh: bool = False, demo: bool = False, echo: Echo = print) -> None:
        """Start Kafka and PostgreSQL (reusing running ones) and write ``herald.env``.

        With ``demo``, the provider fakes start too and the settings point the
        worker's real provider SDKs at them (see :mod:`app.demo`).
        """
        if fresh:
            self.down(echo=echo)
            for path in (self.kafka_dir / "data", self.pg_dir, self.root / "data"):
                shutil.rmtree(path, ignore_errors=True)
            if (self.root / "postgres").is_symlink():
                (self.root / "postgres").unlink()
        self.root.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        self._start_kafka(echo)
        self._start_postgres(echo)
        self._wait_kafka(echo)
        self._prepare_database(echo)
        self._create_topics(echo)
        settings = self.settings()
        if demo:
            from app.demo import start_fakes

            settings.update(start_fakes(self.root / "fakes", self.kafka_port + 8988, echo))
        self.env_file.write_text("".join(f"export {k}='{v}'\n" for k, v in settings.items()))
        echo(f"stack ready in {time.monotonic() - started:.1f}s: Kafka {self.bootstrap}, "
             f"PostgreSQL {self.database_url}")

    def down(self, *, echo: Echo = print) -> None:
        """Stop Kafka, PostgreSQL and the demo fakes if they run."""
        from app.demo import stop_fakes

        stop_fakes(self.root / "fakes", echo)
        self.stop_kafka(echo=echo)
        self.stop_postgres(echo=echo)

    def stop_kafka(self, *, echo: Echo = print) -> None:
        """Stop only the broker (SIGTERM, SIGKILL after 30 s); ``up`` starts it again."""
        pid = running_pid(self.kafka_dir / "kafka.pid")
        if pid:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while running_pid(self.kafka_dir / "kafka.pid") and time.monotonic() < deadline:
                time.sleep(0.1)
            if running_pid(self.kafka_dir / "kafka.pid"):
                os.kill(pid, signal.SIGKILL)
            echo("kafka stopped")

    def stop_postgres(self, *, echo: Echo = print) -> None:
        """Stop only PostgreSQL (fast shutdown); ``up`` starts it again."""
        bin_dir = postgres_bin_dir()
        if bin_dir and self._pg_running(bin_dir):
            _run([str(bin_dir / "pg_ctl"), "-D", str(self.pg_dir / "data"), "-m", "fast",
                  "-w", "stop"], user=self._pg_user())
            echo("postgresql stopped")

    def status(self, *, echo: Echo = print) -> bool:
        """Print and return whether both parts run."""
        kafka = running_pid(self.kafka_dir / "kafka.pid") is not None and asyncio.run(
            _kafka_answers(self.bootstrap))
        bin_dir = postgres_bin_dir()
        pg = bool(bin_dir) and self._pg_ready(bin_dir)  # type: ignore[arg-type]
        echo(f"kafka      {self.bootstrap:<22} {'up' if kafka else 'down'}")
        echo(f"postgresql 127.0.0.1:{self.pg_port:<12} {'up' if pg else 'down'}")
        return kafka and pg

    # -- Kafka --------------------------------------------------------------

    def _resolve_kafka(self, echo: Echo) -> Path:
        libs = self.kafka_dir / "libs"
        marker = libs / f".kafka-{KAFKA_VERSION}"
        if marker.exists():
            return libs
        if not shutil.which("java") or not shutil.which("mvn"):
            _apt_install(["openjdk-17-jre-headless", "maven"], echo)
        echo(f"resolving Apache Kafka {KAFKA_VERSION} from Maven Central ...")
        shutil.rmtree(libs, ignore_errors=True)
        self.kafka_dir.mkdir(parents=True, exist_ok=True)
        (self.kafka_dir / "pom.xml").write_text(_KAFKA_POM)
        _run(["mvn", "-q", "-B", "dependency:copy-dependencies", f"-DoutputDirectory={libs}",
              "-DincludeScope=runtime"], cwd=self.kafka_dir)
        marker.touch()
        return libs

    def _write_kafka_config(self) -> Path:
        config = self.kafka_dir / "server.properties"
        data = self.kafka_dir / "data"
        controller = self.kafka_port + 1
        config.write_text(_KAFKA_PROPERTIES.format(
            port=self.kafka_port, controller=controller, data=data, partitions=self.partitions))
        (self.kafka_dir / "log4j.properties").write_text(_LOG4J)
        return config

    def _start_kafka(self, echo: Echo) -> None:
        pid_file = self.kafka_dir / "kafka.pid"
        if running_pid(pid_file):
            echo(f"kafka already running (pid {running_pid(pid_file)})")
            return
        _claim_port(self.kafka_port, "kafka")
        _claim_port(self.kafka_port + 1, "the kafka controller")
        libs = self._resolve_kafka(echo)
        config = self._write_kafka_config()
        java = ["java", "-cp", f"{libs}/*",
                f"-Dlog4j.configuration=file:{self.kafka_dir / 'log4j.properties'}"]
        if not (self.kafka_dir / "data" / "meta.properties").exists():
            _run([*java, "kafka.tools.StorageTool", "format", "--ignore-formatted",
                  "-t", _cluster_id(), "-c", str(config)])
        with open(self.kafka_dir / "kafka.log", "ab") as log:  # the child keeps its own
            process = subprocess.Popen(
                [*java[:1], "-Xms256m", "-Xmx1g", *java[1:], "kafka.Kafka", str(config)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        pid_file.write_text(str(process.pid))
        echo(f"kafka {KAFKA_VERSION} starting on {self.bootstrap} (pid {process.pid})")

    def _wait_kafka(self, echo: Echo) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if not running_pid(self.kafka_dir / "kafka.pid"):
                raise StackError(f"kafka exited; last lines of {self.kafka_dir / 'kafka.log'}:\n"
                                 f"{_tail(self.kafka_dir / 'kafka.log')}")
            if asyncio.run(_kafka_answers(self.bootstrap)):
                echo("kafka answers metadata requests")
                return
            time.sleep(0.2)
        raise StackError(f"kafka did not answer on {self.bootstrap} within "
                         f"{READY_TIMEOUT_SECONDS:.0f}s; see {self.kafka_dir / 'kafka.log'}")

    def _create_topics(self, echo: Echo) -> None:
        # Outside producers may write before any worker ran: give them
        # topics with herald's partition count rather than broker defaults.
        from app.admin import ensure_topics
        from app.settings import Settings

        created = asyncio.run(ensure_topics(Settings.from_env(self.settings())))
        if created:
            echo(f"created topics: {', '.join(created)}")

    # -- PostgreSQL ---------------------------------------------------------

    def _pg_user(self) -> str | None:
        # PostgreSQL refuses to run as root: use Debian's postgres account then.
        return "postgres" if os.geteuid() == 0 else None

    def _pg_running(self, bin_dir: Path) -> bool:
        data = self.pg_dir / "data"
        if not (data / "PG_VERSION").exists():
            return False
        result = _run([str(bin_dir / "pg_ctl"), "-D", str(data), "status"],
                      user=self._pg_user(), check=False)
        return result.returncode == 0

    def _pg_ready(self, bin_dir: Path) -> bool:
        result = _run([str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.pg_port),
                       "-d", "postgres"], check=False)
        return result.returncode == 0

    def _install_postgres(self, echo: Echo) -> Path:
        # Debian's package would create and start a "main" cluster on 5432;
        # herald's cluster is its own, so that one is not created.
        conf = Path("/etc/postgresql-common/createcluster.conf")
        if os.geteuid() == 0 and not conf.exists():
            conf.parent.mkdir(parents=True, exist_ok=True)
            conf.write_text("create_main_cluster = false\n")
        _apt_install(["postgresql"], echo)
        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            raise StackError("apt-get installed postgresql but no /usr/lib/postgresql/*/bin/initdb")
        return bin_dir

    def _start_postgres(self, echo: Echo) -> None:
        bin_dir = postgres_bin_dir() or self._install_postgres(echo)
        user = self._pg_user()
        data = self.pg_dir / "data"
        if self._pg_running(bin_dir):
            echo("postgresql already running")
            return
        _claim_port(self.pg_port, "postgresql")
        self.pg_dir.mkdir(parents=True, exist_ok=True)
        link = self.root / "postgres"
        if link != self.pg_dir and not link.exists():
            link.symlink_to(self.pg_dir)
        if user:
            shutil.chown(self.pg_dir, user, user)
        if not (data / "PG_VERSION").exists():
            _run([str(bin_dir / "initdb"), "-D", str(data), "-U", "herald", "-A", "trust",
                  "-E", "UTF8", "--no-instructions"], user=user)
        options = (f"-c listen_addresses=127.0.0.1 -p {self.pg_port} "
                   f"-c unix_socket_directories={self.pg_dir} -c fsync=off "
                   f"-c max_connections=200")
        _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(self.pg_dir / "postgres.log"),
              "-o", options, "-W", "start"], user=user)
        echo(f"postgresql starting on 127.0.0.1:{self.pg_port}")

    def _prepare_database(self, echo: Echo) -> None:
        bin_dir = postgres_bin_dir()
        assert bin_dir is not None
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while not self._pg_ready(bin_dir):
            if time.monotonic() > deadline:
                raise StackError(f"postgresql not ready on 127.0.0.1:{self.pg_port}; last lines "
                                 f"of its log:\n{_tail(self.pg_dir / 'postgres.log')}")
            time.sleep(0.1)
        psql = [str(bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "herald",
                "-d", "postgres", "-tAc"]
        exists = _run([*psql, "SELECT 1 FROM pg_database WHERE datname = 'herald'"]).stdout
        if exists.strip() != "1":
            _run([*psql, "CREATE DATABASE herald"])
        from app.store import migrate_url

        applied = asyncio.run(migrate_url(self.database_url))
        echo("postgresql ready; migrations: " + (", ".join(applied) if applied else "up to date"))


_KAFKA_POM = f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>herald.local</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{SCALA_VERSION}</artifactId>
      <version>{KAFKA_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-reload4j</artifactId>
      <version>{SLF4J_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>ch.qos.reload4j</groupId>
      <artifactId>reload4j</artifactId>
      <version>{RELOAD4J_VERSION}</version>
    </dependency>
  </dependencies>
</project>
"""

_KAFKA_PROPERTIES = """# Written by herald dev up: one KRaft node (broker + controller) on loopback.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={data}
num.partitions={partitions}
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
"""

_LOG4J = """log4j.rootLogger=WARN, stdout
log4j.logger.kafka.server.KafkaRaftServer=INFO
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
"""
