"""herald's hops on Faust with no decisions in them: the most a Faust-based herald can do.

What DESIGN.md requires of every notification, built the way herald builds
it (RocksDB tables, table writes handed to the producer after each event,
other records straight to the Kafka producer), and nothing else:

- a routing agent consumes the notification, reads and writes its dedup key,
  produces one delivery and a QUEUED status event;
- a delivery agent consumes the delivery, writes the send intent and its
  outcome to the ``sends`` table and produces a SENT status event.

No validation, profile lookups, rate buckets, templates, priority lanes or
PostgreSQL, and one delivery per notification. Its rate over the Faust
pass-through's bounds what any herald on Faust's streams and tables can
reach on the same machine.

Run as ``python -m bench.skeleton`` with ``BENCH_BOOTSTRAP``,
``BENCH_SOURCE``, ``BENCH_MIDDLE`` (the deliveries), ``BENCH_SINK`` (the
status events), ``BENCH_APP_ID``, ``BENCH_WEB_PORT`` and ``BENCH_DATA_DIR``.
"""

from __future__ import annotations

import os
from typing import Any

import faust
from faust.types import StreamT

from agents.emitters import hand_over_table_writes
from bench.passthrough import run_worker

PARTITIONS = 8


def record_key(message: Any) -> bytes:
    """The state key a record writes: unique per record, as a notification's dedup key is."""
    key: bytes = message.key + b"|" + str(message.offset).encode()
    return key


def create_app() -> faust.App:
    env = os.environ
    app = faust.App(
        env["BENCH_APP_ID"], broker=f"kafka://{env['BENCH_BOOTSTRAP']}", store="rocksdb://",
        autodiscover=False, key_serializer="raw", value_serializer="raw",
        topic_partitions=PARTITIONS, consumer_auto_offset_reset="earliest", producer_acks=-1,
        web_bind="127.0.0.1", web_port=int(env["BENCH_WEB_PORT"]),
        datadir=env["BENCH_DATA_DIR"], logging_config=None,
    )
    source = app.topic(env["BENCH_SOURCE"], key_type=bytes, value_type=bytes)
    middle = app.topic(env["BENCH_MIDDLE"], key_type=bytes, value_type=bytes)
    sink = env["BENCH_SINK"]
    dedup = app.Table("dedup", key_type=bytes, value_type=bytes, partitions=PARTITIONS)
    sends = app.Table("sends", key_type=bytes, value_type=bytes, partitions=PARTITIONS)

    @app.agent(source, name="route")
    async def route(stream: StreamT) -> None:
        async for event in stream.events():
            message = event.message
            claim = record_key(message)
            if dedup.get(claim) is None:
                dedup[claim] = b"1"
                await app.producer.send(middle.get_topic_name(), message.key, message.value,
                                        None, None, None)
                await app.producer.send(sink, message.key, b'"QUEUED"', None, None, None)
            await hand_over_table_writes(app)

    @app.agent(middle, name="deliver")
    async def deliver(stream: StreamT) -> None:
        async for event in stream.events():
            key = record_key(event.message)
            sends[key] = b"intent"
            sends[key] = b"sent"
            await app.producer.send(sink, event.message.key, b'"SENT"', None, None, None)
            await hand_over_table_writes(app)

    return app


if __name__ == "__main__":
    run_worker(create_app())
