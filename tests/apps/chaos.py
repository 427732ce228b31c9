"""The chaos test's handlers: an idempotent per-job counter with random pauses."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from engine.app import App, JobContext

app = App()


@app.task("count_once", idempotent=True, max_attempts=10)
async def count_once(ctx: JobContext, payload: Any) -> None:
    """Increment count:<job id> through the idempotent path, pausing on both sides."""
    await asyncio.sleep(random.uniform(0, 0.02))
    ctx.outbox.publish("counted", {"job": ctx.job_id})
    await ctx.commit(("INCR", f"count:{ctx.job_id}"))
    await asyncio.sleep(random.uniform(0, 0.02))
