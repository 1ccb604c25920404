"""Demo mode: the provider fakes run beside the local stack.

``herald dev up --demo`` starts the SendGrid, Twilio, SMTP and APNs fakes
(``testing/fakes``) on loopback and points the worker's real provider SDKs at
them through ``herald.env``, so a notification travels the whole way through
real clients and can be seen arriving (``GET <fake>/_fake/received``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from app.devstack import Echo, port_in_use, running_pid
from testing.fakes.apns import DEFAULT_KEY_ID, DEFAULT_TEAM_ID, DEFAULT_TOPIC
from testing.fakes.twilio import DEFAULT_ACCOUNT_SID

#: Fake name → offset from the demo's base port.
FAKES = {"sendgrid": 0, "twilio": 1, "smtp": 2, "apns": 3}
READY_TIMEOUT_SECONDS = 30.0


def start_fakes(folder: Path, base_port: int, echo: Echo = print) -> dict[str, str]:
    """Start the fakes that do not run yet; return the settings pointing at them."""
    folder.mkdir(parents=True, exist_ok=True)
    extra = {"apns": ["--key-out", str(folder / "apns-key.p8"),
                      "--ca-out", str(folder / "apns-ca.pem")],
             "sendgrid": ["--api-key", "SG.demo"], "twilio": ["--auth-token", "demo-token"]}
    for name, offset in FAKES.items():
        port, pid_file = base_port + offset, folder / f"{name}.pid"
        if running_pid(pid_file):
            continue
        with open(folder / f"{name}.log", "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", f"testing.fakes.{name}", "--port", str(port),
                 *extra.get(name, [])],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        pid_file.write_text(str(process.pid))
        # It outlives this process by design and is tracked by its pid file;
        # marking it so keeps Popen from warning that it is still running.
        process.returncode = 0
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while not port_in_use(port):
            if not running_pid(pid_file) or time.monotonic() > deadline:
                raise RuntimeError(f"fake {name} did not start; see {folder / (name + '.log')}")
            time.sleep(0.1)
        echo(f"fake {name} on 127.0.0.1:{port}")
    url = "http://127.0.0.1:{}".format
    return {
        "HERALD_CHANNELS": "push=apns;email=sendgrid>smtp;sms=twilio;inapp=gateway",
        "HERALD_EMAIL_FROM": "herald@example.org", "HERALD_SMS_FROM": "+15005550006",
        "HERALD_SENDGRID_API_KEY": "SG.demo", "HERALD_SENDGRID_BASE_URL": url(base_port),
        "HERALD_TWILIO_ACCOUNT_SID": DEFAULT_ACCOUNT_SID, "HERALD_TWILIO_AUTH_TOKEN": "demo-token",
        "HERALD_TWILIO_BASE_URL": url(base_port + 1),
        "HERALD_SMTP_HOST": "127.0.0.1", "HERALD_SMTP_PORT": str(base_port + 2),
        "HERALD_SMTP_STARTTLS": "false",
        "HERALD_APNS_BASE_URL": f"https://127.0.0.1:{base_port + 3}",
        "HERALD_APNS_KEY": str(folder / "apns-key.p8"), "HERALD_APNS_CA_FILE": str(folder / "apns-ca.pem"),
        "HERALD_APNS_KEY_ID": DEFAULT_KEY_ID, "HERALD_APNS_TEAM_ID": DEFAULT_TEAM_ID,
        "HERALD_APNS_TOPIC": DEFAULT_TOPIC,
    }


def stop_fakes(folder: Path, echo: Echo = print) -> None:
    """Stop the fakes started by :func:`start_fakes`."""
    for name in FAKES:
        pid_file = folder / f"{name}.pid"
        pid = running_pid(pid_file)
        if pid:
            os.kill(pid, signal.SIGTERM)
            echo(f"fake {name} stopped")
        pid_file.unlink(missing_ok=True)
