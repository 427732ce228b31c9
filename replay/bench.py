"""How fast replay reads: a synthetic ledger in gzip NDJSON, a full rebuild, and a lookup of
one job against `zcat | jq` (when jq is installed).

    .venv/bin/python -m replay.bench --events 1000000 [--folder DIR] [--keep]

The ledger is written by the real NDJSON sink (rotated gzip segments and a live one), so the
files are what a deployment keeps. A folder that already holds a ledger of the same size is
reused. `run_bench` returns the numbers for a caller that wants them in its own report.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

from engine.logs import configure_logging
from ledger.event import JobEvent
from replay.history import build_history
from replay.merge import load
from replay.sources import NdjsonSource, NoProgress, ReadOptions
from replay.state import rebuild
from sinks.ndjson import NdjsonSink, iter_segments

WRITE_BATCH: Final = 5000
SEGMENT_BYTES: Final = 64 * 1024 * 1024
MARKER: Final = "bench.json"
WORKERS: Final = 16
FAIL_RATE: Final = 0.04
REAP_RATE: Final = 0.004
MAX_ATTEMPTS: Final = 3
START_MS: Final = 1_764_763_200_000


class Simulation:
    """Generates a plausible stream: enqueues, claims, heartbeats, acks, failures with
    retries and dead letters, and the odd worker death with its reap."""

    def __init__(self, queue: str, seed: int) -> None:
        self.queue = queue
        self.random = random.Random(seed)
        self.now_ms = START_MS
        self.n = 0
        self.jobs = 0
        self.ready: list[str] = []
        self.held: dict[str, dict[str, int]] = {f"w{i}": {} for i in range(WORKERS)}
        self.seq: dict[str, int] = {}
        self.failures: dict[str, int] = {}

    def event(self, kind: str, job_id: str | None = None, **fields: object) -> JobEvent:
        self.n += 1
        if self.random.random() < 0.3:
            self.now_ms += 1
            self.n = 0
        seq = None
        if job_id is not None:
            seq = self.seq[job_id] = self.seq.get(job_id, 0) + 1
        return JobEvent(
            queue=self.queue, stream_id=f"{self.now_ms}-{self.n}", type=kind, ts_ms=self.now_ms,
            job_id=job_id, seq=seq, **fields,  # type: ignore[arg-type]
        )  # fmt: skip

    def events(self) -> Iterator[JobEvent]:
        for worker in self.held:
            yield self.event("worker_registered", worker=worker, attributes={"host": "bench"})
        while True:
            yield from self.step()

    def step(self) -> Iterator[JobEvent]:
        roll = self.random.random()
        worker = self.random.choice(list(self.held))
        if roll < 0.25 or (not self.ready and roll < 0.55):
            yield self.enqueue()
        elif roll < 0.55 and len(self.held[worker]) < 8:
            yield self.claim(worker)
        elif roll < 0.65:
            yield self.heartbeat(worker)
        elif self.held[worker]:
            yield from self.finish(worker)

    def enqueue(self) -> JobEvent:
        self.jobs += 1
        job_id = f"job-{self.queue}-{self.jobs:08d}"
        self.ready.append(job_id)
        payload = json.dumps({"customer": self.jobs % 977, "to": f"user{self.jobs}@example.org"})
        return self.event(
            "enqueued", job_id, next_state="ready", lane="default", task="send_email",
            payload=payload, trace_id=f"trace-{self.jobs}",
            attributes={"max_attempts": str(MAX_ATTEMPTS), "max_crashes": "3"},
        )  # fmt: skip

    def claim(self, worker: str) -> JobEvent:
        job_id = self.ready.pop(0)
        attempt = self.failures.get(job_id, 0) + 1
        self.held[worker][job_id] = attempt
        return self.event(
            "claimed", job_id, prev_state="ready", next_state="active", lane="default",
            task="send_email", attempt=attempt, worker=worker, token=attempt,
        )  # fmt: skip

    def heartbeat(self, worker: str) -> JobEvent:
        jobs = ",".join(self.held[worker])
        return self.event("heartbeat", worker=worker, attributes={"jobs": jobs, "ttl_ms": "30000"})

    def finish(self, worker: str) -> Iterator[JobEvent]:
        job_id, attempt = next(iter(self.held[worker].items()))
        del self.held[worker][job_id]
        roll = self.random.random()
        if roll < REAP_RATE:
            yield from self.reap(worker, job_id, attempt)
        elif roll < REAP_RATE + FAIL_RATE:
            yield from self.fail(worker, job_id, attempt)
        else:
            run_ms = str(self.random.randint(5, 900))
            yield self.done(
                "acked", job_id, attempt, worker, prev_state="active", next_state="done",
                attributes={"run_ms": run_ms},
            )  # fmt: skip

    def done(
        self, kind: str, job_id: str, attempt: int, worker: str | None, **fields: object
    ) -> JobEvent:
        return self.event(kind, job_id, lane="default", task="send_email", attempt=attempt,
                          worker=worker, token=attempt if worker else None, **fields)  # fmt: skip

    def fail(self, worker: str, job_id: str, attempt: int) -> Iterator[JobEvent]:
        failures = self.failures[job_id] = self.failures.get(job_id, 0) + 1
        error = f"ConnectionError: smtp timeout after {self.random.randint(1, 30)}s"
        yield self.done(
            "failed", job_id, attempt, worker, prev_state="active", next_state="failed",
            error=error, attributes={"failures": str(failures), "run_ms": "30000"},
        )  # fmt: skip
        if failures >= MAX_ATTEMPTS:
            yield self.done("dead_lettered", job_id, attempt, None, prev_state="failed",
                            next_state="dead", reason="retries_exhausted", error=error)  # fmt: skip
            return
        self.ready.append(job_id)
        yield self.done("retried", job_id, attempt, None, prev_state="failed", next_state="ready",
                        attributes={"delay_ms": "0"})  # fmt: skip

    def reap(self, worker: str, job_id: str, attempt: int) -> Iterator[JobEvent]:
        held = [job_id, *self.held[worker]]
        for other in held:
            self.ready.insert(0, other)
            yield self.done("reaped", other, self.held[worker].get(other, attempt), worker,
                            prev_state="active", next_state="ready",
                            attributes={"crashes": "1", "reaper": "w0"})  # fmt: skip
        self.held[worker] = {}
        yield self.event("worker_reaped", worker=worker,
                         attributes={"jobs": ",".join(held), "reaper": "w0"})  # fmt: skip
        yield self.event("worker_registered", worker=worker, attributes={"host": "bench"})


def synthetic_events(count: int, *, queues: int = 2, seed: int = 7) -> list[JobEvent]:
    """`count` events over `queues` queues, interleaved as shippers would write them."""
    streams = [Simulation(f"q{i}", seed + i).events() for i in range(queues)]
    return [next(streams[i % queues]) for i in range(count)]


async def write_ledger(folder: Path, count: int, *, seed: int = 7) -> None:
    """Write a synthetic ledger with the real sink: rotated gzip segments and a live one."""
    sink = NdjsonSink(folder, fsync="never", max_file_bytes=SEGMENT_BYTES)
    streams = [Simulation(f"q{i}", seed + i).events() for i in range(2)]
    written = 0
    while written < count:
        size = min(WRITE_BATCH, count - written)
        await sink.write([next(streams[(written + i) % 2]) for i in range(size)])
        written += size
    await sink.close()
    (folder / MARKER).write_text(json.dumps({"events": count, "seed": seed}))


@dataclass(slots=True)
class BenchResult:
    events: int
    bytes_on_disk: int
    full_read_s: float
    rebuild_s: float
    job_lookup_s: float
    job_events: int
    zcat_jq_s: float | None
    zcat_only_s: float | None


def run_bench(folder: Path, count: int, *, job_id: str | None = None) -> BenchResult:
    """Time a full rebuild and a lookup of one job on the ledger in `folder` (written first
    when it does not hold `count` events already)."""
    if not _holds(folder, count):
        shutil.rmtree(folder, ignore_errors=True)
        asyncio.run(write_ledger(folder, count))
    job_id = job_id or f"job-q0-{count // 40:08d}"

    started = time.perf_counter()
    ledger = load([NdjsonSource(folder)], ReadOptions(), NoProgress)
    read_s = time.perf_counter() - started
    rebuild(ledger.events)
    rebuild_s = time.perf_counter() - started - read_s
    del ledger

    started = time.perf_counter()
    found = _lookup(folder, job_id)
    lookup_s = time.perf_counter() - started

    jq_s, zcat_s = _zcat_jq(folder, job_id)
    size = sum(path.stat().st_size for path in iter_segments(folder))
    return BenchResult(count, size, read_s, rebuild_s, lookup_s, found, jq_s, zcat_s)


def _lookup(folder: Path, job_id: str) -> int:
    ledger = load([NdjsonSource(folder)], ReadOptions(job_id=job_id), NoProgress)
    history = build_history(ledger.events[0].queue, job_id, ledger.events, from_start=True)
    return len(history.rows)


def _holds(folder: Path, count: int) -> bool:
    try:
        return int(json.loads((folder / MARKER).read_text())["events"]) == count
    except (OSError, ValueError, KeyError):
        return False


def _zcat_jq(folder: Path, job_id: str) -> tuple[float | None, float | None]:
    """`zcat | jq select(...)` over the same files, and `zcat` alone, in seconds."""
    if shutil.which("jq") is None or shutil.which("zcat") is None:
        return None, None
    files = " ".join(f"'{path}'" for path in iter_segments(folder))
    cat = f"zcat -f {files}"
    jq = f"{cat} | jq -c 'select(.job_id == \"{job_id}\")' > /dev/null"
    return _shell_s(jq), _shell_s(f"{cat} > /dev/null")


def _shell_s(command: str) -> float:
    started = time.perf_counter()
    subprocess.run(["sh", "-c", command], check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument(
        "--folder", type=Path, help="where the ledger is kept (default: a temp folder)"
    )
    args = parser.parse_args()
    configure_logging("WARNING")
    folder = args.folder or Path(tempfile.mkdtemp(prefix="replay-bench-")) / "ledger"
    result = run_bench(folder, args.events)
    for name, value in asdict(result).items():
        shown = f"{value:.2f} s" if isinstance(value, float) else str(value)
        print(f"{name:>16}  {shown}")


if __name__ == "__main__":
    main()
