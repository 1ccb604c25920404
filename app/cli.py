"""The ``herald`` command line: worker, send, dev stack and database commands.

Bad arguments exit 2 with a one-line error (click's behaviour); a setting or
service that cannot be reached exits 1 with a message naming it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import logging.config
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, NoReturn

import click

from app.settings import Settings, SettingsError, kafka_bootstrap_from_env, redact


@contextlib.contextmanager
def _progress(total: int, description: str) -> Iterator[Callable[[], None]]:
    """A rich progress bar on stderr while the block runs, when stderr is a terminal.

    Yields the function to call once per item done; without a terminal it
    does nothing, so piped output and logs keep only the printed counts.
    """
    if not sys.stderr.isatty() or total == 0:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda: bar.advance(task)


def _fail(message: str) -> NoReturn:
    click.echo(f"herald: {message}", err=True)
    sys.exit(1)


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        _fail(str(exc))


class OneLineUsageError(click.UsageError):
    """A usage error shown as one line (click prints four), exit status 2."""

    def __init__(self, error: click.UsageError) -> None:
        super().__init__(error.format_message(), error.ctx)

    def show(self, file: Any = None) -> None:
        where = f" (see '{self.ctx.command_path} --help')" if self.ctx else ""
        click.echo(f"herald: {self.format_message()}{where}", err=True)


class HeraldGroup(click.Group):
    """herald's command group: bad arguments anywhere below it get one line and exit 2."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except OneLineUsageError:
            raise
        except click.UsageError as exc:
            raise OneLineUsageError(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OneLineUsageError:
            raise
        except click.UsageError as exc:
            raise OneLineUsageError(exc) from None


@click.group(cls=HeraldGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """herald: reliable, real-time, multi-channel notification delivery."""
    if click.get_current_context().invoked_subcommand not in ("worker", "pool"):
        # One-shot commands report a failure in one line naming the address;
        # the Kafka client's own connection messages would only repeat it.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--loglevel", "-l", default=None, help="Log level (default: HERALD_LOG_LEVEL).")
def worker(loglevel: str | None) -> None:
    """Run one herald worker (Faust agents and the web server).

    Logs go to stderr as JSON lines (HERALD_LOG_FORMAT=text for the classic
    format); each line logged while an event is handled carries its agent and
    notification id.
    """
    from faust.worker import Worker

    from app.admin import TopicMismatch, ensure_topics
    from app.factory import create_herald
    from app.logs import log_format, logging_config

    settings = _settings()
    try:
        fmt = log_format(os.environ)
        config = logging_config(fmt, loglevel or settings.log_level)
    except ValueError as exc:
        _fail(str(exc))
    logging.config.dictConfig(config)
    try:
        created = asyncio.run(ensure_topics(settings))
    except TopicMismatch as exc:
        _fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - reported in one line, not a traceback
        _fail(f"could not reach Kafka at {settings.kafka_bootstrap}: {exc}")
    if created:
        logging.getLogger("herald.app").info("created topics: %s", ", ".join(created))
    _use_uvloop()
    herald = create_herald(settings)
    # JSON lines only: Faust's banner and spinner would break a log pipeline's parsing.
    runner = Worker(herald.app, loglevel=loglevel or settings.log_level, logging_config=config,
                    quiet=fmt == "json")
    # At warning level and above Faust's terminal spinner sets the root logger
    # to DEBUG, so every debug call in faust and aiokafka builds a log record.
    runner.spinner = None
    _collect_garbage_less_often()
    runner.execute_from_commandline()


def _use_uvloop() -> None:
    """Run the worker on uvloop, where it is installed (a dependency, but not on Windows).

    Issue 7: at a steady 1,000 notifications/s a task woken on asyncio's own
    loop waited 5-7 ms for its turn, on uvloop 3-4.5 ms, and a notification's
    created → provider latency fell by about a third. Throughput in a
    backlog did not change.
    """
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _collect_garbage_less_often() -> None:
    """Keep the start-up's objects out of the collector's passes, and pass less often.

    With Python's defaults (a young collection every 700 allocations) the
    issue 7 profile of a worker draining notifications spent 15 % of its
    CPU in the cycle collector, mostly re-reading the modules, Faust
    services and records made at start-up. Herald's hot path makes few
    reference cycles: frozen start-up objects and a young collection every
    50,000 allocations cut the worker's CPU per notification by about 10 %.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _notification_from(options: dict[str, Any], file: str | None) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    if file:
        text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
        try:
            payload = json.loads(text)
        except ValueError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--file") from exc
        if not isinstance(payload, dict):
            raise click.BadParameter("expected a JSON object", param_hint="--file")
    for name, value in options.items():
        if value not in (None, ()):
            payload[name] = list(value) if isinstance(value, tuple) else value
    if not payload.get("user_id"):
        raise click.UsageError("a user is required: --user or user_id in --file")
    return payload


@main.command()
@click.option("--user", "user_id", help="Recipient user id (the record key).")
@click.option("--title")
@click.option("--body")
@click.option("--category")
@click.option("--priority", type=click.Choice(["critical", "high", "normal", "low"]))
@click.option("--channel", "channels", multiple=True,
              type=click.Choice(["push", "email", "sms", "inapp"]), help="Repeatable.")
@click.option("--idempotency-key")
@click.option("--template")
@click.option("--data", "data_json", help="Template data as a JSON object.")
@click.option("--file", "file", help="A JSON notification (or - for stdin); flags override it.")
def send(file: str | None, data_json: str | None, **options: Any) -> None:
    """Produce one notification to the ``notifications`` topic."""
    if data_json:
        try:
            options["data"] = json.loads(data_json)
        except ValueError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--data") from exc
    payload = _notification_from(options, file)
    try:
        bootstrap = kafka_bootstrap_from_env(os.environ)
    except SettingsError as exc:
        _fail(str(exc))
    from app.producing import produce_json

    try:
        partition, offset = asyncio.run(
            produce_json(bootstrap, "notifications", payload["user_id"], payload)
        )
    except Exception as exc:  # noqa: BLE001 - reported in one line, not a traceback
        _fail(f"could not produce to Kafka at {bootstrap}: {exc}")
    click.echo(f"sent to notifications[{partition}]@{offset} for {payload['user_id']}")


@main.group()
def dev() -> None:
    """The local stack: Kafka (KRaft) and PostgreSQL under .local/, no Docker."""


def _stack(directory: str | None, kafka_port: int | None, pg_port: int | None) -> Any:
    from app.devstack import DevStack

    return DevStack.configure(directory=directory, kafka_port=kafka_port, pg_port=pg_port)


_dir_option = click.option("--dir", "directory", default=None,
                           help="Where the stack lives (default .local, or HERALD_DEV_DIR).")
_kafka_port_option = click.option("--kafka-port", type=int, default=None,
                                  help="Kafka port (default 9092, or HERALD_DEV_KAFKA_PORT).")
_pg_port_option = click.option("--pg-port", type=int, default=None,
                               help="PostgreSQL port (default 5432, or HERALD_DEV_PG_PORT).")


@dev.command("up")
@_dir_option
@_kafka_port_option
@_pg_port_option
@click.option("--fresh", is_flag=True, help="Delete the stack's data first.")
@click.option("--demo", is_flag=True,
              help="Also run the provider fakes and point the providers at them.")
def dev_up(directory: str | None, kafka_port: int | None, pg_port: int | None,
           fresh: bool, demo: bool) -> None:
    """Start Kafka and PostgreSQL in the background (reuses what already runs)."""
    from app.devstack import StackError

    stack = _stack(directory, kafka_port, pg_port)
    try:
        stack.up(fresh=fresh, demo=demo, echo=click.echo)
    except StackError as exc:
        _fail(str(exc))
    click.echo(f"settings written to {stack.env_file} (source it in any shell)")


@dev.command("down")
@_dir_option
def dev_down(directory: str | None) -> None:
    """Stop the local Kafka and PostgreSQL."""
    _stack(directory, None, None).down(echo=click.echo)


@dev.command("status")
@_dir_option
def dev_status(directory: str | None) -> None:
    """Say whether the local Kafka and PostgreSQL run; exit 1 if either does not."""
    if not _stack(directory, None, None).status(echo=click.echo):
        sys.exit(1)


def _iso(value: str | None, option: str) -> Any:
    from datetime import datetime

    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"not an ISO-8601 time: {value!r}", param_hint=option) from exc
    if moment.tzinfo is None:
        raise click.BadParameter(f"needs an offset, e.g. {value}+00:00", param_hint=option)
    return moment


def _letters(reason: str | None, channel: str | None, since: str | None,
             until: str | None) -> tuple[str, list[Any]]:
    from app.deadletters import Selection, read_letters

    selection = Selection(reason, channel, _iso(since, "--since"), _iso(until, "--until"))
    try:
        bootstrap = kafka_bootstrap_from_env(os.environ)
    except SettingsError as exc:
        _fail(str(exc))
    try:
        return bootstrap, asyncio.run(read_letters(bootstrap, selection))
    except Exception as exc:  # noqa: BLE001 - reported in one line, not a traceback
        _fail(f"could not read the DLQ from Kafka at {bootstrap}: {exc}")


_filters = [
    click.option("--reason", help="Only letters whose reason contains this."),
    click.option("--channel", type=click.Choice(["push", "email", "sms", "inapp"])),
    click.option("--since", help="Only letters from this ISO-8601 time on."),
    click.option("--until", help="Only letters before this ISO-8601 time."),
]


def _with_filters(command: Any) -> Any:
    for option in reversed(_filters):
        command = option(command)
    return command


@main.group()
def dlq() -> None:
    """The dead-letter queue: what herald gave up on, and replaying it."""


@dlq.command("ls")
@_with_filters
def dlq_ls(reason: str | None, channel: str | None, since: str | None, until: str | None) -> None:
    """List dead letters (partition:offset, time, reason, error)."""
    _, letters = _letters(reason, channel, since, until)
    for letter in letters:
        value = letter.value
        click.echo(f"{letter.partition}:{letter.offset}\t{value['at']}\t{value['topic']}\t"
                   f"{value['reason']}\t{(value.get('error') or '')[:80]}")
    click.echo(f"{len(letters)} dead letters", err=True)


@dlq.command("show")
@click.argument("position")
def dlq_show(position: str) -> None:
    """Print one dead letter (POSITION is partition:offset, as ls prints it) as JSON."""
    partition, sep, offset = position.partition(":")
    if not sep or not partition.isdigit() or not offset.isdigit():
        raise click.BadParameter("expected PARTITION:OFFSET, e.g. 3:17", param_hint="POSITION")
    _, letters = _letters(None, None, None, None)
    found = [l for l in letters if (l.partition, l.offset) == (int(partition), int(offset))]
    if not found:
        _fail(f"no dead letter at {position}")
    click.echo(json.dumps(found[0].value, indent=2))


@dlq.command("replay")
@_with_filters
@click.option("--dry-run", is_flag=True, help="Say what would be replayed, replay nothing.")
def dlq_replay(reason: str | None, channel: str | None, since: str | None, until: str | None,
               dry_run: bool) -> None:
    """Send matching dead letters back: deliveries to their channel, events to their topic."""
    from app.deadletters import replay, replay_target

    bootstrap, letters = _letters(reason, channel, since, until)
    for letter in letters:
        topic, key, _ = replay_target(letter)
        click.echo(f"{letter.partition}:{letter.offset} -> {topic} (key {key})")
    if dry_run:
        click.echo(f"dry run: {len(letters)} would be replayed")
        return
    try:
        with _progress(len(letters), "replaying dead letters") as advance:
            count = asyncio.run(replay(bootstrap, letters, progress=advance))
    except Exception as exc:  # noqa: BLE001 - reported in one line, not a traceback
        _fail(f"could not replay to Kafka at {bootstrap}: {exc}")
    click.echo(f"replayed {count}")


@main.group()
def db() -> None:
    """PostgreSQL schema commands."""


@db.command("migrate")
def db_migrate() -> None:
    """Apply pending migrations (safe to run twice)."""
    from app.store import migrate_url

    settings = _settings()
    try:
        applied = asyncio.run(migrate_url(settings.database_url))
    except Exception as exc:  # noqa: BLE001 - reported in one line, not a traceback
        _fail(f"could not migrate PostgreSQL at {redact(settings.database_url)}: "
              f"{type(exc).__name__}: {exc}")
    click.echo("applied: " + ", ".join(applied) if applied else "schema is up to date")



@main.command()
@click.option("-n", "--workers", "size", type=click.IntRange(min=1), required=True,
              help="How many workers to run.")
@click.option("--base-port", type=click.IntRange(1, 65535), default=6066, show_default=True,
              help="Worker i serves its web API on base-port + i.")
@click.option("--drain-timeout", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="Seconds a stopping worker gets before it is killed.")
def pool(size: int, base_port: int, drain_timeout: float) -> None:
    """Run N supervised workers on this host; restart those that exit, stop all on SIGTERM."""
    from app.pool import run_pool

    if base_port + size - 1 > 65535:
        raise click.BadParameter(f"ports {base_port}..{base_port + size - 1} exceed 65535",
                                 param_hint="--base-port")
    run_pool(size, base_port=base_port, drain_seconds=drain_timeout,
             echo=lambda line: click.echo(line))


@main.group()
def tables() -> None:
    """Reading herald's tables from a running worker."""


@tables.command("get")
@click.argument("table")
@click.argument("key")
@click.option("--url", default=None,
              help="A worker's web server (default http://127.0.0.1:$HERALD_WEB_PORT).")
@click.option("--api-key", envvar="HERALD_ADMIN_API_KEY", default=None,
              help="An admin API key, for workers whose table views need one "
                   "(HERALD_TABLES_AUTH); default $HERALD_ADMIN_API_KEY.")
def tables_get(table: str, key: str, url: str | None, api_key: str | None) -> None:
    """Print the JSON value of KEY in TABLE, from the worker that owns it."""
    from app.inspect import LookupFailed, get_table_key

    base = url or f"http://127.0.0.1:{os.environ.get('HERALD_WEB_PORT') or '6066'}"
    try:
        value = get_table_key(base, table, key, api_key=api_key)
    except LookupFailed as exc:
        _fail(str(exc))
    click.echo(json.dumps(value, indent=2, sort_keys=True))


@main.group()
def offsets() -> None:
    """The consumer group's committed offsets (workers must be stopped)."""


@offsets.command("reset")
@click.option("--to-time", "to_time", required=True,
              help="ISO-8601 time with an offset: resume from the first record at or after it.")
@click.option("--topic", "topics", multiple=True,
              help="Repeatable (default: notifications, user-updates, presence).")
@click.option("--dry-run", is_flag=True, help="Print the moves, commit nothing.")
def offsets_reset(to_time: str, topics: tuple[str, ...], dry_run: bool) -> None:
    """Set the group's (HERALD_APP_ID) offsets of its source topics to a time."""
    from app.offsets import (SOURCE_TOPICS, GroupActive, UnknownTopic, hot_path_group,
                             reset_groups)

    moment = _iso(to_time, "--to-time")
    group = os.environ.get("HERALD_APP_ID") or "herald"
    try:
        bootstrap = kafka_bootstrap_from_env(os.environ)
    except SettingsError as exc:
        _fail(str(exc))
    try:
        moves, hot_moves = asyncio.run(reset_groups(bootstrap, group, topics or SOURCE_TOPICS,
                                                    int(moment.timestamp() * 1000),
                                                    dry_run=dry_run))
    except (GroupActive, UnknownTopic) as exc:
        _fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - reported in one line, not a traceback
        _fail(f"could not reset offsets on Kafka at {bootstrap}: {exc}")
    for move in moves:
        click.echo(str(move))
    click.echo(f"{'dry run: ' if dry_run else ''}{len(moves)} partitions of group {group} "
               f"{'would be reset' if dry_run else 'reset'}")
    if hot_moves:
        click.echo(f"{'dry run: ' if dry_run else ''}and {len(hot_moves)} of the hot path's "
                   f"group {hot_path_group(group)} (the same moves)")

@main.command("replay")
@click.option("--topic", required=True, help="The topic to re-feed.")
@click.option("--partition", "partitions", type=int, multiple=True,
              help="Only this partition (repeatable; default: all).")
@click.option("--from-offset", type=int, help="First offset to replay.")
@click.option("--from-time", help="First record at or after this ISO-8601 time.")
@click.option("--to-offset", type=int, help="Stop before this offset (default: the end now).")
@click.option("--to-time", help="Stop before records of this ISO-8601 time.")
@click.option("--into", help="Produce into this topic (default: the same topic).")
@click.option("--dry-run", is_flag=True, help="Count what would be replayed, produce nothing.")
@click.option("--force-new-ids", is_flag=True,
              help="Strip id and idempotency_key: a deliberate resend dedup will not suppress.")
def replay_command(topic: str, partitions: tuple[int, ...], from_offset: int | None,
                   from_time: str | None, to_offset: int | None, to_time: str | None,
                   into: str | None, dry_run: bool, force_new_ids: bool) -> None:
    """Re-feed a range of a topic by offset or time, keys and headers kept."""
    from app import replay as replaying
    from app.admin import partitions_of

    if (from_offset is None) == (from_time is None):
        raise click.UsageError("give exactly one of --from-offset or --from-time")
    if to_offset is not None and to_time is not None:
        raise click.UsageError("give at most one of --to-offset or --to-time")
    start, stop = _iso(from_time, "--from-time"), _iso(to_time, "--to-time")
    try:
        bootstrap = kafka_bootstrap_from_env(os.environ)
    except SettingsError as exc:
        _fail(str(exc))
    try:
        chosen = list(partitions) or asyncio.run(partitions_of(bootstrap, topic))
        ranges = asyncio.run(replaying.plan(
            bootstrap, topic, chosen, from_offset=from_offset, to_offset=to_offset,
            from_time=start.timestamp() if start else None,
            to_time=stop.timestamp() if stop else None))
    except ValueError as exc:
        _fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - reported in one line, not a traceback
        _fail(f"could not read {topic} from Kafka at {bootstrap}: {exc}")
    for partition, span in sorted(ranges.items()):
        click.echo(f"{topic}[{partition}] {span.start}..{span.stop}: {span.size}")
    total = sum(span.size for span in ranges.values())
    if dry_run:
        click.echo(f"dry run: {total} records would be replayed into {into or topic}")
        return
    try:
        with _progress(total, f"replaying {topic}") as advance:
            counts = asyncio.run(replaying.replay(bootstrap, topic, ranges, into=into,
                                                  force_new_ids=force_new_ids, progress=advance))
    except Exception as exc:  # noqa: BLE001 - reported in one line, not a traceback
        _fail(f"could not replay {topic} on Kafka at {bootstrap}: {exc}")
    click.echo(f"replayed {sum(counts.values())} records into {into or topic}")


@main.command(context_settings={"ignore_unknown_options": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args: tuple[str, ...]) -> None:
    """Run the benchmark harness (bench/; ``herald bench --help`` for its options)."""
    from bench.main import main as run_bench

    sys.exit(run_bench(list(args)))


if __name__ == "__main__":
    main()
