"""The measurement every queue goes through, the Redis keys its handlers mark, and the
command line of a runner module.

A runner module (`bench/peers/saq.py`, ...) subclasses `Peer` with the queue's own
producer calls and names its worker process; `main` then offers two commands:

    python -m bench.peers.saq measure --url URL --sizes JSON --folder DIR --out FILE
    python -m bench.peers.saq worker  --url URL

This module runs inside the peers' virtual environments, so it imports only the standard
library and redis-py (5 or newer).
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import json
import os
import platform
import random
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aredis

QUEUE = "bench"
CONCURRENCY = 32
BATCH = 100  # jobs per call of a batch enqueue API

# Tasks: every queue registers handlers under these names.
NOOP = "noop"  # counts its run, nothing else
SLEEP = "sleep_1ms"  # sleeps 1 ms (asyncio.sleep, or time.sleep in a sync worker), then counts
STAMP = "stamp"  # reports when it started, for pickup latency

# Keys the handlers write; none of them is a queue's own key. A tag is the queue's own
# id of the job, so a job that ran twice can be looked up in the queue.
RUNS_KEY = "peerbench:runs"  # INCR once per counted handler run
SEEN_KEY = "peerbench:seen"  # set of the tags of the jobs that ran
TWICE_KEY = "peerbench:twice"  # list of the tags of runs whose job had run before
FIRST_KEY = "peerbench:first"  # time.time() at the start of the first counted run
READY_KEY = "peerbench:ready"  # set by a worker process just before its loop starts
STARTED_KEY = "bench:started"  # "<tag> <time.time()>" per stamp run: bench/apps.py's key
URL_ENV = "JOBQUEUE_BENCH_REDIS_URL"  # the private server, as bench/apps.py reads it

FILL_CALLERS = 8  # concurrent single-enqueue loops filling a queue without a batch API
DONE_POLL_S = 0.01  # the measuring process's poll of the run counter and the queue
PICKUP_PAUSE_S = 0.005  # between pickup samples: the previous job is finished by then
PICKUP_WARMUP = 10
PICKUP_TIMEOUT_S = 10.0
WORKER_START_TIMEOUT_S = 60.0
WORKER_STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Sizes:
    """How many jobs (or samples) each measurement uses."""

    enqueue_single: int = 5_000
    enqueue_batched: int = 20_000
    e2e_jobs: int = 10_000
    pickups: int = 200
    memory_jobs: int = 10_000
    settle_s: float = 1.0  # after the last job: time for a duplicate run to show up


QUICK = Sizes(500, 2_000, 1_000, 30, 2_000, 0.3)


# -- the worker side ---------------------------------------------------------------


class Marks:
    """What handlers write, over a client of their own (one per worker process)."""

    def __init__(self, url: str) -> None:
        self.redis = aredis.Redis.from_url(url, decode_responses=True)

    async def run(self, tag: str) -> None:
        """Count one run of job `tag` (one round trip); the first run of all records when
        it started, a job's second run records its tag."""
        started = time.time()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.incr(RUNS_KEY)
            pipe.sadd(SEEN_KEY, tag)
            runs, new = await pipe.execute()
        if runs == 1:
            await self.redis.set(FIRST_KEY, repr(started))
        if not new:
            await self.redis.rpush(TWICE_KEY, tag)

    async def stamp(self, tag: str) -> None:
        started = time.time()  # read before any I/O
        await self.redis.rpush(STARTED_KEY, f"{tag} {started!r}")


class SyncMarks:
    """`Marks` for a worker that runs handlers synchronously (rq)."""

    def __init__(self, url: str) -> None:
        self.redis = redis.Redis.from_url(url, decode_responses=True)

    def run(self, tag: str) -> None:
        started = time.time()
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.incr(RUNS_KEY)
            pipe.sadd(SEEN_KEY, tag)
            runs, new = pipe.execute()
        if runs == 1:
            self.redis.set(FIRST_KEY, repr(started))
        if not new:
            self.redis.rpush(TWICE_KEY, tag)

    def stamp(self, tag: str) -> None:
        started = time.time()
        self.redis.rpush(STARTED_KEY, f"{tag} {started!r}")


_marks: Marks | None = None
_sync_marks: SyncMarks | None = None


def marks() -> Marks:
    """This process's `Marks`, on the server named by JOBQUEUE_BENCH_REDIS_URL."""
    global _marks
    if _marks is None:
        _marks = Marks(os.environ[URL_ENV])
    return _marks


def sync_marks() -> SyncMarks:
    global _sync_marks
    if _sync_marks is None:
        _sync_marks = SyncMarks(os.environ[URL_ENV])
    return _sync_marks


def signal_ready() -> None:
    """Tell the measuring process that this worker is about to start its loop."""
    with redis.Redis.from_url(os.environ[URL_ENV]) as client:
        client.set(READY_KEY, str(os.getpid()))


async def until_signalled() -> None:
    """Wait for SIGTERM or SIGINT (for workers that do not handle signals themselves)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


# -- the producer side -------------------------------------------------------------


class Peer(abc.ABC):
    """One queue as the measurement drives it: its producer calls and its worker."""

    name: str
    module: str  # the runner module, whose `worker` command is this queue's worker
    packages: tuple[str, ...]  # distributions whose versions the report names
    batch_api: str = ""  # the batch enqueue call, or "" when the queue has none
    notes: tuple[str, ...] = ()

    def __init__(self, url: str) -> None:
        self.url = url

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect the producer (before any measurement)."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def enqueue(self, task: str, n: int) -> str:
        """Enqueue one job with payload n; return its tag (the queue's id for it)."""

    async def enqueue_batch(self, task: str, start: int, count: int) -> None:
        """Enqueue jobs start..start+count-1 in one call of the batch API."""
        msg = f"{self.name} has no batch enqueue API"
        raise NotImplementedError(msg)

    @abc.abstractmethod
    async def pending(self) -> int:
        """Jobs the queue still holds as waiting or running."""

    async def describe(self, tag: str) -> str:
        """What the queue recorded about a job that ran twice, when it keeps that."""
        return ""

    def worker_command(self) -> list[str]:
        return [sys.executable, "-m", self.module, "worker", "--url", self.url]

    def environment(self) -> dict[str, str]:
        """What the report says about this queue: versions and settings that matter."""
        names = {name: name for name in self.packages} | {"redis-py": "redis", "hiredis": "hiredis"}
        versions = {label: _version(name) for label, name in names.items()}
        return {"Python": platform.python_version(), **versions}


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


@dataclass
class Measure:
    """Runs every measurement of one queue against the private server."""

    peer: Peer
    sizes: Sizes
    admin: aredis.Redis
    folder: Path

    async def fresh(self) -> None:
        await self.admin.flushall()

    async def all(self) -> dict[str, Any]:
        result: dict[str, Any] = {"queue": self.peer.name, "environment": self.peer.environment(),
                                  "batch_api": self.peer.batch_api, "notes": list(self.peer.notes),
                                  "sizes": asdict(self.sizes)}  # fmt: skip
        steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            ("enqueue_single", self.enqueue_single),
            ("enqueue_batched", self.enqueue_batched),
            ("memory", self.memory),
            ("e2e_noop", lambda: self.e2e(NOOP)),
            ("e2e_sleep", lambda: self.e2e(SLEEP)),
            ("pickup", self.pickup),
        ]
        for name, step in steps:
            started = time.perf_counter()
            result[name] = await step()
            _progress(f"{self.peer.name} {name} {time.perf_counter() - started:.1f}s")
        return result

    # -- enqueue and memory --------------------------------------------------------

    async def enqueue_single(self) -> dict[str, Any]:
        n = self.sizes.enqueue_single
        await self.fresh()
        await self.peer.enqueue(NOOP, -1)  # loads scripts, opens the connection
        started = time.perf_counter()
        for i in range(n):
            await self.peer.enqueue(NOOP, i)
        return {"jobs": n, "seconds": time.perf_counter() - started}

    async def enqueue_batched(self) -> dict[str, Any] | None:
        if not self.peer.batch_api:
            return None
        n = self.sizes.enqueue_batched
        await self.fresh()
        await self.peer.enqueue_batch(NOOP, -BATCH, BATCH)
        started = time.perf_counter()
        for start in range(0, n, BATCH):
            await self.peer.enqueue_batch(NOOP, start, min(BATCH, n - start))
        return {"jobs": n, "seconds": time.perf_counter() - started, "batch": BATCH}

    async def memory(self) -> dict[str, Any]:
        """used_memory growth over n queued no-op jobs, after one job set up the queue."""
        n = self.sizes.memory_jobs
        await self.fresh()
        await self.peer.enqueue(NOOP, -1)
        before = await self._used_memory()
        if self.peer.batch_api:
            for start in range(0, n, BATCH):
                await self.peer.enqueue_batch(NOOP, start, min(BATCH, n - start))
        else:
            for i in range(n):
                await self.peer.enqueue(NOOP, i)
        return {"jobs": n, "bytes": await self._used_memory() - before}

    async def _used_memory(self) -> int:
        return int((await self.admin.info("memory"))["used_memory"])

    async def fill(self, task: str, n: int) -> None:
        if self.peer.batch_api:
            for start in range(0, n, BATCH):
                await self.peer.enqueue_batch(task, start, min(BATCH, n - start))
            return

        async def caller(first: int) -> None:
            for i in range(first, n, FILL_CALLERS):
                await self.peer.enqueue(task, i)

        await asyncio.gather(*(caller(first) for first in range(FILL_CALLERS)))

    # -- end to end ----------------------------------------------------------------

    async def e2e(self, task: str) -> dict[str, Any]:
        """n jobs queued, then one worker process: from the first handler start until n
        runs are counted and the queue holds nothing; then the runs a settle later."""
        n = self.sizes.e2e_jobs
        await self.fresh()
        await self.fill(task, n)
        worker = await self.start_worker()
        try:
            finished = await self._until_done(n, worker)
            await asyncio.sleep(self.sizes.settle_s)
        finally:
            await self.stop_worker(worker)
        first = float(await self.admin.get(FIRST_KEY) or "nan")
        runs = int(await self.admin.get(RUNS_KEY) or 0)
        return {"jobs": n, "seconds": finished - first, "runs": runs,
                "twice": await self._twice()}  # fmt: skip

    async def _twice(self) -> list[str]:
        """'<tag>: <what the queue recorded>' for the first jobs that ran twice."""
        tags: list[str] = await self.admin.lrange(TWICE_KEY, 0, 9)  # type: ignore[assignment]
        return [f"{tag}: {await self.peer.describe(tag)}".rstrip(": ") for tag in tags]

    async def _until_done(self, n: int, worker: asyncio.subprocess.Process) -> float:
        deadline = time.monotonic() + max(120.0, n / 20)
        while await self.admin.scard(SEEN_KEY) < n or await self.peer.pending():
            if worker.returncode is not None or time.monotonic() > deadline:
                seen = await self.admin.scard(SEEN_KEY)
                msg = (f"{self.peer.name}: {seen} of {n} jobs ran, "
                       f"{await self.peer.pending()} jobs pending, worker exit code "
                       f"{worker.returncode} (see {self._log_path()})")  # fmt: skip
                raise RuntimeError(msg)
            await asyncio.sleep(DONE_POLL_S)
        return time.time()

    # -- pickup latency ------------------------------------------------------------

    async def pickup(self) -> dict[str, Any]:
        """One job at a time to an idle worker: enqueue call start to handler start."""
        await self.fresh()
        worker = await self.start_worker()
        samples_ms: list[float] = []
        duplicates = 0
        latency_s = 0.0
        try:
            for i in range(PICKUP_WARMUP + self.sizes.pickups):
                # A random part, up to the last latency, keeps samples from locking to
                # the phase of a worker that polls (arq): they would all wait a full poll.
                await asyncio.sleep(PICKUP_PAUSE_S + random.uniform(0, latency_s))
                sent = time.time()
                tag = await self.peer.enqueue(STAMP, i)
                started, extra = await self._started(tag)
                latency_s = started - sent
                duplicates += extra
                if i >= PICKUP_WARMUP:
                    samples_ms.append(latency_s * 1000)
            await asyncio.sleep(self.sizes.settle_s)
        finally:
            await self.stop_worker(worker)
        duplicates += await self.admin.llen(STARTED_KEY)
        return {"samples_ms": samples_ms, "duplicates": duplicates}

    async def _started(self, tag: str) -> tuple[float, int]:
        """When the stamp handler of `tag` started, and how many other stamps (late
        duplicates of earlier jobs) came first."""
        others = 0
        while True:
            reply = await self.admin.blpop([STARTED_KEY], timeout=PICKUP_TIMEOUT_S)
            if reply is None:
                msg = f"{self.peer.name}: job {tag} did not start within {PICKUP_TIMEOUT_S} s"
                raise RuntimeError(msg)
            got, _, started = str(reply[1]).rpartition(" ")
            if got == tag:
                return float(started), others
            others += 1

    # -- the worker process --------------------------------------------------------

    def _log_path(self) -> Path:
        return self.folder / f"{self.peer.name}-worker.log"

    async def start_worker(self) -> asyncio.subprocess.Process:
        """The queue's worker in its own process; returns once it is about to loop."""
        await self.admin.delete(READY_KEY)
        with self._log_path().open("ab") as log:
            worker = await asyncio.create_subprocess_exec(
                *self.peer.worker_command(), stdout=log, stderr=log
            )
        deadline = time.monotonic() + WORKER_START_TIMEOUT_S
        while not await self.admin.exists(READY_KEY):
            if worker.returncode is not None or time.monotonic() > deadline:
                await self.stop_worker(worker)
                msg = f"{self.peer.name}: the worker did not start (see {self._log_path()})"
                raise RuntimeError(msg)
            await asyncio.sleep(0.005)
        return worker

    async def stop_worker(self, worker: asyncio.subprocess.Process) -> None:
        """SIGTERM, the graceful stop of every queue here; SIGKILL after a timeout."""
        if worker.returncode is None:
            worker.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(worker.wait(), timeout=WORKER_STOP_TIMEOUT_S)
        except TimeoutError:
            worker.kill()
            await worker.wait()


def _progress(line: str) -> None:
    print(f"   {line}", file=sys.stderr, flush=True)


# -- the command line --------------------------------------------------------------


def main(make_peer: Callable[[str], Peer], run_worker: Callable[[str], None]) -> int:
    """`measure` or `worker`, for the runner module that calls this."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure", help="measure the queue, write the results as JSON")
    m.add_argument("--url", required=True)
    m.add_argument("--sizes", required=True, help="a JSON object of Sizes fields")
    m.add_argument("--folder", type=Path, required=True, help="for the worker's log")
    m.add_argument("--out", type=Path, required=True, help="the JSON results file")
    w = sub.add_parser("worker", help="run the queue's worker at concurrency 32")
    w.add_argument("--url", required=True)
    args = p.parse_args()

    os.environ[URL_ENV] = args.url  # for the handlers of the worker processes
    if args.command == "worker":
        run_worker(args.url)
        return 0
    sizes = Sizes(**json.loads(args.sizes))
    result = asyncio.run(_measure(make_peer(args.url), sizes, args.url, args.folder))
    args.out.write_text(json.dumps(result, indent=1))
    return 0


async def _measure(peer: Peer, sizes: Sizes, url: str, folder: Path) -> dict[str, Any]:
    admin = aredis.Redis.from_url(url, decode_responses=True)
    await peer.open()
    try:
        return await Measure(peer, sizes, admin, folder).all()
    finally:
        await peer.close()
        await admin.aclose()
