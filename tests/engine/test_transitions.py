"""Each transition: the state it leaves behind and the exact event it writes."""

from __future__ import annotations

import json

import pytest
from redis.asyncio import Redis

from engine.errors import JobExists
from engine.ops import AckItem
from engine.queue import JobQueue
from engine.settings import Settings
from tests.engine.helpers import events, job_events, registered_ops, types

Q = "emails"


@pytest.fixture
async def jq(redis: Redis, settings: Settings) -> JobQueue:
    return JobQueue(redis, settings)


async def test_enqueue_puts_the_job_in_its_lane_and_writes_enqueued(
    jq: JobQueue, redis: Redis
) -> None:
    """The job hash is ready, the id is at the tail of its lane, one event says so."""
    job_id = await jq.enqueue(Q, "send", {"to": "a"}, lane="high", trace_id="t-1")

    assert await redis.lrange(jq.keys(Q).lane("high"), 0, -1) == [job_id]
    record = await jq.job(Q, job_id)
    assert record["state"] == "ready"
    assert record["attempts"] == "0"
    assert record["seq"] == "1"
    [event] = await events(redis, Q)
    assert json.loads(event.pop("attrs")) == {"max_attempts": "3", "max_crashes": "3"}
    assert {k: v for k, v in event.items() if k not in {"id", "ts"}} == {
        "type": "enqueued",
        "job": job_id,
        "seq": "1",
        "to": "ready",
        "lane": "high",
        "task": "send",
        "payload": '{"to":"a"}',
        "trace": "t-1",
    }
    # The entry id is stamped by the same server clock, a moment after TIME was read.
    assert 0 <= int(event["id"].split("-")[0]) - int(event["ts"]) < 1000


async def test_an_existing_job_id_is_refused_and_nothing_is_written(
    jq: JobQueue, redis: Redis
) -> None:
    await jq.enqueue(Q, "send", {}, job_id="order-1")

    with pytest.raises(JobExists, match="order-1"):
        await jq.enqueue(Q, "send", {"other": True}, job_id="order-1")

    assert await redis.llen(jq.keys(Q).lane("default")) == 1
    assert await types(redis, Q) == ["enqueued"]
    assert (await jq.job(Q, "order-1"))["payload"] == "{}"


async def test_claim_moves_the_job_to_the_processing_list_with_a_token(
    jq: JobQueue, redis: Redis, settings: Settings
) -> None:
    job_id = await jq.enqueue(Q, "send", {"n": 1})
    ops = await registered_ops(redis, settings, Q, "w1")

    reply = await ops.claim(5)

    assert reply.status == "ok"
    [job] = reply.jobs
    assert (job.id, job.task, job.attempt, job.token, job.payload) == (
        job_id, "send", 1, "1", '{"n":1}',
    )  # fmt: skip
    assert await redis.lrange(ops.keys.processing("w1"), 0, -1) == [job_id]
    assert await redis.llen(ops.keys.lane("default")) == 0
    record = await jq.job(Q, job_id)
    assert (record["state"], record["worker"], record["token"]) == ("active", "w1", "1")
    claimed = (await job_events(redis, Q, job_id))[-1]
    assert claimed["type"] == "claimed"
    assert (claimed["seq"], claimed["from"], claimed["to"]) == ("2", "ready", "active")
    assert (claimed["worker"], claimed["token"], claimed["attempt"]) == ("w1", "1", "1")


async def test_claim_is_refused_without_a_heartbeat(
    jq: JobQueue, redis: Redis, settings: Settings
) -> None:
    """A worker whose heartbeat key is gone has been reaped: it gets nothing."""
    await jq.enqueue(Q, "send", {})
    ops = await registered_ops(redis, settings, Q, "w1")
    await redis.delete(ops.keys.heartbeat("w1"))

    reply = await ops.claim(1)

    assert reply.status == "lost"
    assert await redis.llen(ops.keys.lane("default")) == 1
    assert await types(redis, Q) == ["enqueued", "worker_registered"]


async def test_heartbeat_renewal_names_the_jobs_in_flight(
    jq: JobQueue, redis: Redis, settings: Settings
) -> None:
    first = await jq.enqueue(Q, "send", {})
    second = await jq.enqueue(Q, "send", {})
    ops = await registered_ops(redis, settings, Q, "w1")
    await ops.claim(2)

    assert await ops.renew() is True

    beat = (await events(redis, Q))[-1]
    assert beat["type"] == "heartbeat"
    assert beat["worker"] == "w1"
    assert json.loads(beat["attrs"]) == {"jobs": f"{first},{second}", "ttl_ms": "1500"}
    ttl = await redis.pttl(ops.keys.heartbeat("w1"))
    assert 0 < ttl <= settings.heartbeat_ttl_ms
    assert await redis.smembers(ops.keys.workers) == {"w1"}


async def test_renewal_reports_a_heartbeat_that_expired(redis: Redis, settings: Settings) -> None:
    ops = await registered_ops(redis, settings, Q, "w1")
    await redis.delete(ops.keys.heartbeat("w1"))

    assert await ops.renew() is False
    assert not await redis.exists(ops.keys.heartbeat("w1"))


async def test_ack_finishes_the_job_and_sets_its_retention(
    jq: JobQueue, redis: Redis, settings: Settings
) -> None:
    job_id = await jq.enqueue(Q, "send", {})
    ops = await registered_ops(redis, settings, Q, "w1")
    [job] = (await ops.claim(1)).jobs

    assert await ops.ack([AckItem(job.id, job.token, 12)]) == ["ok"]

    assert await redis.llen(ops.keys.processing("w1")) == 0
    assert (await jq.job(Q, job_id))["state"] == "done"
    ttl = await redis.pttl(ops.keys.job(job_id))
    assert 0 < ttl <= settings.job_retention_ms
    acked = (await job_events(redis, Q, job_id))[-1]
    assert acked["type"] == "acked"
    assert (acked["from"], acked["to"], acked["token"], acked["worker"]) == (
        "active", "done", "1", "w1",
    )  # fmt: skip
    assert acked["attrs"] == '{"run_ms":"12"}'


async def test_a_stale_ack_is_refused_and_recorded_never_counted(
    jq: JobQueue, redis: Redis, settings: Settings
) -> None:
    """After a reap and a new claim, the first worker's ack carries an old token."""
    job_id = await jq.enqueue(Q, "send", {})
    zombie = await registered_ops(redis, settings, Q, "zombie")
    [old] = (await zombie.claim(1)).jobs
    await redis.delete(zombie.keys.heartbeat("zombie"))
    live = await registered_ops(redis, settings, Q, "live")
    assert (await live.reap(lock_ms=1000)).returned == 1
    [new] = (await live.claim(1)).jobs

    assert await zombie.ack([AckItem(old.id, old.token, 5)]) == ["stale:not_owner"]
    assert await live.ack([AckItem(new.id, new.token, 5)]) == ["ok"]

    history = await types(redis, Q, job_id)
    assert history == ["enqueued", "claimed", "reaped", "claimed", "ack_rejected", "acked"]
    rejected = (await job_events(redis, Q, job_id))[4]
    assert (rejected["worker"], rejected["token"], rejected["reason"]) == (
        "zombie", "1", "not_owner",
    )  # fmt: skip
    assert (await jq.job(Q, job_id))["state"] == "done"


async def test_a_second_ack_with_the_same_token_is_refused(
    jq: JobQueue, redis: Redis, settings: Settings
) -> None:
    job_id = await jq.enqueue(Q, "send", {})
    ops = await registered_ops(redis, settings, Q, "w1")
    [job] = (await ops.claim(1)).jobs

    assert await ops.ack([AckItem(job.id, job.token, 1), AckItem(job.id, job.token, 1)]) == [
        "ok", "stale:not_active",
    ]  # fmt: skip
    assert (await types(redis, Q, job_id)).count("acked") == 1


async def test_fail_with_attempts_left_returns_the_job_to_its_lane(
    jq: JobQueue, redis: Redis, settings: Settings
) -> None:
    job_id = await jq.enqueue(Q, "send", {}, max_attempts=2)
    ops = await registered_ops(redis, settings, Q, "w1")
    [job] = (await ops.claim(1)).jobs

    assert await ops.fail(job, "ValueError: boom") == "retried:0"

    assert await redis.lrange(ops.keys.lane("default"), 0, -1) == [job_id]
    record = await jq.job(Q, job_id)
    assert (record["state"], record["failures"], record["last_error"]) == (
        "ready", "1", "ValueError: boom",
    )  # fmt: skip
    failed, retried = (await job_events(redis, Q, job_id))[-2:]
    assert (failed["type"], failed["from"], failed["to"], failed["error"]) == (
        "failed", "active", "failed", "ValueError: boom",
    )  # fmt: skip
    assert (retried["type"], retried["from"], retried["to"]) == ("retried", "failed", "ready")


async def test_fail_without_attempts_left_dead_letters_with_the_reason(
    jq: JobQueue, redis: Redis, settings: Settings
) -> None:
    job_id = await jq.enqueue(Q, "send", {}, max_attempts=1)
    ops = await registered_ops(redis, settings, Q, "w1")
    [job] = (await ops.claim(1)).jobs

    assert await ops.fail(job, "KeyError: x", traceback="Traceback...") == (
        "dead:retries_exhausted"
    )

    assert await redis.lrange(ops.keys.dead, 0, -1) == [job_id]
    record = await jq.job(Q, job_id)
    assert (record["state"], record["dead_reason"], record["traceback"]) == (
        "dead", "retries_exhausted", "Traceback...",
    )  # fmt: skip
    dead = (await job_events(redis, Q, job_id))[-1]
    assert (dead["type"], dead["to"], dead["reason"]) == (
        "dead_lettered", "dead", "retries_exhausted",
    )  # fmt: skip


async def test_reap_returns_a_dead_workers_jobs_to_the_head_of_their_lanes(
    jq: JobQueue, redis: Redis, settings: Settings
) -> None:
    first = await jq.enqueue(Q, "send", {})
    second = await jq.enqueue(Q, "send", {})
    waiting = await jq.enqueue(Q, "send", {})
    dead = await registered_ops(redis, settings, Q, "dead")
    await dead.claim(2)
    await redis.delete(dead.keys.heartbeat("dead"))
    reaper = await registered_ops(redis, settings, Q, "reaper")

    reply = await reaper.reap(lock_ms=1000)

    assert (reply.workers, reply.returned, reply.dead) == (1, 2, 0)
    assert await redis.lrange(dead.keys.lane("default"), 0, -1) == [first, second, waiting]
    assert await redis.smembers(dead.keys.workers) == {"reaper"}
    assert not await redis.exists(dead.keys.processing("dead"))
    record = await jq.job(Q, first)
    assert (record["state"], record["crashes"], record["failures"]) == ("ready", "1", "0")
    reaped = (await job_events(redis, Q, first))[-1]
    assert (reaped["type"], reaped["from"], reaped["to"], reaped["worker"]) == (
        "reaped", "active", "ready", "dead",
    )  # fmt: skip
    worker_reaped = (await events(redis, Q))[-1]
    assert worker_reaped["type"] == "worker_reaped"
    assert worker_reaped["worker"] == "dead"


async def test_a_job_past_its_crash_limit_is_dead_lettered_by_the_reaper(
    jq: JobQueue, redis: Redis, settings: Settings
) -> None:
    job_id = await jq.enqueue(Q, "poison", {}, max_crashes=1)
    for crash in range(2):
        ops = await registered_ops(redis, settings, Q, f"w{crash}")
        await ops.claim(1)
        await redis.delete(ops.keys.heartbeat(f"w{crash}"), ops.keys.reaper_lock)
        await ops.reap(lock_ms=1000)

    record = await jq.job(Q, job_id)
    assert (record["state"], record["dead_reason"], record["crashes"]) == (
        "dead", "crash_limit", "2",
    )  # fmt: skip
    assert await types(redis, Q, job_id) == [
        "enqueued", "claimed", "reaped", "claimed", "reaped", "dead_lettered",
    ]  # fmt: skip


async def test_the_reaper_lock_keeps_to_one_pass_at_a_time(
    redis: Redis, settings: Settings
) -> None:
    ops = await registered_ops(redis, settings, Q, "w1")

    assert not (await ops.reap(lock_ms=10_000)).locked
    assert (await ops.reap(lock_ms=10_000)).locked


async def test_give_back_returns_jobs_and_leaving_clears_the_registry(
    jq: JobQueue, redis: Redis, settings: Settings
) -> None:
    job_id = await jq.enqueue(Q, "send", {})
    ops = await registered_ops(redis, settings, Q, "w1")
    [job] = (await ops.claim(1)).jobs

    assert await ops.give_back([job], reason="shutdown", leave=True) == ["ok"]

    assert await redis.lrange(ops.keys.lane("default"), 0, -1) == [job_id]
    assert not await redis.exists(ops.keys.heartbeat("w1"), ops.keys.processing("w1"))
    assert await redis.smembers(ops.keys.workers) == set()
    assert (await types(redis, Q))[-2:] == ["returned", "worker_left"]


async def test_every_job_event_carries_a_gapless_sequence(
    jq: JobQueue, redis: Redis, settings: Settings
) -> None:
    job_id = await jq.enqueue(Q, "send", {}, max_attempts=3)
    ops = await registered_ops(redis, settings, Q, "w1")
    for _ in range(2):
        [job] = (await ops.claim(1)).jobs
        await ops.fail(job, "E")
    [job] = (await ops.claim(1)).jobs
    await ops.ack([AckItem(job.id, job.token, 1)])

    seqs = [int(e["seq"]) for e in await job_events(redis, Q, job_id)]
    assert seqs == list(range(1, len(seqs) + 1))
