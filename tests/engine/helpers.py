"""Small helpers for engine tests: read the outbox, build ops for a fake worker id."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from engine.keys import QueueKeys
from engine.ops import WorkerOps
from engine.scripts import Scripts
from engine.settings import Settings


async def events(redis: Redis, queue: str, namespace: str = "jobqueue") -> list[dict[str, Any]]:
    """Every outbox entry of the queue, oldest first, with its stream id under `id`."""
    entries = await redis.xrange(QueueKeys(queue, namespace).events)
    return [{"id": entry_id, **fields} for entry_id, fields in entries]


async def job_events(redis: Redis, queue: str, job_id: str) -> list[dict[str, Any]]:
    return [e for e in await events(redis, queue) if e.get("job") == job_id]


async def types(redis: Redis, queue: str, job_id: str | None = None) -> list[str]:
    found = await (job_events(redis, queue, job_id) if job_id else events(redis, queue))
    return [e["type"] for e in found]


async def registered_ops(redis: Redis, settings: Settings, queue: str, worker: str) -> WorkerOps:
    """Transitions for a worker id that has registered (so it holds a heartbeat)."""
    ops = WorkerOps(Scripts(redis), queue, worker, settings)
    await ops.register({"host": "test"})
    return ops
