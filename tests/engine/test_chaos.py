"""The chaos test: workers killed with SIGKILL at random, and still every effect once.

Three worker processes handle 1,000 jobs whose handler increments a per-job counter
through the idempotent path; workers are killed at random moments and restarted. At the
end every counter is exactly 1, every job's history ends in `acked` or `deduplicated`,
no message was published twice, nothing is left in processing lists or streams, and
`replay` finds no anomaly in the ledger.
Randomness is seeded; the seed is printed (and named in every assertion) so a failure
can be replayed with CHAOS_SEED=<seed>.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from engine.queue import JobQueue, JobSpec
from engine.settings import Settings
from ledger.event import JobEvent
from ledger.shipper import Shipper
from replay.cli import main as replay_main
from sinks.ndjson import NdjsonSink, read_events
from sinks.scrub import Scrubber
from tests.engine.conftest import wait_for
from tests.redis_server import RedisServer

Q = "chaos"
JOBS = 1000
WORKERS = 3
KILLS = 6
LIFECYCLE_END = {"acked", "deduplicated"}


def start_worker(url: str, ledger: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "JOBQUEUE_REDIS_URL": url,
        "JOBQUEUE_HEARTBEAT_TTL_MS": "900",
        "JOBQUEUE_HEARTBEAT_INTERVAL_MS": "300",
        "JOBQUEUE_LEDGER_SHIP_IN_WORKER": "true",
        "JOBQUEUE_LEDGER_FOLDER": str(ledger),
        "JOBQUEUE_LEDGER_CLAIM_IDLE_MS": "500",
        "JOBQUEUE_CONCURRENCY": "8",
    }
    command = [sys.executable, "-m", "engine.cli", "worker", Q, "--app", "tests.apps.chaos"]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def busy_worker(
    jq: JobQueue, workers: list[subprocess.Popen[bytes]], rng: random.Random
) -> int:
    """Wait until some worker process holds jobs; return one such worker, at random."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        in_flight = (await jq.stats(Q)).in_flight
        busy = [
            i for i, w in enumerate(workers)
            if any(f"-{w.pid}-" in worker_id and n for worker_id, n in in_flight.items())
        ]  # fmt: skip
        if busy:
            return rng.choice(busy)
        await asyncio.sleep(0.02)
    pytest.fail("no worker took a job within 30 s")


async def unfinished(jq: JobQueue) -> int:
    stats = await jq.stats(Q)
    return stats.ready + stats.scheduled + sum(stats.in_flight.values())


async def ship_the_rest(redis: Redis, settings: Settings, folder: Path) -> None:
    """Ship what killed workers' shippers held (claimed again once idle)."""
    sink = NdjsonSink(folder)
    shipper = Shipper(redis, settings, sink, Scrubber(), [Q], consumer="final",
                      claim_idle_ms=500)  # fmt: skip
    deadline = time.monotonic() + 30
    while await redis.xlen(f"jobqueue:{{{Q}}}:events") and time.monotonic() < deadline:
        await shipper.ship_once(Q, block_ms=100)
        await asyncio.sleep(0.1)
    await sink.close()


def ledger_events(root: Path) -> dict[str, JobEvent]:
    found: dict[str, JobEvent] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for item in read_events(folder):
            if isinstance(item, JobEvent):
                found[item.event_id] = item
    return found


def replay_anomalies(root: Path, capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    """What `replay incident` flags over the whole ledger (every worker's folder)."""
    sources = [arg for p in sorted(root.iterdir()) if p.is_dir() for arg in ("--source", str(p))]
    capsys.readouterr()
    code = replay_main(["incident", "--since", "-1h", "--json", *sources])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    found: list[dict[str, Any]] = report["anomalies"]
    return found


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_killed_workers_never_apply_an_effect_twice(
    redis: Redis,
    redis_server: RedisServer,
    settings: Settings,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seed = int(os.environ.get("CHAOS_SEED", random.randrange(1_000_000)))
    print(f"chaos seed {seed}")
    rng = random.Random(seed)
    ledger = tmp_path / "ledger"
    jq = JobQueue(redis, settings)
    ids: list[str] = []
    for _ in range(0, JOBS, 250):
        ids += await jq.enqueue_many(Q, [JobSpec("count_once") for _ in range(250)])

    workers = [start_worker(redis_server.url, ledger) for _ in range(WORKERS)]
    try:
        for _ in range(KILLS):
            victim = await busy_worker(jq, workers, rng)
            await asyncio.sleep(rng.uniform(0, 0.05))
            workers[victim].send_signal(signal.SIGKILL)
            workers[victim].wait()
            workers[victim] = start_worker(redis_server.url, ledger)

        async def all_done() -> bool:
            return await unfinished(jq) == 0

        await wait_for(all_done, timeout_s=120, step_s=0.2)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(timeout=30)

    counts = await redis.mget([f"count:{job_id}" for job_id in ids])
    assert Counter(counts) == {"1": JOBS}, f"seed {seed}: counters {Counter(counts)}"
    stats = await jq.stats(Q)
    assert (stats.ready, stats.scheduled, stats.dead) == (0, 0, 0), f"seed {seed}"
    assert not any(stats.in_flight.values()), f"seed {seed}: {stats.in_flight}"

    await ship_the_rest(redis, settings, ledger / "final")
    assert await redis.xlen(f"jobqueue:{{{Q}}}:events") == 0, f"seed {seed}"
    histories: dict[str, list[JobEvent]] = defaultdict(list)
    for event in sorted(ledger_events(ledger).values(), key=lambda e: e.order_key):
        if event.job_id:
            histories[event.job_id].append(event)
    assert set(ids) <= set(histories), f"seed {seed}: jobs missing from the ledger"
    for job_id in ids:
        lifecycle = [e.type for e in histories[job_id] if e.type != "published"]
        assert lifecycle[-1] in LIFECYCLE_END, f"seed {seed}: {job_id} ended {lifecycle}"
        published = [e for e in histories[job_id] if e.type == "published"]
        assert len(published) == 1, f"seed {seed}: {job_id} published {len(published)} times"
        seqs = [e.seq for e in histories[job_id] if e.seq is not None]
        assert seqs == list(range(1, len(seqs) + 1)), f"seed {seed}: {job_id} seq gap {seqs}"
    anomalies = replay_anomalies(ledger, capsys)
    assert anomalies == [], f"seed {seed}: replay found {anomalies[:5]}"
    kinds = Counter(e.type for events in histories.values() for e in events)
    print(f"chaos seed {seed}: {dict(kinds)}")
    assert kinds["reaped"] > 0, f"seed {seed}: no worker died holding a job; nothing was tested"
