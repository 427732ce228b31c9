"""`jobqueue demo`: a small end-to-end run on a private redis-server.

Jobs go through a worker (one of them fails once and is retried) and the events they
wrote to the outbox are printed. Nothing outside a temporary folder is touched.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
from pathlib import Path
from typing import Any

from engine.app import App, JobContext
from engine.embedded import EmbeddedRedis
from engine.queue import JobQueue, JobSpec
from engine.settings import load_settings
from engine.worker import Worker

QUEUE = "demo"
demo_app = App()
_flaky_seen: set[str] = set()


@demo_app.task("resize_image")
async def resize_image(ctx: JobContext, payload: Any) -> None:
    await asyncio.sleep(random.uniform(0.001, 0.01))


@demo_app.task("send_email", backoff_base_ms=50, backoff_cap_ms=100)
async def send_email(ctx: JobContext, payload: Any) -> None:
    if ctx.job_id not in _flaky_seen:
        _flaky_seen.add(ctx.job_id)
        msg = "smtp server busy"
        raise ConnectionError(msg)


async def _busy(jq: JobQueue) -> bool:
    stats = await jq.stats(QUEUE)
    return bool(stats.ready or stats.scheduled or any(stats.in_flight.values()))


async def _run(folder: Path, jobs: int) -> int:
    server = EmbeddedRedis.default(folder / "redis").start()
    try:
        settings = load_settings(redis_url=server.url, heartbeat_ttl_ms=3000,
                                 heartbeat_interval_ms=1000, idle_block_s=0.2)  # fmt: skip
        jq = await JobQueue.connect(settings)
        specs = [JobSpec("resize_image", {"n": i}, lane=("high", "default", "low")[i % 3])
                 for i in range(jobs - 1)]  # fmt: skip
        specs.append(JobSpec("send_email", {"to": "someone@example.com"}))
        await jq.enqueue_many(QUEUE, specs)
        print(f"redis-server {server.binary} on port {server.port}; enqueued {jobs} jobs")

        worker = Worker(demo_app, [QUEUE], settings, redis=jq.redis)
        running = asyncio.create_task(worker.run())
        while await _busy(jq):  # noqa: ASYNC110 - the demo watches the queue like a person would
            await asyncio.sleep(0.05)
        worker.stop()
        await running

        events = await jq.events(QUEUE, count=10_000)
        print(f"\n{len(events)} events in the outbox (stream {jq.keys(QUEUE).events}):")
        for entry_id, fields in events:
            detail = fields.get("error") or fields.get("reason") or ""
            print(f"  {entry_id:<17} {fields['type']:<18} {fields.get('job', ''):<27}"
                  f" {fields.get('lane', ''):<8} {detail}")  # fmt: skip
        stats = await jq.stats(QUEUE)
        await jq.close()
        ok = stats.ready == 0 and stats.dead == 0 and worker.stats["acked"] == jobs
        print(f"\nacked {worker.stats['acked']} of {jobs}; dead letters {stats.dead}")
        return 0 if ok else 1
    finally:
        server.stop()


def run_demo(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="jobqueue-demo-") as folder:
        return asyncio.run(_run(Path(folder), args.jobs))
