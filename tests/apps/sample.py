"""Handlers used by worker tests, in-process and in worker subprocesses.

Each handler records its runs in Redis (`runs:<job id>` counters, `running:<job id>`
markers) so tests can see executions from outside the worker process.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from typing import Any

from redis.asyncio import Redis

from engine.app import App, JobContext, Retry

app = App()

_redis: Redis | None = None


def _client() -> Redis:
    global _redis
    if _redis is None:
        _redis = Redis.from_url(os.environ["JOBQUEUE_TEST_REDIS_URL"], decode_responses=True)
    return _redis


async def _record(ctx: JobContext) -> None:
    r = _client()
    holder = await r.set(f"running:{ctx.job_id}", ctx.worker_id, nx=True, px=60_000)
    await r.incr(f"runs:{ctx.job_id}")
    if not holder:
        await r.incr("overlaps")


async def _done(ctx: JobContext) -> None:
    await _client().delete(f"running:{ctx.job_id}")


@app.task("noop")
async def noop(ctx: JobContext, payload: Any) -> None:
    await _record(ctx)
    await _done(ctx)


@app.task("sleep")
async def sleep(ctx: JobContext, payload: Any) -> None:
    await _record(ctx)
    await asyncio.sleep(float(payload.get("s", 0.01)))
    await _done(ctx)


@app.task("random_sleep")
async def random_sleep(ctx: JobContext, payload: Any) -> None:
    await _record(ctx)
    await asyncio.sleep(random.uniform(0, float(payload.get("max_s", 0.01))))
    await _done(ctx)


@app.task("blocking")
def blocking(ctx: JobContext, payload: Any) -> str:
    time.sleep(float(payload.get("s", 0.01)))
    return "done"


@app.task("always_fails", max_attempts=3)
async def always_fails(ctx: JobContext, payload: Any) -> None:
    msg = f"attempt {ctx.attempt} failed"
    raise RuntimeError(msg)


@app.task("not_retryable", dont_retry_on=(KeyError,))
async def not_retryable(ctx: JobContext, payload: Any) -> None:
    raise KeyError(payload.get("key", "missing"))


@app.task("asks_for_retry", max_attempts=5)
async def asks_for_retry(ctx: JobContext, payload: Any) -> None:
    if ctx.attempt < 2:
        raise Retry(delay_s=float(payload.get("delay_s", 0.2)))


@app.task("slow_first")
async def slow_first(ctx: JobContext, payload: Any) -> None:
    """Hangs on its first attempt (long enough to be killed), finishes on later ones."""
    await _record(ctx)
    if ctx.attempt == 1:
        await asyncio.sleep(float(payload.get("s", 30)))
    await _done(ctx)


@app.task("switch", max_attempts=1)
async def switch(ctx: JobContext, payload: Any) -> None:
    """Fails while the Redis key `fail:switch` exists, succeeds otherwise."""
    await _client().incr("switch_runs")
    if await _client().exists("fail:switch"):
        msg = "downstream unavailable"
        raise ConnectionError(msg)


@app.task("charge", idempotency_key=lambda payload: f"order-{payload['order']}")
async def charge(ctx: JobContext, payload: Any) -> None:
    """Charges an order once, whatever the number of jobs asking for it."""
    ctx.outbox.publish("charges", {"order": payload["order"]})
    await ctx.commit(("INCR", f"charged:{payload['order']}"))
    if payload.get("hang"):
        await asyncio.sleep(60)


@app.task("publish_then_fail", max_attempts=1)
async def publish_then_fail(ctx: JobContext, payload: Any) -> None:
    ctx.outbox.publish("never", {"job": ctx.job_id})
    msg = "after publishing"
    raise RuntimeError(msg)


@app.task("publish", idempotent=True)
async def publish(ctx: JobContext, payload: Any) -> None:
    ctx.outbox.publish("greetings", {"hello": payload.get("name", "world")})
    await _client().incr(f"published_runs:{ctx.job_id}")
