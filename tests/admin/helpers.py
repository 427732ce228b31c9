"""Scenes for admin tests: a live worker with jobs in flight, and a dead letter."""

from __future__ import annotations

from redis.asyncio import Redis

from engine.ops import WorkerOps
from engine.queue import JobQueue
from engine.settings import Settings
from tests.engine.helpers import registered_ops

# Long enough that a worker registered by a test stays alive for the whole test.
LIVE_TTL_MS = 60_000


async def live_worker(redis: Redis, settings: Settings, queue: str, worker: str) -> WorkerOps:
    """A registered worker whose heartbeat outlives the test."""
    lasting = settings.model_copy(update={"heartbeat_ttl_ms": LIVE_TTL_MS})
    return await registered_ops(redis, lasting, queue, worker)


async def dead_letter(jq: JobQueue, ops: WorkerOps, task: str = "report") -> str:
    """Enqueue a job, claim it with `ops` and fail it for good: call on an empty queue."""
    job_id = await jq.enqueue(ops.queue, task, {"to": "ops"})
    [job] = (await ops.claim(1)).jobs
    assert job.id == job_id
    assert await ops.fail(job, "boom", retryable=False) == "dead:non_retryable"
    return job_id
