"""Handlers the benchmarks run, in the bench process and in `jobqueue worker` subprocesses
(`--app bench.apps`)."""

from __future__ import annotations

import os
import time
from typing import Any

from redis.asyncio import Redis

from engine.app import App, JobContext

# The private server's URL: bench/run.py sets it before any worker starts.
URL_ENV = "JOBQUEUE_BENCH_REDIS_URL"
# A list of "<job id> <time.time() at handler start>" entries, one per `stamp` job.
STARTED_KEY = "bench:started"

app = App()
_redis: Redis | None = None


def _client() -> Redis:
    global _redis
    if _redis is None:
        _redis = Redis.from_url(os.environ[URL_ENV], decode_responses=True)
    return _redis


async def close() -> None:
    """Close the stamp handler's client (for an in-process worker's end)."""
    global _redis
    if _redis is not None:
        await _redis.aclose()
        _redis = None


@app.task("noop")
async def noop(ctx: JobContext, payload: Any) -> None:
    """Does nothing, so what a run measures is the engine's own cost per job."""


@app.task("stamp")
async def stamp(ctx: JobContext, payload: Any) -> None:
    """Reports when the handler started; the clock is read before any I/O."""
    started = time.time()
    await _client().rpush(STARTED_KEY, f"{ctx.job_id} {started!r}")
