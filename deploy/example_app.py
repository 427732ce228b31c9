"""The handlers the worker of docker-compose.yml runs: one task per queue.

Enqueue jobs from inside the deployment (Redis is not published on the host):

    docker compose exec worker jobqueue enqueue emails send_welcome \\
        --payload '{"to": "ada@example.com", "name": "Ada"}'
    docker compose exec worker jobqueue enqueue reports build_report \\
        --payload '{"day": "2026-01-31", "rows": 5000}'
"""

from __future__ import annotations

import asyncio
from typing import Any

from engine import App, JobContext, Retry

app = App()

# Stands in for the mail service's API call.
SEND_DELAY_S = 0.05


@app.task("send_welcome", max_attempts=5, backoff_base_ms=500, dont_retry_on=(ValueError,))
async def send_welcome(ctx: JobContext, payload: dict[str, Any]) -> None:
    """Send a welcome email. A payload without an address is dead-lettered at once."""
    address = payload.get("to")
    if not isinstance(address, str) or "@" not in address:
        msg = f"the payload needs an email address under 'to', not {address!r}"
        raise ValueError(msg)
    if payload.get("flaky") and ctx.attempt == 1:
        raise Retry(delay_s=2.0, reason="the mail service asked us to come back later")
    await asyncio.sleep(SEND_DELAY_S)
    # The domain only: addresses are personal data, and logs are not scrubbed like the ledger.
    ctx.log.info("welcome_sent", domain=address.rpartition("@")[2])


@app.task("build_report", max_attempts=3)
def build_report(ctx: JobContext, payload: dict[str, Any]) -> None:
    """Build a daily report: plain (blocking) code, which the worker runs in a thread."""
    rows = int(payload.get("rows", 1000))
    checksum = sum(n * n for n in range(rows)) % 1_000_003
    ctx.log.info("report_built", day=payload.get("day"), rows=rows, checksum=checksum)
