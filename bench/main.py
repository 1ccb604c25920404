"""The one command: ``bash bench/run [options]`` = ``herald bench [options]`` = ``python -m bench``.

Starts its own Kafka + PostgreSQL (``herald dev up`` under ``--dir``, fresh
for every part), runs the parts asked for, writes ``bench/results/<UTC
time>.json`` and prints the Markdown summary table.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from bench import report
from bench.processes import ROOT, Stack

PARTS = ("throughput", "latency", "sockets", "recovery", "scaling")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="herald bench", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0,
                        help="Multiply every count and duration (0.05 for a smoke run).")
    parser.add_argument("--only", default=",".join(PARTS),
                        help=f"Comma-separated parts to run (default all: {','.join(PARTS)}).")
    parser.add_argument("--notifications", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--rates", default="200,1000,5000",
                        help="Latency rates per second, in rising order (a rate herald cannot "
                             "sustain ends the series).")
    parser.add_argument("--seconds", type=float, default=60.0, help="Latency run length.")
    parser.add_argument("--sessions", type=int, default=20_000)
    parser.add_argument("--online-users", type=int, default=1_000)
    parser.add_argument("--recovery-users", type=int, default=1_000_000)
    parser.add_argument("--scaling-workers", default="1,2,4")
    parser.add_argument("--scaling-notifications", type=int, default=50_000)
    parser.add_argument("--no-references", action="store_true",
                        help="Throughput of herald alone, without the five references.")
    parser.add_argument("--profile", action="store_true",
                        help="Sample the worker with py-spy during the throughput drain.")
    parser.add_argument("--dir", default=str(ROOT / ".local" / "bench-stack"),
                        help="Where the benchmark's own stack lives.")
    parser.add_argument("--kafka-port", type=int, default=59092)
    parser.add_argument("--pg-port", type=int, default=55432)
    parser.add_argument("--results", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--worker-env", action="append", default=[], metavar="NAME=VALUE",
                        help="Extra worker setting, e.g. HERALD_TICK_SECONDS=3600 (repeatable).")
    parser.add_argument("--keep-stack", action="store_true", help="Leave the stack running.")
    return parser.parse_args(argv)


def scaled(value: float, scale: float, least: int = 1) -> int:
    return max(least, round(value * scale))


def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    memory = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    return {"cores": os.cpu_count(), "cpu": model, "memory_gib": round(memory / 2**20, 1),
            "python": platform.python_version(), "kernel": platform.release(),
            "load_average": os.getloadavg()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # aiokafka logs every refused connection while the stack starts: noise here.
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    only = [part.strip() for part in args.only.split(",") if part.strip()]
    unknown = set(only) - set(PARTS)
    if unknown:
        print(f"herald bench: unknown part(s) {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    run_id = f"r{int(time.time())}"
    extra = tuple(tuple(pair.split("=", 1)) for pair in args.worker_env if "=" in pair)
    stack = Stack(Path(args.dir).resolve(), args.kafka_port, args.pg_port,
                  extra_env=extra)  # type: ignore[arg-type]
    workdir = stack.root / "runs" / stamp
    workdir.mkdir(parents=True, exist_ok=True)
    echo: Callable[[str], None] = lambda line: print(line, flush=True)
    results: dict[str, Any] = {"started": stamp, "machine": machine(), "scale": args.scale,
                               "arguments": vars(args), "parts": {}}
    try:
        for part in only:
            started = time.monotonic()
            try:
                results["parts"][part] = _run_part(part, args, stack, workdir, run_id, echo)
            except Exception as exc:  # noqa: BLE001 - one failed part must not lose the others
                traceback.print_exc()
                results["parts"][part] = {"error": f"{type(exc).__name__}: {exc}"}
            results["parts"][part]["wall_s"] = time.monotonic() - started
    finally:
        if not args.keep_stack:
            stack.down()
    results["load_average_after"] = os.getloadavg()
    path = report.write(results, Path(args.results), stamp)
    print(f"\nresults: {path} (logs in {workdir})\n")
    print(report.markdown(results))
    return 0


def _run_part(part: str, args: argparse.Namespace, stack: Stack, workdir: Path, run_id: str,
              echo: Callable[[str], None]) -> dict[str, Any]:
    from bench import workload

    scale = args.scale
    users = workload.make_users(scaled(args.users, scale, 10))
    if part == "throughput":
        from bench import throughput

        batch = workload.make_batch(run_id, scaled(args.notifications, scale, 10), users)
        profile = workdir / "profile.raw" if args.profile else None
        result = throughput.run(stack, workdir, users, batch, run_id, echo, profile=profile,
                                references=not args.no_references)
        if profile and profile.exists():
            from bench.profiling import top_frames

            result["profile"] = top_frames(profile)
        return result
    if part == "latency":
        from bench import latency

        rates = [scaled(int(r), 1) for r in args.rates.split(",")]
        return latency.run(stack, workdir, users, rates, max(2.0, args.seconds * scale),
                           run_id, echo)
    if part == "sockets":
        from bench import sockets

        return sockets.run(stack, workdir, scaled(args.sessions, scale, 10),
                           scaled(args.online_users, scale, 10), echo)
    if part == "recovery":
        from bench import recovery

        return recovery.run(stack, workdir, scaled(args.recovery_users, scale, 10), run_id, echo)
    from bench import throughput

    runs = []
    count = scaled(args.scaling_notifications, scale, 10)
    for workers in [int(n) for n in args.scaling_workers.split(",")]:
        batch = workload.make_batch(f"{run_id}w{workers}", count, users)
        echo(f"scaling: {workers} worker(s), {count:,} notifications")
        try:
            drained = throughput.herald_drain(stack.fresh(), workdir, users, batch,
                                              workers=workers)
            runs.append({"workers": workers, **drained})
        except Exception as exc:  # noqa: BLE001 - recorded, the next size still runs
            runs.append({"workers": workers, "error": f"{type(exc).__name__}: {exc}"})
    return {"runs": runs, "cores": os.cpu_count(),
            "note": f"{os.cpu_count()} cores shared by Kafka, PostgreSQL, the workers and the "
                    f"harness: more workers than cores only adds contention"}
