"""Helpers for the cluster and security tests: run a worker, read what it shipped."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from engine.worker import Worker
from ledger.event import JobEvent
from sinks.ndjson import read_events


def shipped_events(root: Path) -> list[JobEvent]:
    """Every event in the NDJSON folders under `root` (one folder per worker or shipper)."""
    events: list[JobEvent] = []
    for folder in sorted({path.parent for path in root.rglob("ledger-*.ndjson*")}):
        for result in read_events(folder):
            assert isinstance(result, JobEvent), f"unreadable ledger line: {result}"
            events.append(result)
    return events


def count_by_job(events: list[JobEvent], event_type: str) -> Counter[tuple[str, str]]:
    """How many events of `event_type` each (queue, job id) has."""
    return Counter((e.queue, e.job_id or "") for e in events if e.type == event_type)


async def wait_until(predicate: Callable[[], Awaitable[bool]], timeout_s: float = 20.0) -> None:
    """Poll `predicate` until it holds; fail the test with a clear message otherwise."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"condition not met within {timeout_s:g}s")
        await asyncio.sleep(0.05)


async def run_until_acked(worker: Worker, count: int) -> None:
    """Run `worker` until it acked `count` jobs, then stop it gracefully."""
    task = asyncio.create_task(worker.run())

    async def acked() -> bool:
        if task.done():
            task.result()  # a worker that stopped on its own: show why
        return worker.stats["acked"] >= count

    try:
        await wait_until(acked)
    finally:
        worker.stop()
        await task
