"""`make bench`: run the chosen sections on a private redis-server and report the table.

The server is started here in a temporary folder (the same binary for every row) and
flushed, with its statistics reset, before each measurement. The shared Redis on 6379
is never touched.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import fields, replace
from pathlib import Path

from bench import apps
from bench.harness import QUICK, ROOT, Bench, Row, Sizes
from bench.latency import bench_baseline, bench_claim, bench_pickup
from bench.ledger import bench_ledger
from bench.memory import bench_memory
from bench.report import load_average, machine, results_markdown, table
from bench.throughput import bench_e2e, bench_enqueue, profile_worker
from engine.connection import create_redis
from engine.embedded import EmbeddedRedis, redis_binaries
from engine.logs import configure_logging
from engine.settings import load_settings

RESULTS = ROOT / "bench" / "RESULTS-engine.md"
LEDGER_FOLDER_ENV = "JOBQUEUE_LEDGER_FOLDER"

SECTIONS: dict[str, Callable[[Bench], Awaitable[list[Row]]]] = {
    "baseline": bench_baseline,
    "enqueue": bench_enqueue,
    "e2e": bench_e2e,
    "pickup": bench_pickup,
    "memory": bench_memory,
    "claim": bench_claim,
    "ledger": bench_ledger,
}

SIZE_HELP = {
    "enqueue_single": "jobs enqueued one call at a time",
    "enqueue_concurrent": "jobs enqueued by 32 concurrent loops",
    "enqueue_batched": "jobs enqueued in enqueue_many batches of 100",
    "e2e_c1": "jobs through a worker at concurrency 1",
    "e2e_c32": "jobs through a worker at concurrency 32",
    "pickups": "pickup latency samples",
    "shallow": "queue depth of the first claim measurement",
    "deep": "queue depth of the second claim measurement",
    "claims": "timed claim(1) calls at each depth",
    "memory_jobs": "jobs of the memory measurement",
    "ledger_events": "outbox events shipped to each sink",
    "scrub_events": "events scrubbed in each timed run",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, for development")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"comma-separated, from: {', '.join(SECTIONS)}")  # fmt: skip
    p.add_argument("--redis-server", type=Path, metavar="PATH",
                   help="redis-server binary (default: the newest found)")  # fmt: skip
    p.add_argument("--profile", action="store_true",
                   help="then profile a c=32 worker subprocess with cProfile")  # fmt: skip
    p.add_argument("--out", type=Path, help=f"results file (default {RESULTS.relative_to(ROOT)};"
                   " none with --quick)")  # fmt: skip
    for f in fields(Sizes):
        p.add_argument(f"--{f.name.replace('_', '-')}", type=int, metavar="N",
                       help=f"{SIZE_HELP[f.name]} (default {f.default:,})")  # fmt: skip
    return p.parse_args(argv)


def chosen_sizes(args: argparse.Namespace) -> Sizes:
    base = QUICK if args.quick else Sizes()
    given = {f.name: getattr(args, f.name) for f in fields(Sizes)}
    return replace(base, **{k: v for k, v in given.items() if v is not None})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("WARNING", json_lines=True)
    names = [name.strip() for name in args.sections.split(",") if name.strip()]
    unknown = sorted(set(names) - set(SECTIONS))
    if unknown:
        print(f"unknown sections: {', '.join(unknown)}", file=sys.stderr)
        return 2
    sizes = chosen_sizes(args)
    binary = args.redis_server or list(redis_binaries().values())[-1]
    load_before = load_average()

    with tempfile.TemporaryDirectory(prefix="jobqueue-bench-") as tmp:
        server = EmbeddedRedis(binary, Path(tmp) / "redis").start()
        try:
            rows, hotspots = asyncio.run(_run(server, Path(tmp), sizes, names, args.profile))
        finally:
            server.stop()

    details = machine(binary) | {"load average (1, 5, 15 min)": f"{load_before} before, "
                                 f"{load_average()} after"}  # fmt: skip
    print("\n".join(f"{name}: {value}" for name, value in details.items()))
    print(table(rows))
    print(hotspots, end="")
    out = args.out or (None if args.quick else RESULTS)
    if out:
        out.write_text(results_markdown(rows, details, sizes))
        print(f"written to {out}")
    return 0


async def _run(
    server: EmbeddedRedis, folder: Path, sizes: Sizes, names: list[str], profile: bool
) -> tuple[list[Row], str]:
    os.environ[apps.URL_ENV] = server.url  # for the stamp handler, here and in subprocesses
    os.environ[LEDGER_FOLDER_ENV] = str(folder / "ledger")  # where workers ship the outbox
    settings = load_settings(redis_url=server.url)
    admin = create_redis(settings)
    try:
        b = Bench(server, settings, admin, folder, sizes)
        rows = [row for name in names for row in await _section(b, name)]
        return rows, await profile_worker(b) if profile else ""
    finally:
        await admin.aclose()


async def _section(b: Bench, name: str) -> list[Row]:
    print(f"-- {name}", file=sys.stderr, end=" ", flush=True)
    started = time.perf_counter()
    rows = await SECTIONS[name](b)
    print(f"{time.perf_counter() - started:.1f}s", file=sys.stderr, flush=True)
    return rows
