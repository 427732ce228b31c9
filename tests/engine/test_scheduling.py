"""Delayed and scheduled jobs, retries with backoff, and the dead-letter queue."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis

from engine.app import backoff_ms
from engine.cli import main
from engine.queue import JobQueue, JobSpec
from engine.settings import Settings
from engine.worker import Worker
from tests.apps.sample import app
from tests.engine.conftest import Running, wait_for
from tests.engine.helpers import events, job_events, registered_ops, types
from tests.redis_server import RedisServer

Q = "sched"


async def server_ms(redis: Redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def test_a_delayed_job_is_not_claimable_before_its_time_and_is_right_after(
    jq: JobQueue, redis: Redis, settings: Settings
) -> None:
    job_id = await jq.enqueue(Q, "noop", {}, delay_s=0.3)
    ops = await registered_ops(redis, settings, Q, "w1")
    due_ms = int((await jq.job(Q, job_id))["due_ms"])

    early = await ops.claim(1)
    assert early.jobs == []
    assert early.next_due_ms == due_ms
    while await server_ms(redis) < due_ms:
        await asyncio.sleep(0.01)
    late = await ops.claim(1)

    assert [j.id for j in late.jobs] == [job_id]
    assert await types(redis, Q, job_id) == ["scheduled", "promoted", "claimed"]
    assert (await job_events(redis, Q, job_id))[0]["due"] == str(due_ms)


async def test_a_due_time_in_the_past_goes_straight_to_the_lane(jq: JobQueue, redis: Redis) -> None:
    job_id = await jq.enqueue(Q, "noop", {}, due_at=datetime.now(UTC) - timedelta(minutes=1))
    assert await redis.lrange(jq.keys(Q).lane("default"), 0, -1) == [job_id]


async def test_every_due_job_is_promoted_exactly_once_under_competing_claims(
    jq: JobQueue, redis: Redis, settings: Settings
) -> None:
    ids = await jq.enqueue_many(Q, [JobSpec("noop", delay_s=0.05) for _ in range(300)])
    claimers = [await registered_ops(redis, settings, Q, f"w{i}") for i in range(3)]
    await asyncio.sleep(0.1)

    claimed: list[str] = []
    while len(claimed) < len(ids):
        replies = await asyncio.gather(*(ops.claim(7) for ops in claimers))
        claimed += [job.id for reply in replies for job in reply.jobs]

    assert sorted(claimed) == sorted(ids)
    promoted = Counter(e["job"] for e in await events(redis, Q) if e["type"] == "promoted")
    assert promoted == dict.fromkeys(ids, 1)
    assert await redis.zcard(jq.keys(Q).scheduled) == 0


@pytest.mark.usefixtures("sample_app")
async def test_an_idle_worker_wakes_for_a_delayed_job_without_polling(
    jq: JobQueue, redis: Redis, settings: Settings, running: Running
) -> None:
    """The worker sleeps until the earliest due time, even with a 30 s idle block."""
    running.start(Worker(app, [Q], settings.model_copy(update={"idle_block_s": 30.0})))
    await asyncio.sleep(0.2)
    job_id = await jq.enqueue(Q, "noop", {}, delay_s=0.4)

    async def done() -> bool:
        return "acked" in await types(redis, Q, job_id)

    await wait_for(done, timeout_s=5)


def test_the_cli_enqueues_with_a_delay_or_at_a_time(
    redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    url = ["--redis-url", redis_server.url]
    at = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert main(["enqueue", Q, "noop", "--delay", "30s", *url]) == 0
    delayed = capsys.readouterr().out.strip()
    assert main(["enqueue", Q, "noop", "--at", at, *url]) == 0
    timed = capsys.readouterr().out.strip()

    async def check() -> None:
        r = Redis.from_url(redis_server.url, decode_responses=True)
        now_ms = await server_ms(r)
        scores = dict(await r.zrange(f"jobqueue:{{{Q}}}:scheduled", 0, -1, withscores=True))
        await r.aclose()
        assert 29_000 < scores[delayed] - now_ms <= 30_000
        expected = datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp() * 1000
        assert scores[timed] == expected

    asyncio.run(check())


def test_backoff_is_full_jitter_exponential_and_capped() -> None:
    rng = random.Random(7)
    for failures in range(1, 12):
        ceiling = min(5000, 100 * 2 ** (failures - 1))
        samples = [backoff_ms(failures, 100, 5000, rng) for _ in range(200)]
        assert all(0 <= s <= ceiling for s in samples)
        assert max(samples) > ceiling * 0.8
        assert min(samples) < ceiling * 0.2


@pytest.mark.usefixtures("sample_app")
async def test_retries_follow_the_policy_and_end_in_the_dead_letter_queue(
    jq: JobQueue, redis: Redis, settings: Settings, running: Running
) -> None:
    """always_fails allows 3 attempts: fail, retry (scheduled), ... then dead-letter."""
    job_id = await jq.enqueue(Q, "always_fails", {})
    running.start(Worker(app, [Q], settings))

    async def dead() -> bool:
        return "dead_lettered" in await types(redis, Q, job_id)

    await wait_for(dead)
    history = await job_events(redis, Q, job_id)
    assert [e["type"] for e in history if e["type"] != "promoted"] == [
        "enqueued",
        *["claimed", "failed", "retried"] * 2,
        "claimed", "failed", "dead_lettered",
    ]  # fmt: skip
    retries = [e for e in history if e["type"] == "retried"]
    assert all(0 <= int(json.loads(e["attrs"])["delay_ms"]) <= 50 for e in retries)
    # A jittered delay of 0 goes straight back to the lane; any other is promoted once.
    promoted = sum(1 for e in history if e["type"] == "promoted")
    assert promoted == sum(1 for e in retries if e["to"] == "scheduled")
    record = await jq.job(Q, job_id)
    assert (record["dead_reason"], record["failures"], record["crashes"]) == (
        "retries_exhausted", "3", "0",
    )  # fmt: skip
    assert record["last_error"] == "RuntimeError: attempt 3 failed"
    assert "Traceback" in record["traceback"]


@pytest.mark.usefixtures("sample_app")
async def test_a_non_retryable_error_dead_letters_at_once(
    jq: JobQueue, redis: Redis, settings: Settings, running: Running
) -> None:
    job_id = await jq.enqueue(Q, "not_retryable", {"key": "sku"})
    running.start(Worker(app, [Q], settings))

    async def dead() -> bool:
        return await redis.llen(jq.keys(Q).dead) == 1

    await wait_for(dead)
    record = await jq.job(Q, job_id)
    assert (record["dead_reason"], record["attempts"]) == ("non_retryable", "1")
    assert record["last_error"] == "KeyError: 'sku'"


@pytest.mark.usefixtures("sample_app")
async def test_retry_asks_for_its_own_delay(
    jq: JobQueue, redis: Redis, settings: Settings, running: Running
) -> None:
    job_id = await jq.enqueue(Q, "asks_for_retry", {"delay_s": 0.25})
    running.start(Worker(app, [Q], settings))

    async def done() -> bool:
        return "acked" in await types(redis, Q, job_id)

    await wait_for(done)
    retried = next(e for e in await job_events(redis, Q, job_id) if e["type"] == "retried")
    assert json.loads(retried["attrs"]) == {"delay_ms": "250"}


async def dead_job(jq: JobQueue, redis: Redis, settings: Settings, task: str = "t") -> str:
    job_id = await jq.enqueue(Q, task, {"n": 1}, max_attempts=1)
    ops = await registered_ops(redis, settings, Q, "w1")
    [job] = (await ops.claim(1)).jobs
    await ops.fail(job, "boom")
    return job_id


async def test_requeue_from_the_dead_letter_queue_resets_attempts_and_is_recorded(
    jq: JobQueue, redis: Redis, settings: Settings
) -> None:
    job_id = await dead_job(jq, redis, settings)

    assert await jq.requeue_dead(Q, [job_id], by="alice") == (1, [])

    record = await jq.job(Q, job_id)
    assert (record["state"], record["attempts"], record["failures"]) == ("ready", "0", "0")
    assert await redis.lrange(jq.keys(Q).lane("default"), 0, -1) == [job_id]
    requeued = (await job_events(redis, Q, job_id))[-1]
    assert (requeued["type"], requeued["from"], requeued["to"]) == ("requeued", "dead", "ready")
    assert json.loads(requeued["attrs"]) == {"by": "alice"}


async def test_purging_a_dead_letter_deletes_it_with_an_event(
    jq: JobQueue, redis: Redis, settings: Settings
) -> None:
    job_id = await dead_job(jq, redis, settings)
    await jq.enqueue(Q, "t", {})

    assert await jq.purge_dead(Q, all_=True) == (1, [])
    assert await jq.purge_dead(Q, ["never-existed"]) == (0, ["never-existed"])

    assert not await redis.exists(jq.keys(Q).job(job_id))
    assert (await types(redis, Q, job_id))[-1] == "purged"


async def test_the_dlq_commands_list_show_requeue_and_refuse_an_unconfirmed_purge(
    jq: JobQueue, redis: Redis, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    job_id = await dead_job(jq, redis, settings, task="report")
    url = ["--redis-url", settings.redis_url.get_secret_value()]

    def run(*argv: str) -> int:
        return main([*argv[:2], *url, *argv[2:]]) if argv[0] == "dlq" else main(list(argv))

    assert await asyncio.to_thread(run, "dlq", "list", Q, "--json") == 0
    [listed] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (listed["id"], listed["dead_reason"], listed["last_error"]) == (
        job_id, "retries_exhausted", "boom",
    )  # fmt: skip
    assert await asyncio.to_thread(run, "dlq", "show", Q, job_id) == 0
    assert json.loads(capsys.readouterr().out)["task"] == "report"
    assert await asyncio.to_thread(run, "dlq", "purge", Q, "--all") == 2
    assert "--yes" in capsys.readouterr().err
    assert await asyncio.to_thread(run, "dlq", "requeue", Q, "--all") == 0
    assert (await jq.job(Q, job_id))["state"] == "ready"
