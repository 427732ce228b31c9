"""What every measurement shares: the private server, sizes, result rows, command
counting, filling a queue, and starting workers in this process or in another."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from bench import apps
from engine.connection import create_redis
from engine.embedded import EmbeddedRedis
from engine.keys import QueueKeys
from engine.queue import JobQueue, JobSpec
from engine.scripts import SCRIPT_NAMES, source
from engine.settings import Settings
from engine.worker import Worker

ROOT = Path(__file__).resolve().parents[1]
QUEUE = "bench"
KEYS = QueueKeys(QUEUE)

FILL_BATCH = 1000  # enqueue_many batch when filling a queue before a measurement
FILL_CALLERS = 2  # enqueue_many calls in flight while filling: Python and Redis overlap
ACKED_POLL_S = 0.01  # the poll of an in-process worker's ack counter (a dict read)
START_POLL_S = 0.005  # the poll for a worker's registration
WORKER_START_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class Sizes:
    """How many jobs (or samples) each measurement uses."""

    enqueue_single: int = 5_000
    enqueue_concurrent: int = 20_000
    enqueue_batched: int = 100_000
    e2e_c1: int = 3_000
    e2e_c32: int = 20_000
    pickups: int = 500
    shallow: int = 1_000
    deep: int = 1_000_000
    claims: int = 200
    memory_jobs: int = 10_000
    ledger_events: int = 30_000
    scrub_events: int = 10_000


QUICK = Sizes(500, 2_000, 10_000, 300, 2_000, 100, 1_000, 20_000, 200, 2_000, 3_000, 1_000)


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the results table."""

    section: str
    measure: str
    result: str
    target: str = ""
    note: str = ""


@dataclass
class Bench:
    """The private server and what every measurement needs to talk to it."""

    server: EmbeddedRedis
    settings: Settings
    admin: Redis
    folder: Path
    sizes: Sizes

    async def fresh(self) -> None:
        """An empty server with zeroed command statistics."""
        await self.admin.flushall()
        await self.admin.config_resetstat()

    def with_concurrency(self, concurrency: int) -> Settings:
        return self.settings.model_copy(update={"concurrency": concurrency})

    def job_queue(self) -> JobQueue:
        return JobQueue(create_redis(self.settings), self.settings)

    def worker(self, concurrency: int) -> Worker:
        """An in-process worker for the bench queue, with its own client."""
        settings = self.with_concurrency(concurrency)
        return Worker(apps.app, [QUEUE], settings, redis=create_redis(settings))


# -- counting commands ---------------------------------------------------------------

SCRIPT_BY_SHA = {hashlib.sha1(source(name).encode()).hexdigest(): name for name in SCRIPT_NAMES}


class RoundTrips:
    """Counts the round trips one client makes: commands (scripts by name) and pipelines."""

    def __init__(self, client: Redis) -> None:
        self.calls: Counter[str] = Counter()
        send: Callable[..., Awaitable[Any]] = client.execute_command

        async def counted(*args: Any, **options: Any) -> Any:
            self.calls[_command_name(args)] += 1
            return await send(*args, **options)

        def pipeline(transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
            pipe = _CountedPipeline(
                client.connection_pool, client.response_callbacks, transaction, shard_hint
            )
            pipe.calls = self.calls
            return pipe

        client.execute_command = counted  # type: ignore[method-assign]
        client.pipeline = pipeline  # type: ignore[method-assign]


class _CountedPipeline(Pipeline):
    """A pipeline that counts itself as one round trip, named by the commands it holds."""

    calls: Counter[str]

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        names = sorted({_command_name(args) for args, _ in self.command_stack})
        if names:
            self.calls[f"pipeline({'+'.join(names)})"] += 1
        return await super().execute(raise_on_error)


def _command_name(args: tuple[Any, ...]) -> str:
    name = str(args[0]).lower()
    if name == "evalsha":
        return f"evalsha:{SCRIPT_BY_SHA.get(str(args[1]), '?')}"
    return name


@dataclass(frozen=True, slots=True)
class ServerStats:
    """What the server ran since CONFIG RESETSTAT (the bench's INFO and CONFIG left out)."""

    calls: Counter[str]  # by command; the commands scripts run are counted too
    usec: Counter[str]  # time spent, by command; a script's includes its inner commands

    @property
    def script_usec(self) -> int:
        return self.usec["evalsha"] + self.usec["eval"]


async def server_stats(admin: Redis) -> ServerStats:
    stats = await admin.info("commandstats")
    calls: Counter[str] = Counter()
    usec: Counter[str] = Counter()
    for key, value in stats.items():
        name = key.removeprefix("cmdstat_")
        if name.split("|")[0] not in ("info", "config"):
            calls[name] = int(value["calls"])
            usec[name] = int(value["usec"])
    return ServerStats(calls, usec)


def per_job(calls: Counter[str], jobs: int, top: int = 5) -> str:
    """'evalsha:claim 0.03, ...': the most frequent commands, per job."""
    return ", ".join(f"{name} {count / jobs:.2f}" for name, count in calls.most_common(top))


# -- jobs and numbers ----------------------------------------------------------------


def noop_specs(n: int) -> list[JobSpec]:
    return [JobSpec("noop", {"n": i}) for i in range(n)]


async def fill(jq: JobQueue, n: int, batch: int = FILL_BATCH) -> None:
    """Enqueue `n` no-op jobs with enqueue_many, FILL_CALLERS calls in flight."""
    sizes = [min(batch, n - start) for start in range(0, n, batch)]

    async def caller(mine: list[int]) -> None:
        for size in mine:
            await jq.enqueue_many(QUEUE, noop_specs(size))

    await asyncio.gather(*(caller(sizes[i::FILL_CALLERS]) for i in range(FILL_CALLERS)))


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f} jobs/s"


def percentiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p99 of the samples."""
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return statistics.median(samples), cuts[98]


# -- workers -------------------------------------------------------------------------


async def wait_registered(b: Bench, alive: Callable[[], bool]) -> None:
    """Until a worker is in the queue's registry (it registers just before claiming)."""
    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    while not await b.admin.scard(KEYS.workers):
        if not alive() or time.monotonic() > deadline:
            msg = f"the worker did not register (see {b.folder / 'worker.log'})"
            raise RuntimeError(msg)
        await asyncio.sleep(START_POLL_S)


async def until_acked(worker: Worker, n: int) -> tuple[float, asyncio.Task[None]]:
    """Start `worker` and wait until it acked `n` jobs: the seconds that took, and the
    still running worker task."""
    started = time.perf_counter()
    running = asyncio.create_task(worker.run())
    while worker.stats["acked"] < n and not running.done():  # noqa: ASYNC110 - a dict read
        await asyncio.sleep(ACKED_POLL_S)
    return time.perf_counter() - started, running


async def stop_worker(worker: Worker, running: asyncio.Task[None]) -> None:
    worker.stop()
    await running
    await worker.redis.aclose()


async def start_worker_process(
    b: Bench, concurrency: int, *, profile: Path | None = None, env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    """`jobqueue worker` in its own process (optionally under cProfile), with the
    environment of this one plus `env`."""
    python = [sys.executable, *(["-m", "cProfile", "-o", str(profile)] if profile else [])]
    args = ["-m", "engine.cli", "worker", QUEUE, "--app", "bench.apps",
            "--concurrency", str(concurrency), "--redis-url", b.server.url,
            "--log-level", "WARNING"]  # fmt: skip
    paths = [str(ROOT), os.environ.get("PYTHONPATH", "")]
    environment = {**os.environ, **(env or {})}
    environment["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    with (b.folder / "worker.log").open("ab") as log:
        return await asyncio.create_subprocess_exec(
            *python, *args, cwd=b.folder, env=environment, stdout=log, stderr=log
        )


async def stop_worker_process(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM: the worker stops gracefully (and cProfile writes its file)."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), timeout=30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
