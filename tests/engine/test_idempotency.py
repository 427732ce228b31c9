"""Idempotency records and the handler outbox: a replayed job is a no-op."""

from __future__ import annotations

import json
from typing import Any

import pytest
from redis.asyncio import Redis

from engine.app import App, JobContext
from engine.idempotency import Begin, IdempotencyStore
from engine.jobs import ClaimedJob
from engine.ops import WorkerOps
from engine.queue import JobQueue, JobSpec
from engine.settings import Settings
from engine.worker import Worker
from tests.apps.sample import app
from tests.engine.conftest import Running, wait_for
from tests.engine.helpers import events, job_events, registered_ops, types

Q = "idem"
pytestmark = pytest.mark.usefixtures("sample_app")


async def test_a_second_enqueue_with_the_same_key_returns_the_first_job(
    jq: JobQueue, redis: Redis
) -> None:
    first = await jq.enqueue(Q, "t", {"n": 1}, idempotency_key="order-7")
    second = await jq.enqueue(Q, "t", {"n": 2}, idempotency_key="order-7")
    [third, fourth] = await jq.enqueue_many(
        Q, [JobSpec("t", idempotency_key="order-8"), JobSpec("t", idempotency_key="order-8")]
    )

    assert second == first
    assert fourth == third
    assert await redis.lrange(jq.keys(Q).lane("default"), 0, -1) == [first, third]
    dedup = [e for e in await events(redis, Q) if e["type"] == "deduplicated"]
    assert [e["job"] for e in dedup] == [first, third]
    assert json.loads(dedup[0]["attrs"])["key"] == "order-7"


async def done_types(redis: Redis, job_id: str) -> list[str]:
    return await types(redis, Q, job_id)


async def test_a_duplicate_job_finds_the_record_done_and_is_acked_without_running(
    jq: JobQueue, redis: Redis, settings: Settings, running: Running
) -> None:
    first = await jq.enqueue(Q, "charge", {"order": 42})
    running.start(Worker(app, [Q], settings))

    async def finished(job_id: str) -> bool:
        return (await done_types(redis, job_id))[-1:] in (["acked"], ["deduplicated"])

    await wait_for(lambda: finished(first))
    second = await jq.enqueue(Q, "charge", {"order": 42})
    await wait_for(lambda: finished(second))

    assert await redis.get("charged:42") == "1"
    dedup = (await job_events(redis, Q, second))[-1]
    assert dedup["type"] == "deduplicated"
    assert json.loads(dedup["attrs"]) == {"original_job": first, "key": "order-42"}
    published = [e for e in await events(redis, Q) if e["type"] == "published"]
    assert [e["job"] for e in published] == [first]


async def test_a_retry_after_a_crash_past_the_commit_does_not_run_again(
    jq: JobQueue, redis: Redis, settings: Settings, running: Running
) -> None:
    """The worker dies after its effect committed, before its ack: the rerun is a no-op."""
    job_id = await jq.enqueue(Q, "charge", {"order": 9})
    crashed = await registered_ops(redis, settings, Q, "crashed")
    [job] = (await crashed.claim(1)).jobs
    assert await crashed.idem_begin("order-9", job) == ("run", None)
    assert await crashed.idem_commit("order-9", job, [("INCR", "charged:9")]) == ["ok", 1]
    await redis.delete(crashed.keys.heartbeat("crashed"))
    assert (await crashed.reap(lock_ms=1000)).returned == 1

    running.start(Worker(app, [Q], settings))

    async def deduplicated() -> bool:
        return (await done_types(redis, job_id))[-1:] == ["deduplicated"]

    await wait_for(deduplicated)
    assert await redis.get("charged:9") == "1"
    lifecycle = await done_types(redis, job_id)
    assert lifecycle == ["enqueued", "claimed", "reaped", "claimed", "deduplicated"]


async def test_a_record_held_by_a_live_worker_makes_the_duplicate_retry_not_run(
    jq: JobQueue, redis: Redis, settings: Settings
) -> None:
    holder_id = await jq.enqueue(Q, "charge", {"order": 5})
    duplicate_id = await jq.enqueue(Q, "charge", {"order": 5})
    holder = await registered_ops(redis, settings, Q, "holder")
    other = await registered_ops(redis, settings, Q, "other")
    [held] = (await holder.claim(1)).jobs
    [dup] = (await other.claim(1)).jobs

    assert await holder.idem_begin("order-5", held) == ("run", None)
    assert await other.idem_begin("order-5", dup) == ("busy", holder_id)
    status = await other.fail(
        dup, "held", retryable=True, reason="idempotency_busy", delay_ms=50, counted=False
    )

    assert status.startswith("retried:")
    record = await jq.job(Q, duplicate_id)
    assert (record["failures"], record["state"]) == ("0", "scheduled")
    retried = (await job_events(redis, Q, duplicate_id))[-1]
    assert (retried["type"], retried["reason"], retried["from"]) == (
        "retried", "idempotency_busy", "active",
    )  # fmt: skip


async def test_a_record_held_by_a_dead_claim_is_taken_over(
    jq: JobQueue, redis: Redis, settings: Settings
) -> None:
    await jq.enqueue(Q, "charge", {"order": 6})
    dead = await registered_ops(redis, settings, Q, "dead")
    [job] = (await dead.claim(1)).jobs
    await dead.idem_begin("order-6", job)
    await redis.delete(dead.keys.heartbeat("dead"))
    await dead.reap(lock_ms=1000)
    live = await registered_ops(redis, settings, Q, "live")
    [again] = (await live.claim(1)).jobs

    assert await live.idem_begin("order-6", again) == ("run", None)


async def test_a_failed_run_releases_its_record_and_publishes_nothing(
    jq: JobQueue, redis: Redis, settings: Settings, running: Running
) -> None:
    job_id = await jq.enqueue(Q, "publish_then_fail", {})
    running.start(Worker(app, [Q], settings))

    async def dead() -> bool:
        return "dead_lettered" in await done_types(redis, job_id)

    await wait_for(dead)
    assert "published" not in await types(redis, Q)


async def test_published_messages_are_committed_with_the_ack(
    jq: JobQueue, redis: Redis, settings: Settings, running: Running
) -> None:
    job_id = await jq.enqueue(Q, "publish", {"name": "ada"})
    running.start(Worker(app, [Q], settings))

    async def acked() -> bool:
        return "acked" in await done_types(redis, job_id)

    await wait_for(acked)
    history = await job_events(redis, Q, job_id)
    assert [e["type"] for e in history][-2:] == ["published", "acked"]
    assert json.loads(history[-2]["attrs"]) == {
        "topic": "greetings", "message": '{"hello":"ada"}',
    }  # fmt: skip
    record = await redis.hgetall(jq.keys(Q).idempotency(f"run:{job_id}"))
    assert (record["state"], record["job"]) == ("done", job_id)


class MemoryStore(IdempotencyStore):
    """A store outside Redis, as a service would keep in its own database (an in-memory
    stand-in for that database: the interface is what is under test)."""

    def __init__(self) -> None:
        self.records: dict[str, tuple[str, str]] = {}
        self.calls: list[str] = []

    async def begin(self, ops: WorkerOps, key: str, job: ClaimedJob) -> Begin:
        self.calls.append(f"begin:{key}")
        state, holder = self.records.get(key, ("", ""))
        if state == "done":
            return Begin("done", holder)
        self.records[key] = ("running", job.id)
        return Begin("run")

    async def complete(self, ops: WorkerOps, key: str, job: ClaimedJob) -> None:
        self.calls.append(f"complete:{key}")
        self.records[key] = ("done", job.id)

    async def release(self, ops: WorkerOps, key: str, job: ClaimedJob) -> None:
        self.calls.append(f"release:{key}")
        del self.records[key]


async def test_a_service_can_keep_its_records_in_its_own_store(
    jq: JobQueue, redis: Redis, settings: Settings, running: Running
) -> None:
    store = MemoryStore()
    custom = App(idempotency_store=store)
    attempts: list[int] = []

    @custom.task("pay", idempotency_key=lambda p: f"pay-{p['id']}", max_attempts=3)
    async def pay(ctx: JobContext, payload: Any) -> None:
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            msg = "card network timeout"
            raise TimeoutError(msg)

    first = await jq.enqueue(Q, "pay", {"id": 1})
    running.start(Worker(custom, [Q], settings))

    async def acked() -> bool:
        return "acked" in await done_types(redis, first)

    await wait_for(acked)
    second = await jq.enqueue(Q, "pay", {"id": 1})

    async def deduplicated() -> bool:
        return "deduplicated" in await done_types(redis, second)

    await wait_for(deduplicated)
    assert attempts == [1, 2]
    assert store.calls == [
        "begin:pay-1", "release:pay-1", "begin:pay-1", "complete:pay-1", "begin:pay-1",
    ]  # fmt: skip
