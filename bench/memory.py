"""Redis memory per job: queued (with and without its outbox event) and finished."""

from __future__ import annotations

from redis.asyncio import Redis

from bench.harness import KEYS, QUEUE, Bench, Row, noop_specs, stop_worker, until_acked

BATCH = 100


async def bench_memory(b: Bench) -> list[Row]:
    """used_memory growth per job, measured after enqueueing and after working them off."""
    n = b.sizes.memory_jobs
    await b.fresh()
    jq = b.job_queue()
    await jq.enqueue_many(QUEUE, [])  # the script cache and the queue registry
    before = await _used_memory(b.admin)
    for _ in range(n // BATCH):
        await jq.enqueue_many(QUEUE, noop_specs(BATCH))
    await jq.close()
    queued = await _used_memory(b.admin)
    await b.admin.xtrim(KEYS.events, maxlen=0)
    trimmed = await _used_memory(b.admin)

    worker = b.worker(32)
    _, running = await until_acked(worker, n)
    await stop_worker(worker, running)
    await b.admin.xtrim(KEYS.events, maxlen=0)
    finished = await _used_memory(b.admin)

    retention_h = b.settings.job_retention_ms / 3_600_000
    note = f'n={n:,}, payload {{"n": i}}; job hash, lane entry and enqueued event'
    return [
        Row("memory", "per queued job, outbox included", f"{(queued - before) / n:,.0f} B",
            note=note),
        Row("memory", "per queued job, outbox trimmed", f"{(trimmed - before) / n:,.0f} B",
            note="after XTRIM of the events stream to 0 (what a shipper leaves)"),
        Row("memory", "per acked job, outbox trimmed", f"{(finished - before) / n:,.0f} B",
            note=f"finished job records stay {retention_h:g} h (job_retention_ms)"),
    ]  # fmt: skip


async def _used_memory(admin: Redis) -> int:
    return int((await admin.info("memory"))["used_memory"])
