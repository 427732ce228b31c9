"""The handlers `jobqueue demo` runs in its worker processes."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from engine.app import App, JobContext

app = App()


@app.task("resize_image")
async def resize_image(ctx: JobContext, payload: Any) -> None:
    """Ordinary work: a few milliseconds each."""
    await asyncio.sleep(random.uniform(0.001, 0.004))


@app.task("send_email", max_attempts=5, backoff_base_ms=200, backoff_cap_ms=400)
async def send_email(ctx: JobContext, payload: Any) -> None:
    """Flaky: the mail server is busy for the first two attempts."""
    if ctx.attempt < 3:
        msg = f"smtp server busy (attempt {ctx.attempt})"
        raise ConnectionError(msg)


@app.task("parse_invoice", max_attempts=3, backoff_base_ms=100, backoff_cap_ms=200)
async def parse_invoice(ctx: JobContext, payload: Any) -> None:
    """Poison: this invoice can never be parsed, so it ends in the dead-letter queue."""
    msg = f"invoice {payload['invoice']} has no total line"
    raise ValueError(msg)


@app.task("render_report")
async def render_report(ctx: JobContext, payload: Any) -> None:
    """Slow: long enough for the demo to kill the worker running it."""
    await asyncio.sleep(float(payload.get("seconds", 2.0)))
