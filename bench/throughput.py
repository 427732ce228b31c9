"""Throughput: enqueue rates, and no-op jobs end to end through one worker process, with
what each job costs in round trips, commands, Redis time and outbox events."""

from __future__ import annotations

import asyncio
import io
import pstats
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from bench.harness import (
    QUEUE,
    Bench,
    RoundTrips,
    Row,
    ServerStats,
    fill,
    noop_specs,
    per_job,
    rate,
    server_stats,
    start_worker_process,
    stop_worker,
    stop_worker_process,
    until_acked,
    wait_registered,
)
from engine.queue import JobQueue

PRODUCERS = 32  # concurrent enqueue loops
BATCH = 100  # enqueue_many batch
DRAIN_POLL_S = 0.05  # the parent's poll of a subprocess worker's queue
E2E_TARGET = ">= 3,300 jobs/s"
NO_SHIPPING = {"JOBQUEUE_LEDGER_SHIP_IN_WORKER": "false"}
PEERS = (
    "Peers measured on this machine, no-op jobs at c=32 in one worker process: "
    "bullmq's Python port ~2,160 jobs/s, saq ~1,470 jobs/s."
)

# -- enqueue -------------------------------------------------------------------------

Producer = Callable[[JobQueue, int], Awaitable[None]]


async def _one_at_a_time(jq: JobQueue, n: int) -> None:
    for i in range(n):
        await jq.enqueue(QUEUE, "noop", {"n": i})


async def _concurrent(jq: JobQueue, n: int) -> None:
    share = n // PRODUCERS
    await asyncio.gather(*(_one_at_a_time(jq, share) for _ in range(PRODUCERS)))


async def _batched(jq: JobQueue, n: int) -> None:
    for _ in range(n // BATCH):
        await jq.enqueue_many(QUEUE, noop_specs(BATCH))


async def bench_enqueue(b: Bench) -> list[Row]:
    s = b.sizes
    runs: list[tuple[str, int, Producer]] = [
        ("enqueue, one call at a time", s.enqueue_single, _one_at_a_time),
        (f"enqueue, {PRODUCERS} concurrent producers", s.enqueue_concurrent, _concurrent),
        (f"enqueue_many, batches of {BATCH}", s.enqueue_batched, _batched),
    ]
    return [await _enqueue_row(b, label, n, produce) for label, n, produce in runs]


async def _enqueue_row(b: Bench, label: str, n: int, produce: Producer) -> Row:
    await b.fresh()
    jq = b.job_queue()
    await jq.enqueue_many(QUEUE, [])  # loads the script and registers the queue
    trips = RoundTrips(jq.redis)
    await b.admin.config_resetstat()

    started = time.perf_counter()
    await produce(jq, n)
    elapsed = time.perf_counter() - started

    server = await server_stats(b.admin)
    await jq.close()
    note = (f"n={n:,}; per job: {trips.calls.total() / n:.2f} round trips, "
            f"{server.calls.total() / n:.1f} commands run, "
            f"{server.script_usec / n:.0f} us in Redis")  # fmt: skip
    return Row("enqueue", label, rate(n, elapsed), note=note)


# -- end to end ----------------------------------------------------------------------


async def bench_e2e(b: Bench) -> list[Row]:
    runs = ((1, b.sizes.e2e_c1), (32, b.sizes.e2e_c32))
    rows = [await e2e_subprocess(b, n, concurrency) for concurrency, n in runs]
    rows.append(await e2e_subprocess(b, b.sizes.e2e_c32, 32, env=NO_SHIPPING))
    for concurrency, n in runs:
        rows += await e2e_in_process(b, n, concurrency)
    return rows


def _e2e_target(concurrency: int) -> str:
    return E2E_TARGET if concurrency == 32 else ""


async def e2e_subprocess(
    b: Bench,
    n: int,
    concurrency: int,
    *,
    profile: Path | None = None,
    env: dict[str, str] | None = None,
) -> Row:
    """Pre-enqueue `n` jobs, start a worker process, time it until the queue is drained.

    The clock starts when the worker registers, so interpreter start-up is left out.
    """
    await b.fresh()
    jq = b.job_queue()
    await fill(jq, n)
    proc = await start_worker_process(b, concurrency, profile=profile, env=env)
    try:
        await wait_registered(b, lambda: proc.returncode is None)
        started = time.perf_counter()
        while not await _drained(jq):  # noqa: ASYNC110 - the parent watches from outside
            await asyncio.sleep(DRAIN_POLL_S)
        elapsed = time.perf_counter() - started
    finally:
        await stop_worker_process(proc)
        await jq.close()
    label = f"no-op jobs, c={concurrency}, worker subprocess"
    note = f"n={n:,}"
    if env == NO_SHIPPING:
        label += ", no shipping"
        note += "; ledger_ship_in_worker=false (a separate `jobqueue ship` would ship)"
    return Row("end to end", label, rate(n, elapsed), _e2e_target(concurrency), note)


async def _drained(jq: JobQueue) -> bool:
    """Lanes, scheduled set and every processing list empty."""
    stats = await jq.stats(QUEUE)
    return stats.ready == 0 and stats.scheduled == 0 and not any(stats.in_flight.values())


async def e2e_in_process(b: Bench, n: int, concurrency: int) -> list[Row]:
    """The same in the benchmark's process, counting the worker's commands and events."""
    await b.fresh()
    jq = b.job_queue()
    await fill(jq, n)
    await jq.close()
    enqueue_events = (await server_stats(b.admin)).calls["xadd"]
    await b.admin.config_resetstat()
    worker = b.worker(concurrency)
    trips = RoundTrips(worker.redis)

    elapsed, running = await until_acked(worker, n)
    server = await server_stats(b.admin)
    await stop_worker(worker, running)
    events = enqueue_events + server.calls["xadd"]
    return WorkerRun(n, concurrency, elapsed, trips.calls, server, events).rows()


@dataclass(frozen=True, slots=True)
class WorkerRun:
    """What one in-process worker run measured."""

    jobs: int
    concurrency: int
    elapsed_s: float
    round_trips: Counter[str]
    server: ServerStats
    events: int  # outbox entries written (XADD calls): the shipper deletes shipped ones

    def rows(self) -> list[Row]:
        n, c, server = self.jobs, self.concurrency, self.server
        return [
            Row("end to end", f"no-op jobs, c={c}, in-process worker", rate(n, self.elapsed_s),
                _e2e_target(c), f"n={n:,}"),
            Row("cost", f"outbox events per job, c={c}", f"{self.events / n:.2f}",
                note="enqueue + claim + ack, worker registration amortised"),
            Row("cost", f"worker round trips per job, c={c}",
                f"{self.round_trips.total() / n:.2f}", note=per_job(self.round_trips, n)),
            Row("cost", f"worker commands run per job, c={c}", f"{server.calls.total() / n:.1f}",
                note=f"inner commands of scripts included: {per_job(server.calls, n)}"),
            Row("cost", f"worker time in Redis per job, c={c}",
                f"{server.script_usec / n:.0f} us", note="scripts only (claim, ack, heartbeat)"),
        ]  # fmt: skip


# -- profile -------------------------------------------------------------------------


async def profile_worker(b: Bench) -> str:
    """The c=32 subprocess run again, under cProfile: the worker's top functions."""
    out = b.folder / "worker-c32.pstats"
    await e2e_subprocess(b, b.sizes.e2e_c32, 32, profile=out)
    text = io.StringIO()
    stats = pstats.Stats(str(out), stream=text).strip_dirs()
    stats.sort_stats("tottime").print_stats(20)
    stats.sort_stats("cumulative").print_stats(25)
    return text.getvalue()
