"""Handlers for the cluster tests; each records its runs in the test process's memory."""

from __future__ import annotations

from collections import Counter
from typing import Any

from engine.app import App, JobContext

app = App()
runs: Counter[tuple[str, str]] = Counter()


@app.task("record")
async def record(ctx: JobContext, payload: Any) -> None:
    runs[(ctx.queue, ctx.job_id)] += 1


@app.task("fail_first", max_attempts=3)
async def fail_first(ctx: JobContext, payload: Any) -> None:
    """Fails its first attempt, so every job also goes through a retry."""
    runs[(ctx.queue, ctx.job_id)] += 1
    if ctx.attempt == 1:
        msg = "the first attempt always fails"
        raise RuntimeError(msg)
