"""The CLI's contract with operators and scripts, command by command.

Bad arguments: one line on stderr naming the problem, nothing on stdout,
exit status 2. A Kafka or PostgreSQL that cannot be reached: one line naming
the address, no traceback, exit status 1. The processes are real
(``python -m app.cli``); "unreachable" is a closed port on loopback, so no
stack is needed.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.integration.conftest import ROOT, free_port, herald_command

pytestmark = pytest.mark.integration

BAD_ARGUMENTS = [
    ("no-such-command",),
    ("send", "--priority", "urgent", "--user", "u-1"),
    ("send", "--title", "no user"),
    ("send", "--user", "u-1", "--data", "{not json"),
    ("replay", "--topic", "notifications"),
    ("replay", "--topic", "notifications", "--from-offset", "1", "--from-time",
     "2024-01-01T00:00:00+00:00"),
    ("replay", "--topic", "notifications", "--from-time", "yesterday"),
    ("replay", "--topic", "notifications", "--from-offset", "ten"),
    ("dlq", "show", "not-a-position"),
    ("dlq", "ls", "--since", "2024-01-01"),
    ("dlq", "ls", "--channel", "fax"),
    ("dlq", "purge"),
    ("offsets", "reset"),
    ("offsets", "reset", "--to-time", "noon"),
    ("tables", "get", "contacts"),
    ("pool",),
    ("pool", "-n", "0"),
    ("pool", "-n", "2", "--base-port", "65535"),
    ("dev", "up", "--kafka-port", "port"),
]


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    return subprocess.run(herald_command(*args), cwd=ROOT, env={**clean, **env},
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args", BAD_ARGUMENTS, ids=" ".join)
def test_bad_arguments_get_one_line_and_exit_2(args: tuple[str, ...]) -> None:
    # When a command is called wrongly
    result = run(*args, HERALD_KAFKA_BOOTSTRAP="127.0.0.1:9")

    # Then it says what is wrong in one line, and nothing else
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("herald: ") and "--help" in line


@pytest.fixture(scope="module")
def closed_port() -> int:
    """A port nothing listens on (just freed; nothing here binds it again)."""
    return free_port()


UNREACHABLE_KAFKA = [
    ("send", "--user", "u-1", "--title", "Hi"),
    ("replay", "--topic", "notifications", "--from-offset", "0"),
    ("dlq", "ls"),
    ("dlq", "show", "0:1"),
    ("dlq", "replay"),
    ("offsets", "reset", "--to-time", "2024-01-01T00:00:00+00:00"),
    ("worker",),
]


@pytest.mark.parametrize("args", UNREACHABLE_KAFKA, ids=" ".join)
def test_an_unreachable_kafka_is_named_in_one_line(args: tuple[str, ...], closed_port: int) -> None:
    # Given a Kafka address where nothing listens
    address = f"127.0.0.1:{closed_port}"

    # When a command needs Kafka
    result = run(*args, HERALD_KAFKA_BOOTSTRAP=address,
                 HERALD_DATABASE_URL="postgresql://herald:herald@127.0.0.1:9/herald")

    # Then it fails in one line naming the address, without a traceback (a
    # worker's own JSON log lines may come before it)
    assert result.returncode == 1, result.stderr
    (line,) = [text for text in result.stderr.splitlines() if not text.startswith("{")]
    assert line.startswith("herald: ") and address in line
    assert "Traceback" not in result.stderr


def test_an_unreachable_postgresql_is_named_in_one_line(closed_port: int) -> None:
    # Given a database URL with a password, where nothing listens
    url = f"postgresql://herald:s3cret@127.0.0.1:{closed_port}/herald"

    # When the schema is migrated
    result = run("db", "migrate", HERALD_KAFKA_BOOTSTRAP="127.0.0.1:9", HERALD_DATABASE_URL=url)

    # Then one line names the address, never the password
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.splitlines()
    assert f"127.0.0.1:{closed_port}" in line and "s3cret" not in line
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args", [("send", "--user", "u-1"), ("dlq", "ls"), ("db", "migrate")],
                         ids=" ".join)
def test_a_missing_setting_is_named(args: tuple[str, ...]) -> None:
    result = run(*args)
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert "HERALD_" in line
