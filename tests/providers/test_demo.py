"""Demo mode: the fakes start beside the stack and the settings point the providers at them."""

import socket

from app.demo import FAKES, start_fakes, stop_fakes
from app.settings import Settings
from providers.channel import build_provider


def free_base_port() -> int:
    # Four consecutive free ports, found by binding a block start.
    for start in range(31000, 32000, 10):
        with socket.socket() as probes:
            if all(probes.connect_ex(("127.0.0.1", start + i)) != 0 for i in range(len(FAKES))):
                return start
    raise AssertionError("no free block of ports")


def test_demo_fakes_start_answer_and_configure_real_providers(tmp_path):
    # Given the demo fakes started in a folder of their own
    base = free_base_port()
    settings = start_fakes(tmp_path, base, echo=lambda line: None)
    try:
        # Then each listens where the settings say
        for offset in FAKES.values():
            with socket.create_connection(("127.0.0.1", base + offset), timeout=2):
                pass
        # And the settings build every configured provider (none disabled)
        env = {"HERALD_KAFKA_BOOTSTRAP": "127.0.0.1:9092",
               "HERALD_DATABASE_URL": "postgresql://x@127.0.0.1/x", **settings}
        parsed = Settings.from_env(env)
        names = {name for steps in parsed.channels.values() for step in steps for name in step}
        assert names == {"apns", "sendgrid", "smtp", "twilio", "gateway"}
        for steps in parsed.channels.values():
            for step in steps:
                assert type(build_provider(step, parsed.provider_env)).__name__ != "DisabledProvider"
        # And starting again reuses the running fakes
        assert start_fakes(tmp_path, base, echo=lambda line: None) == settings
    finally:
        stop_fakes(tmp_path, echo=lambda line: None)
    assert not list(tmp_path.glob("*.pid"))
