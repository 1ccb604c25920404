"""A Faust pass-through agent: consume → produce, nothing else (the framework's ceiling).

Run as ``python -m bench.passthrough`` with
``BENCH_BOOTSTRAP``, ``BENCH_SOURCE``, ``BENCH_SINK``, ``BENCH_APP_ID``,
``BENCH_WEB_PORT`` and ``BENCH_DATA_DIR`` (Faust's data dir, in the run's
folder) set. Same producer acks as herald (all), memory store.
"""

from __future__ import annotations

import os

import faust
from faust.types import StreamT


def create_app() -> faust.App:
    env = os.environ
    app = faust.App(
        env["BENCH_APP_ID"], broker=f"kafka://{env['BENCH_BOOTSTRAP']}", store="memory://",
        autodiscover=False, key_serializer="raw", value_serializer="raw",
        consumer_auto_offset_reset="earliest", producer_acks=-1, web_bind="127.0.0.1",
        web_port=int(env["BENCH_WEB_PORT"]), datadir=env["BENCH_DATA_DIR"], logging_config=None,
    )
    source = app.topic(env["BENCH_SOURCE"], key_type=bytes, value_type=bytes)
    sink = app.topic(env["BENCH_SINK"], key_type=bytes, value_type=bytes)

    @app.agent(source, name="passthrough")
    async def passthrough(stream: StreamT) -> None:
        async for event in stream.events():
            await sink.send(key=event.message.key, value=event.message.value)

    return app


def run_worker(app: faust.App) -> None:
    """Run ``app``'s worker as herald runs its own (app/cli.py).

    At warning level Faust's terminal spinner sets the root logger to DEBUG,
    so every debug call in faust and aiokafka would build a log record;
    herald turns it off.
    """
    worker = faust.Worker(app, loglevel="warning")
    worker.spinner = None
    worker.execute_from_commandline()


if __name__ == "__main__":
    run_worker(create_app())
