"""`bench/compare.py`: jobqueue against saq, arq, bullmq and rq on one private redis-server.

Each queue is measured by its runner module, started with the Python of the virtual
environment that holds the queue (created here on first use), against the same server,
flushed before each queue and before each measurement. The shared Redis on 6379 is
never touched.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from bench.harness import percentiles
from bench.peers.protocol import BATCH, CONCURRENCY, QUICK, URL_ENV, Sizes
from bench.report import cpu_model, load_average
from engine.embedded import EmbeddedRedis, redis_binaries, server_version

ROOT = Path(__file__).resolve().parents[2]
PEERS_HOME = ROOT / "bench" / ".peers"
RESULTS = ROOT / "bench" / "RESULTS.md"
AIM = 1.5  # issue 8: jobqueue, ledger on, against the fastest peer's end-to-end rate

# arq pins redis-py below 6 and bullmq needs 6.2 or newer, hence two environments.
# saq imports typing_extensions without declaring it; its redis extra caps redis-py below 8.
VENVS: dict[str, tuple[str, ...]] = {
    "arq": ("arq==0.28.0",),  # brings redis[hiredis]<6
    "modern": ("saq[redis,hiredis]==0.26.4", "typing_extensions", "bullmq==3.4.4", "rq==3.0.0"),
}
LEDGER_ENV = "JOBQUEUE_LEDGER_SHIP_IN_WORKER"
CODE = ("engine", "ledger", "sinks")  # what a worker runs: its state is part of the result
QUIET_LOAD = 0.5  # a 1-minute load average below this before the run: nothing else ran


@dataclass(frozen=True, slots=True)
class Contender:
    """One row of the table: a runner module, the environment it runs in, its settings."""

    key: str
    label: str
    module: str
    venv: str | None  # None: jobqueue's own .venv
    env: dict[str, str] = field(default_factory=dict)

    @property
    def is_peer(self) -> bool:
        return self.venv is not None


CONTENDERS = (
    Contender("jobqueue-on", "jobqueue, ledger on", "jobqueue", None, {LEDGER_ENV: "true"}),
    Contender("jobqueue-off", "jobqueue, ledger off", "jobqueue", None, {LEDGER_ENV: "false"}),
    Contender("saq", "saq", "saq", "modern"),
    Contender("arq", "arq", "arq", "arq"),
    Contender("bullmq", "bullmq", "bullmq", "modern"),
    Contender("rq", "rq (SimpleWorker, c=1)", "rq", "modern"),
)

# -- virtual environments -------------------------------------------------------------


def venv_python(name: str | None) -> Path:
    if name is None:
        return ROOT / ".venv" / "bin" / "python"
    return PEERS_HOME / name / "bin" / "python"


def ensure_venv(name: str) -> None:
    """Create bench/.peers/<name> and install its requirements, unless that was done for
    exactly these requirements before (a stamp file records them)."""
    folder = PEERS_HOME / name
    stamp = folder / ".requirements"
    wanted = "\n".join(VENVS[name])
    if stamp.exists() and stamp.read_text() == wanted and venv_python(name).exists():
        return
    print(f"-- creating {folder.relative_to(ROOT)}: {', '.join(VENVS[name])}", file=sys.stderr)
    subprocess.run(["python3", "-m", "venv", str(folder)], check=True)
    pip = [str(venv_python(name)), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, *VENVS[name]], check=True)
    stamp.write_text(wanted)


# -- running the contenders -----------------------------------------------------------


@dataclass
class Run:
    """The private server and the folder every runner writes into."""

    server: EmbeddedRedis
    folder: Path
    sizes: Sizes

    def fresh(self) -> None:
        with redis.Redis.from_url(self.server.url) as client:
            client.flushall()
            client.script_flush()

    def measure(self, contender: Contender) -> dict[str, Any]:
        """Run the contender's `measure` command in its environment; its JSON results."""
        self.fresh()
        out = self.folder / f"{contender.key}.json"
        command = [str(venv_python(contender.venv)), "-m", f"bench.peers.{contender.module}",
                   "measure", "--url", self.server.url, "--sizes", json.dumps(asdict(self.sizes)),
                   "--folder", str(self.folder), "--out", str(out)]  # fmt: skip
        print(f"-- {contender.label}", file=sys.stderr, flush=True)
        done = subprocess.run(command, cwd=ROOT, env=self._environment(contender), check=False)
        if done.returncode != 0:
            msg = f"{contender.label}: the runner exited with {done.returncode}"
            raise RuntimeError(msg + self._worker_logs())
        return dict(json.loads(out.read_text()))

    def _environment(self, contender: Contender) -> dict[str, str]:
        paths = [str(ROOT), os.environ.get("PYTHONPATH", "")]
        env = {**os.environ, URL_ENV: self.server.url, **contender.env,
               "JOBQUEUE_LEDGER_FOLDER": str(self.folder / f"{contender.key}-ledger"),
               "PYTHONPATH": os.pathsep.join(p for p in paths if p)}  # fmt: skip
        env.pop("VIRTUAL_ENV", None)
        return env

    def _worker_logs(self) -> str:
        tails = [f"\n{log.name}:\n" + "\n".join(log.read_text().splitlines()[-20:])
                 for log in sorted(self.folder.glob("*-worker.log"))]  # fmt: skip
        return "".join(tails)


# -- the table ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Column:
    """One measured quantity: how to read it from a runner's JSON and how to show it."""

    title: str
    read: Callable[[dict[str, Any]], float | None]
    show: Callable[[float], str]
    higher_is_better: bool


def _rate(section: str) -> Callable[[dict[str, Any]], float | None]:
    def read(result: dict[str, Any]) -> float | None:
        part = result.get(section)
        return part["jobs"] / part["seconds"] if part else None

    return read


def _pickup(index: int) -> Callable[[dict[str, Any]], float | None]:
    def read(result: dict[str, Any]) -> float | None:
        return percentiles(result["pickup"]["samples_ms"])[index]

    return read


def _memory(result: dict[str, Any]) -> float:
    return float(result["memory"]["bytes"] / result["memory"]["jobs"])


E2E_SECTIONS = {"e2e_noop": "no-op jobs", "e2e_sleep": "1 ms jobs"}


def duplicates(result: dict[str, Any]) -> int:
    """Handler runs beyond the number of jobs, over both end-to-end runs and pickup."""
    e2e = sum(result[s]["runs"] - result[s]["jobs"] for s in E2E_SECTIONS)
    return int(e2e + result["pickup"]["duplicates"])


def duplicate_lines(results: list[tuple[Contender, dict[str, Any]]]) -> list[str]:
    """Where each queue's duplicate runs happened, and what it recorded about the jobs."""
    lines = []
    for contender, result in results:
        if not duplicates(result):
            continue
        parts = [f"{label} {result[s]['runs'] - result[s]['jobs']} of {result[s]['jobs']:,}"
                 for s, label in E2E_SECTIONS.items()]  # fmt: skip
        parts.append(f"pickup {result['pickup']['duplicates']}")
        jobs = [tag for s in E2E_SECTIONS for tag in result[s]["twice"]]
        lines.append(f"Duplicate runs, {contender.label}: {', '.join(parts)}. "
                     f"Jobs that ran twice: {'; '.join(jobs) or 'none recorded'}.")  # fmt: skip
    return lines


def _per_s(value: float) -> str:
    return f"{value:,.0f}/s"


def _ms(value: float) -> str:
    return f"{value:,.2f} ms" if value < 100 else f"{value:,.0f} ms"


COLUMNS = (
    Column("enqueue, one at a time", _rate("enqueue_single"), _per_s, True),
    Column(f"enqueue, batches of {BATCH}", _rate("enqueue_batched"), _per_s, True),
    Column(f"no-op jobs e2e, c={CONCURRENCY}", _rate("e2e_noop"), _per_s, True),
    Column(f"1 ms jobs e2e, c={CONCURRENCY}", _rate("e2e_sleep"), _per_s, True),
    Column("pickup p50", _pickup(0), _ms, False),
    Column("pickup p99", _pickup(1), _ms, False),
    Column("memory per queued job", _memory, lambda v: f"{v:,.0f} B", False),
)


def aligned(rows: list[list[str]]) -> str:
    """Plain text columns: the first left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    rule = ["-" * w for w in widths]

    def line(row: list[str]) -> str:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        return "  ".join(cells).rstrip()

    return "\n".join(line(row) for row in [rows[0], rule, *rows[1:]])


def results_table(results: list[tuple[Contender, dict[str, Any]]]) -> str:
    rows = [["queue", *(c.title for c in COLUMNS), "duplicate runs"]]
    for contender, result in results:
        values = [column.read(result) for column in COLUMNS]
        cells = ["n/a" if v is None else c.show(v) for c, v in zip(COLUMNS, values, strict=True)]
        rows.append([contender.label, *cells, str(duplicates(result))])
    return aligned(rows)


def best_peers(results: list[tuple[Contender, dict[str, Any]]]) -> list[tuple[str, float] | None]:
    """For each column, the best peer (jobqueue left out) and its value."""
    best: list[tuple[str, float] | None] = []
    for column in COLUMNS:
        found = [
            (c.label, v) for c, r in results if c.is_peer and (v := column.read(r)) is not None
        ]
        pick = max if column.higher_is_better else min
        best.append(pick(found, key=lambda item: item[1]) if found else None)
    return best


def ratio(column: Column, value: float | None, best: tuple[str, float] | None) -> float | None:
    """How many times better than the best peer: above 1 beats every peer."""
    if value is None or best is None or value == 0:
        return None
    return value / best[1] if column.higher_is_better else best[1] / value


def ratios_table(results: list[tuple[Contender, dict[str, Any]]]) -> str:
    best = best_peers(results)
    rows = [["queue", *(c.title for c in COLUMNS)]]
    rows.append(["best peer", *(b[0] if b else "n/a" for b in best)])
    for contender, result in results:
        cells = []
        for column, top in zip(COLUMNS, best, strict=True):
            r = ratio(column, column.read(result), top)
            cells.append("n/a" if r is None else f"{r:.2f}x" if r >= 0.1 else f"{r:.3f}x")
        rows.append([contender.label, *cells])
    return aligned(rows)


def aim_lines(results: list[tuple[Contender, dict[str, Any]]]) -> list[str]:
    """Issue 8's aim, for both end-to-end columns."""
    mine = next((r for c, r in results if c.key == "jobqueue-on"), None)
    best = best_peers(results)
    lines = []
    for index in (2, 3):
        column, top = COLUMNS[index], best[index]
        value = column.read(mine) if mine else None
        r = ratio(column, value, top)
        if r is None or top is None or value is None:
            continue
        verdict = "met" if r >= AIM else "not met"
        lines.append(f"{column.title}: jobqueue with its ledger on runs {column.show(value)}, "
                     f"{r:.2f}x the fastest peer ({top[0]}, {column.show(top[1])}): "
                     f"the aim of {AIM}x is {verdict}.")  # fmt: skip
    return lines


# -- the report -----------------------------------------------------------------------


def machine(binary: Path, results: list[tuple[Contender, dict[str, Any]]]) -> dict[str, str]:
    details = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "CPU": cpu_model(),
        "cores": str(os.cpu_count()),
        "redis-server": f"{server_version(binary)} ({binary})",
    }
    for contender, result in results:
        env = result["environment"]
        where = f"bench/.peers/{contender.venv}" if contender.venv else f".venv; {source_state()}"
        details[contender.label] = ", ".join(f"{k} {v}" for k, v in env.items()) + f" ({where})"
    return details


def source_state() -> str:
    """The commit jobqueue was measured at, and whether its code had uncommitted changes."""
    git = ["git", "-C", str(ROOT)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()  # fmt: skip
    changed = subprocess.run([*git, "status", "--porcelain", "--", *CODE], capture_output=True,
                             text=True, check=False).stdout.splitlines()  # fmt: skip
    state = f"{len(changed)} files of {', '.join(CODE)} changed since" if changed else "clean at"
    return f"working tree {state} commit {commit or 'unknown'}"


NOTES = [
    "Every queue ran on the same private redis-server (no persistence), flushed before each "
    "measurement; one process measured it while one worker process worked.",
    f"Enqueue: one call at a time, awaited in turn; batches of {BATCH} through the queue's "
    "batch API, n/a where it has none.",
    f"End to end: the jobs are queued first, then one worker process at concurrency "
    f"{CONCURRENCY} starts; timed from the first handler start until every job ran and the "
    "queue holds nothing waiting or running (polled every 10 ms). Each handler INCRs a "
    "counter (the 1 ms one after asyncio.sleep(0.001)), so every rate includes one extra "
    "Redis round trip per job.",
    "Pickup: an idle worker, one job at a time, from the start of the enqueue call to the "
    "start of the handler (time.time() in both processes); samples are spaced by 5 ms plus a "
    "random part up to the last latency, so they do not lock to a polling worker's phase.",
    "Memory: INFO used_memory after the jobs were queued minus before (one job queued first "
    "to set up the queue's keys), per job; payload {\"n\": i}. jobqueue's includes the "
    "job's `enqueued` event in the outbox stream (the shipper deletes it once shipped).",
    "Duplicate runs: handler runs beyond the number of jobs, summed over both end-to-end runs "
    "and the pickup run, counted after a settle pause.",
    "Workers log at WARNING (no INFO line per job) and keep their defaults otherwise; every "
    "environment has hiredis, the C reply parser.",
    "jobqueue, ledger on: the worker ships its outbox to NDJSON in a temporary folder "
    "(ledger_ship_in_worker=true, the default). Ledger off: events stay in the stream for a "
    "separate `jobqueue ship`.",
]


def report(
    details: dict[str, str], results: list[tuple[Contender, dict[str, Any]]], sizes: Sizes
) -> str:
    size_list = ", ".join(f"{f.name}={getattr(sizes, f.name):,}" for f in fields(Sizes))
    notes = NOTES + [note for _, r in results for note in r["notes"]]
    lines = [
        "# jobqueue against its peers",
        "",
        "Written by `bench/compare.py` (bench/README.md says how to run it). One run on a "
        "machine shared with other work: compare rows of one run, and expect 10-20% between runs.",
        "",
        *(f"- {name}: {value}" for name, value in details.items()),
        f"- sizes: {size_list}",
        "",
        "```text",
        results_table(results),
        "```",
        "",
        "How many times better than the best peer in each column (a rate over the best rate; "
        "the best latency or memory over this one): above 1 beats every peer.",
        "",
        "```text",
        ratios_table(results),
        "```",
        "",
        *aim_lines(results),
        *duplicate_lines(results),
        "",
        "## How it was measured",
        "",
        *(f"- {note}" for note in notes),
        "",
    ]
    return "\n".join(lines)


# -- the command line -----------------------------------------------------------------

SIZE_HELP = {
    "enqueue_single": "jobs enqueued one call at a time",
    "enqueue_batched": f"jobs enqueued in batches of {BATCH}",
    "e2e_jobs": "jobs of each end-to-end run",
    "pickups": "pickup latency samples",
    "memory_jobs": "jobs of the memory measurement",
    "settle_s": "seconds to wait for duplicate runs after the last job",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/compare.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, for development")
    keys = [c.key for c in CONTENDERS]
    p.add_argument("--queues", default=",".join(keys),
                   help=f"comma-separated, from: {', '.join(keys)}")  # fmt: skip
    p.add_argument("--redis-server", type=Path, metavar="PATH",
                   help="redis-server binary (default: the newest found)")  # fmt: skip
    p.add_argument("--out", type=Path, help=f"results file (default {RESULTS.relative_to(ROOT)};"
                   " none with --quick)")  # fmt: skip
    for f in fields(Sizes):
        kind = float if f.type == "float" else int
        p.add_argument(f"--{f.name.replace('_', '-')}", type=kind, metavar="N",
                       help=f"{SIZE_HELP[f.name]} (default {f.default:,})")  # fmt: skip
    return p.parse_args(argv)


def chosen(args: argparse.Namespace) -> tuple[list[Contender], Sizes]:
    keys = [key.strip() for key in args.queues.split(",") if key.strip()]
    unknown = sorted(set(keys) - {c.key for c in CONTENDERS})
    if unknown:
        msg = f"unknown queues: {', '.join(unknown)}"
        raise SystemExit(msg)
    base = QUICK if args.quick else Sizes()
    given = {f.name: getattr(args, f.name) for f in fields(Sizes)}
    sizes = replace(base, **{k: v for k, v in given.items() if v is not None})
    return [c for c in CONTENDERS if c.key in keys], sizes


def _noise(load_before: str) -> str:
    """What the load before the run says about other work on the machine."""
    busy = float(load_before.split(maxsplit=1)[0]) >= QUIET_LOAD
    if busy:
        return f"other work was running on the {os.cpu_count()} cores, so the numbers are noisy"
    return "the machine was quiet before the run"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    contenders, sizes = chosen(args)
    for name in sorted({c.venv for c in contenders if c.venv}):
        ensure_venv(name)
    binary = args.redis_server or list(redis_binaries().values())[-1]
    load_before, started = load_average(), time.monotonic()

    with tempfile.TemporaryDirectory(prefix="jobqueue-compare-") as tmp:
        server = EmbeddedRedis(binary, Path(tmp) / "redis").start()
        try:
            run = Run(server, Path(tmp), sizes)
            results = [(c, run.measure(c)) for c in contenders]
        finally:
            server.stop()

    minutes = (time.monotonic() - started) / 60
    details = machine(binary, results) | {
        "load average (1, 5, 15 min)": f"{load_before} before, {load_average()} after, "
        f"{minutes:.1f} minutes later; {_noise(load_before)}"
    }
    text = report(details, results, sizes)
    print(text)
    out = args.out or (None if args.quick else RESULTS)
    if out:
        out.write_text(text)
        print(f"written to {out}", file=sys.stderr)
    return 0
