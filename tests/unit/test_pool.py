"""The pool's supervision decisions: each worker's environment and restart delays."""

import signal

import pytest

from app.pool import STABLE_SECONDS, describe_exit, restart_delay, worker_environment


def test_each_worker_gets_its_own_port_data_folder_and_node_id():
    # Given the pool's environment
    env = {"HERALD_DATA_DIR": "/var/lib/herald", "HERALD_KAFKA_BOOTSTRAP": "k:9092",
           "HERALD_WEB_PORT": "9999"}

    # When worker 2's environment is derived
    derived = worker_environment(env, 2, base_port=7000, hostname="box")

    # Then it overrides the per-worker settings and inherits the rest
    assert derived["HERALD_WEB_PORT"] == "7002"
    assert derived["HERALD_DATA_DIR"] == "/var/lib/herald/worker-2"
    assert derived["HERALD_NODE_ID"] == "box-2"
    assert derived["HERALD_KAFKA_BOOTSTRAP"] == "k:9092"
    assert env["HERALD_WEB_PORT"] == "9999"


def test_without_a_data_dir_workers_live_under_the_default_one():
    derived = worker_environment({}, 0, base_port=6066, hostname="h")
    assert derived["HERALD_DATA_DIR"] == ".local/data/worker/worker-0"
    assert derived["HERALD_WEB_PORT"] == "6066"


@pytest.mark.parametrize(("failures", "expected"), [(0, 1.0), (1, 2.0), (2, 4.0), (5, 32.0),
                                                     (6, 60.0), (40, 60.0)])
def test_quick_exits_back_off_exponentially_up_to_the_cap(failures, expected):
    decision = restart_delay(1, uptime=3.0, failures=failures, jitter=0.0)
    assert decision.delay == expected
    assert decision.failures == failures + 1


def test_a_worker_that_stayed_up_long_enough_restarts_from_the_first_delay():
    decision = restart_delay(1, uptime=STABLE_SECONDS, failures=9, jitter=0.0)
    assert (decision.delay, decision.failures) == (1.0, 1)


def test_every_unexpected_exit_is_restarted_whatever_its_code():
    for code in (0, 1, 2, -signal.SIGKILL):
        assert restart_delay(code, uptime=1.0, failures=0).delay > 0


def test_the_jitter_stays_within_a_fifth_of_the_delay():
    delays = {restart_delay(1, uptime=0.0, failures=2).delay for _ in range(50)}
    assert all(3.2 <= d <= 4.8 for d in delays)


@pytest.mark.parametrize(("code", "text"), [(0, "exited with code 0"), (3, "exited with code 3"),
                                            (-9, "killed by SIGKILL"), (-15, "killed by SIGTERM")])
def test_exits_are_described_as_an_operator_reads_them(code, text):
    assert describe_exit(code) == text
