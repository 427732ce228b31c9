"""The worker against a real server: handlers, heartbeats, reaping, shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter

import pytest
from redis.asyncio import Redis

from engine.queue import JobQueue, JobSpec
from engine.settings import Settings
from engine.worker import Worker
from tests.apps.sample import app
from tests.engine.conftest import Running, wait_for
from tests.engine.helpers import events, job_events, types
from tests.redis_server import RedisServer

Q = "work"
pytestmark = pytest.mark.usefixtures("sample_app")


def acked(found: list[dict[str, str]]) -> Counter[str]:
    return Counter(e["job"] for e in found if e["type"] == "acked")


async def test_async_and_thread_handlers_run_and_are_acked(
    jq: JobQueue, redis: Redis, settings: Settings, running: Running
) -> None:
    ids = [await jq.enqueue(Q, "noop", {}), await jq.enqueue(Q, "blocking", {"s": 0.01})]
    worker = running.start(Worker(app, [Q], settings))

    async def all_acked() -> bool:
        return set(acked(await events(redis, Q))) == set(ids)

    await wait_for(all_acked)
    assert worker.stats["acked"] == 2
    assert [(await jq.job(Q, i))["state"] for i in ids] == ["done", "done"]


async def test_an_unknown_task_is_dead_lettered_with_a_clear_error(
    jq: JobQueue, redis: Redis, settings: Settings, running: Running
) -> None:
    job_id = await jq.enqueue(Q, "no_such_task", {})
    running.start(Worker(app, [Q], settings))

    async def dead() -> bool:
        return await redis.llen(jq.keys(Q).dead) == 1

    await wait_for(dead)
    record = await jq.job(Q, job_id)
    assert record["dead_reason"] == "unknown_task"
    assert "no handler for task 'no_such_task'" in record["last_error"]


async def test_a_long_job_is_not_reaped_while_its_worker_lives(
    jq: JobQueue, redis: Redis, redis_server: RedisServer, running: Running
) -> None:
    """A job running for over three heartbeat TTLs stays with its live worker."""
    quick = Settings(
        redis_url=redis_server.url, heartbeat_ttl_ms=600, heartbeat_interval_ms=200,
        shutdown_grace_s=1.0,
    )  # fmt: skip
    job_id = await jq.enqueue(Q, "sleep", {"s": 2.0})
    running.start(Worker(app, [Q], quick))
    reaper = running.start(Worker(app, [Q], quick))

    async def finished() -> bool:
        return "acked" in await types(redis, Q, job_id)

    await wait_for(finished)
    await reaper.reap_once(Q)
    history = await types(redis, Q, job_id)
    assert history == ["enqueued", "claimed", "acked"]
    beats = [e for e in await events(redis, Q) if e["type"] == "heartbeat" and job_id in e["attrs"]]
    assert len(beats) >= 3


@pytest.mark.slow
async def test_a_killed_workers_job_is_reaped_and_finished_elsewhere(
    jq: JobQueue, redis: Redis, redis_server: RedisServer, running: Running, tmp_path: object
) -> None:
    """SIGKILL mid-job: the stream shows claim, reap, claim, ack for that job."""
    job_id = await jq.enqueue(Q, "slow_first", {"s": 60})
    env = {**os.environ, "JOBQUEUE_REDIS_URL": redis_server.url,
           "JOBQUEUE_HEARTBEAT_TTL_MS": "900", "JOBQUEUE_HEARTBEAT_INTERVAL_MS": "300"}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "worker", Q, "--app", "tests.apps.sample"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:

        async def started() -> bool:
            return bool(await redis.exists(f"running:{job_id}"))

        await wait_for(started)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    await redis.delete(f"running:{job_id}")
    quick = Settings(
        redis_url=redis_server.url, heartbeat_ttl_ms=900, heartbeat_interval_ms=300,
        shutdown_grace_s=1.0,
    )  # fmt: skip
    running.start(Worker(app, [Q], quick))

    async def finished() -> bool:
        return "acked" in await types(redis, Q, job_id)

    await wait_for(finished)
    lifecycle = [t for t in await types(redis, Q, job_id) if t != "heartbeat"]
    assert lifecycle == ["enqueued", "claimed", "reaped", "claimed", "acked"]
    reaped = next(e for e in await job_events(redis, Q, job_id) if e["type"] == "reaped")
    record = await jq.job(Q, job_id)
    assert (record["crashes"], record["failures"], record["attempts"]) == ("1", "0", "2")
    assert reaped["worker"] != record["worker"]


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_many_workers_lose_no_job_and_never_share_one(
    jq: JobQueue, redis: Redis, settings: Settings, running: Running
) -> None:
    """2,000 jobs with random durations over four workers: each acked exactly once."""
    specs = [JobSpec("random_sleep", {"max_s": 0.004}) for _ in range(2000)]
    ids: list[str] = []
    for start in range(0, len(specs), 500):
        ids += await jq.enqueue_many(Q, specs[start : start + 500])
    for _ in range(4):
        running.start(Worker(app, [Q], settings.model_copy(update={"concurrency": 8})))

    async def drained() -> bool:
        stats = await jq.stats(Q)
        return stats.ready == 0 and not any(stats.in_flight.values())

    await wait_for(drained, timeout_s=150, step_s=0.2)
    counts = acked(await events(redis, Q))
    assert set(counts) == set(ids)
    assert max(counts.values()) == 1
    assert await redis.get("overlaps") is None
    runs = await redis.mget([f"runs:{i}" for i in ids])
    assert Counter(runs) == {"1": len(ids)}


async def test_graceful_shutdown_returns_unfinished_jobs_and_leaves(
    jq: JobQueue, redis: Redis, settings: Settings, running: Running
) -> None:
    short = await jq.enqueue(Q, "sleep", {"s": 0.2})
    long = await jq.enqueue(Q, "sleep", {"s": 30})
    worker = running.start(Worker(app, [Q], settings.model_copy(update={"shutdown_grace_s": 0.6})))

    async def both_running() -> bool:
        return bool(await redis.exists(f"running:{short}", f"running:{long}") == 2)

    await wait_for(both_running)
    await running.stop(worker)

    assert "acked" in await types(redis, Q, short)
    assert (await types(redis, Q, long))[-1] == "returned"
    assert await redis.lrange(jq.keys(Q).lane("default"), 0, -1) == [long]
    assert await redis.smembers(jq.keys(Q).workers) == set()
    assert (await types(redis, Q))[-1] == "worker_left"


async def test_a_reaped_worker_abandons_its_jobs_and_registers_again(
    jq: JobQueue, redis: Redis, settings: Settings, running: Running
) -> None:
    job_id = await jq.enqueue(Q, "sleep", {"s": 30})
    worker = running.start(Worker(app, [Q], settings.model_copy(update={"shutdown_grace_s": 0.2})))

    async def started() -> bool:
        return bool(await redis.exists(f"running:{job_id}"))

    await wait_for(started)
    await redis.delete(jq.keys(Q).heartbeat(worker.worker_id))
    await jq.redis.delete(jq.keys(Q).reaper_lock)
    await worker.reap_once(Q)
    await redis.delete(f"running:{job_id}")

    async def reclaimed() -> bool:
        return (await types(redis, Q, job_id)).count("claimed") == 2

    await wait_for(reclaimed)
    assert worker.stats["reaped_self"] == 1
    assert await redis.exists(jq.keys(Q).heartbeat(worker.worker_id))
    history = await types(redis, Q, job_id)
    assert history[:4] == ["enqueued", "claimed", "reaped", "claimed"]
    assert "ack_rejected" not in history


async def test_an_idle_worker_picks_up_new_work_at_once(
    jq: JobQueue, redis: Redis, settings: Settings, running: Running
) -> None:
    """Idle workers block on the server: a job enqueued later starts well before the
    idle timeout would have woken a polling worker."""
    slow_poll = settings.model_copy(update={"idle_block_s": 30.0})
    running.start(Worker(app, [Q], slow_poll))
    await asyncio.sleep(0.3)
    job_id = await jq.enqueue(Q, "noop", {})

    async def done() -> bool:
        return "acked" in await types(redis, Q, job_id)

    await wait_for(done, timeout_s=5)
