"""Latency: the round-trip floor, pickup by an idle worker, and claim cost against the
depth of the queue."""

from __future__ import annotations

import asyncio
import os
import platform
import time

from bench import apps
from bench.harness import (
    FILL_BATCH,
    KEYS,
    QUEUE,
    Bench,
    Row,
    fill,
    percentiles,
    rate,
    server_stats,
    start_worker_process,
    stop_worker,
    stop_worker_process,
    wait_registered,
)
from engine.connection import create_redis
from engine.ops import WorkerOps
from engine.queue import JobQueue

BASELINE_SAMPLES = 1000
PICKUP_PAUSE_S = 0.005  # between pickup samples: the previous job's ack is done by then
PICKUP_WARMUP = 10
PICKUP_TIMEOUT_S = 10
CLAIM_WARMUP = 10

# -- baseline ------------------------------------------------------------------------


async def bench_baseline(b: Bench) -> list[Row]:
    """The floor under every number: a PING round trip, and the cost of running Lua."""
    await b.fresh()
    client = create_redis(b.settings)
    trivial = client.register_script("return 1")
    await trivial()
    await b.admin.config_resetstat()
    samples_us = []
    for _ in range(BASELINE_SAMPLES):
        before = time.perf_counter()
        await client.ping()
        samples_us.append((time.perf_counter() - before) * 1e6)
        await trivial()
    lua_us = (await server_stats(b.admin)).script_usec / BASELINE_SAMPLES
    await client.aclose()
    p50, p99 = percentiles(samples_us)
    note = f"n={BASELINE_SAMPLES}; an EVALSHA of `return 1` takes {lua_us:.1f} us in Redis"
    return [Row("baseline", "PING round trip, redis-py asyncio",
                f"p50 {p50:.0f} us, p99 {p99:.0f} us", note=note)]  # fmt: skip


# -- pickup --------------------------------------------------------------------------


async def bench_pickup(b: Bench) -> list[Row]:
    """One job at a time to an idle worker: enqueue call start to handler start."""
    in_process = await _pickup_in_process(b)
    in_subprocess = await _pickup_subprocess(b)
    return [*_pickup_rows(in_process, "in-process worker"),
            *_pickup_rows(in_subprocess, "worker subprocess")]  # fmt: skip


def _pickup_rows(latencies_ms: list[float], where: str) -> list[Row]:
    p50, p99 = percentiles(latencies_ms)
    note = f"n={len(latencies_ms)}; c=32, idle: blocked on the wake list"
    return [
        Row("latency", f"pickup p50, {where}", f"{p50:.2f} ms", "< 1.5 ms", note),
        Row("latency", f"pickup p99, {where}", f"{p99:.2f} ms", "< 3 ms"),
    ]


async def _pickup_in_process(b: Bench) -> list[float]:
    await b.fresh()
    worker = b.worker(32)
    running = asyncio.create_task(worker.run())
    try:
        await wait_registered(b, lambda: not running.done())
        return await _pickups(b)
    finally:
        await stop_worker(worker, running)
        await apps.close()


async def _pickup_subprocess(b: Bench) -> list[float]:
    await b.fresh()
    proc = await start_worker_process(b, 32)
    try:
        await wait_registered(b, lambda: proc.returncode is None)
        return await _pickups(b)
    finally:
        await stop_worker_process(proc)


async def _pickups(b: Bench) -> list[float]:
    jq = b.job_queue()
    latencies_ms = []
    try:
        for i in range(PICKUP_WARMUP + b.sizes.pickups):
            await asyncio.sleep(PICKUP_PAUSE_S)
            sent = time.time()
            job_id = await jq.enqueue(QUEUE, "stamp", {"i": i})
            started = await _handler_started(b, job_id)
            if i >= PICKUP_WARMUP:
                latencies_ms.append((started - sent) * 1000)
    finally:
        await jq.close()
    return latencies_ms


async def _handler_started(b: Bench, job_id: str) -> float:
    """The time the `stamp` handler of `job_id` reported (it pushes one entry per job)."""
    reply = await b.admin.blpop([apps.STARTED_KEY], timeout=PICKUP_TIMEOUT_S)
    if reply is None:
        msg = f"the handler of job {job_id} did not start within {PICKUP_TIMEOUT_S} s"
        raise RuntimeError(msg)
    started_id, _, started = str(reply[1]).partition(" ")
    if started_id != job_id:
        msg = f"expected job {job_id} to start, got {started_id}"
        raise RuntimeError(msg)
    return float(started)


# -- claim cost against depth --------------------------------------------------------


async def bench_claim(b: Bench) -> list[Row]:
    return [await _claim_row(b, depth) for depth in (b.sizes.shallow, b.sizes.deep)]


async def _claim_row(b: Bench, depth: int) -> Row:
    await b.fresh()
    fill_s = await _fill_without_outbox(b, depth)
    jq = b.job_queue()
    ops = WorkerOps(jq.scripts, QUEUE, "bench-claimer", b.settings)
    await ops.register({"host": platform.node(), "pid": str(os.getpid())})
    for _ in range(CLAIM_WARMUP):  # the first loads the script
        await ops.claim(1)
    await b.admin.config_resetstat()

    samples_us = await _time_claims(ops, b.sizes.claims, depth)
    server_us = (await server_stats(b.admin)).script_usec / b.sizes.claims
    await jq.close()
    p50, p99 = percentiles(samples_us)
    note = (f"{b.sizes.claims} claims; {server_us:.0f} us/call inside Redis; "
            f"filled with enqueue_many({FILL_BATCH}) at {rate(depth, fill_s)}")  # fmt: skip
    return Row("claim", f"claim(1) at depth {depth:,}", f"p50 {p50:.0f} us, p99 {p99:.0f} us",
               "flat with depth", note)  # fmt: skip


async def _fill_without_outbox(b: Bench, depth: int) -> float:
    """Fill the queue (backpressure off), then trim the outbox as a shipper would: the
    claims then run with the default backpressure check against a short stream."""
    settings = b.settings.model_copy(update={"ledger_max_backlog": 0, "ledger_max_age_ms": 0})
    jq = JobQueue(create_redis(settings), settings)
    started = time.perf_counter()
    await fill(jq, depth)
    fill_s = time.perf_counter() - started
    await jq.close()
    await b.admin.xtrim(KEYS.events, maxlen=0)
    return fill_s


async def _time_claims(ops: WorkerOps, claims: int, depth: int) -> list[float]:
    samples_us = []
    for _ in range(claims):
        before = time.perf_counter()
        reply = await ops.claim(1)
        samples_us.append((time.perf_counter() - before) * 1e6)
        if len(reply.jobs) != 1:
            msg = f"claim(1) returned {len(reply.jobs)} jobs from a queue of {depth:,}"
            raise RuntimeError(msg)
    return samples_us
