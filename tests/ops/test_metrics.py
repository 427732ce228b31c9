"""Metrics move as a real worker and shipper work against a real Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from engine import metrics
from engine.health import Probe
from engine.queue import JobQueue, JobSpec
from engine.settings import Settings
from engine.worker import Worker
from ledger.event import JobEvent
from ledger.shipper import Shipper
from sinks.base import Sink, SinkUnavailable
from sinks.breaker import BreakerState
from sinks.fallback import FallbackSink
from sinks.ndjson import NdjsonSink
from sinks.scrub import Scrubber
from tests.apps.sample import app
from tests.engine.conftest import Running, wait_for
from tests.engine.helpers import registered_ops

pytestmark = pytest.mark.usefixtures("sample_app")


def jobs(queue: str, task: str, outcome: str) -> float:
    return metrics.value("jobqueue_jobs_total", queue=queue, task=task, outcome=outcome)


def runs(queue: str, task: str) -> float:
    return metrics.value("jobqueue_job_duration_seconds_count", queue=queue, task=task)


class DownSink(Sink):
    """A sink that is always unavailable."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def write(self, batch: Sequence[JobEvent]) -> None:
        msg = f"sink {self.name} is down for this test"
        raise SinkUnavailable(msg)


def probe_of(
    redis: Redis, settings: Settings, queue: str, *, worker: str | None = None,
    sink: Sink | None = None,
) -> Probe:  # fmt: skip
    async def queues() -> list[str]:
        return [queue]

    return Probe(redis, settings, queues, worker=worker, sink=sink)


async def test_a_workers_outcomes_are_counted_by_queue_task_and_outcome(
    jq: JobQueue, quiet: Settings, running: Running, queue: str
) -> None:
    """Acks, retries and dead letters are counted where the worker logs them, with run times."""
    specs = [
        JobSpec("noop"),
        JobSpec("noop"),
        JobSpec("always_fails"),
        JobSpec("not_retryable", {}),
    ]
    await jq.enqueue_many(queue, specs)
    running.start(Worker(app, [queue], quiet))

    async def finished() -> bool:
        dead = jobs(queue, "always_fails", "dead") + jobs(queue, "not_retryable", "dead")
        return jobs(queue, "noop", "acked") == 2 and dead == 2

    await wait_for(finished)
    assert jobs(queue, "always_fails", "failed") == 2
    assert metrics.value("jobqueue_retries_total", queue=queue, task="always_fails") == 2
    assert (runs(queue, "noop"), runs(queue, "always_fails"), runs(queue, "not_retryable")) == (
        2, 3, 1,
    )  # fmt: skip


async def test_a_duplicate_job_is_counted_as_deduplicated_without_a_run_time(
    jq: JobQueue, quiet: Settings, running: Running, queue: str
) -> None:
    running.start(Worker(app, [queue], quiet))
    await jq.enqueue(queue, "charge", {"order": 7})

    async def acked() -> bool:
        return jobs(queue, "charge", "acked") == 1

    await wait_for(acked)
    await jq.enqueue(queue, "charge", {"order": 7})

    async def deduplicated() -> bool:
        return jobs(queue, "charge", "deduplicated") == 1

    await wait_for(deduplicated)
    assert runs(queue, "charge") == 1


async def test_a_stale_ack_is_counted_as_rejected_and_the_job_acked_once(
    jq: JobQueue, redis: Redis, quiet: Settings, running: Running, queue: str
) -> None:
    """The worker is reaped while its only job runs; the job's late ack is refused."""
    # One slot: the claim loop waits for the job, so the lost heartbeat is noticed after the ack.
    slow = quiet.model_copy(update={"concurrency": 1})
    job_id = await jq.enqueue(queue, "sleep", {"s": 0.5})
    worker = running.start(Worker(app, [queue], slow))

    async def started() -> bool:
        return bool(await redis.exists(f"running:{job_id}"))

    await wait_for(started)
    await redis.delete(jq.keys(queue).heartbeat(worker.worker_id))
    await worker.reap_once(queue)

    async def rejected() -> bool:
        return jobs(queue, "sleep", "rejected") == 1

    await wait_for(rejected)
    assert metrics.value("jobqueue_acks_rejected_total", queue=queue, op="ack") == 1

    async def acked() -> bool:
        return jobs(queue, "sleep", "acked") == 1

    await wait_for(acked)
    await asyncio.sleep(0.2)
    assert jobs(queue, "sleep", "acked") == 1


async def test_a_reap_counts_the_dead_worker_and_the_jobs_it_returned(
    jq: JobQueue, redis: Redis, quiet: Settings, running: Running, queue: str
) -> None:
    await jq.enqueue(queue, "noop", {})
    ghost = await registered_ops(redis, quiet, queue, "ghost")
    assert len((await ghost.claim(1)).jobs) == 1
    await redis.delete(ghost.keys.heartbeat("ghost"))
    running.start(Worker(app, [queue], quiet))

    async def reaped_and_acked() -> bool:
        return metrics.value("jobqueue_reaped_total", queue=queue) == 1 and (
            jobs(queue, "noop", "acked") == 1
        )

    await wait_for(reaped_and_acked)
    returned = metrics.value("jobqueue_reaped_jobs_total", queue=queue, outcome="returned")
    assert returned == 1


async def test_a_failed_heartbeat_renewal_is_counted(
    settings: Settings, running: Running, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken() -> bool:
        msg = "connection reset by the test"
        raise RedisConnectionError(msg)

    worker = Worker(app, [queue], settings)
    monkeypatch.setattr(worker._queues[0].ops, "renew", broken)
    running.start(worker)

    async def counted() -> bool:
        return metrics.value("jobqueue_heartbeat_failures_total", queue=queue) >= 1

    await wait_for(counted)


async def test_a_task_breaker_sets_its_state_gauge_through_open_half_open_and_closed(
    jq: JobQueue, redis: Redis, quiet: Settings, running: Running, queue: str
) -> None:
    quick = quiet.model_copy(
        update={"concurrency": 1, "breaker_failure_threshold": 2, "breaker_cooldown_s": 0.3}
    )
    name = "task:switch"
    opened_before = metrics.value("jobqueue_breaker_transitions_total", breaker=name, state="open")
    await redis.set("fail:switch", "1")
    await jq.enqueue_many(queue, [JobSpec("switch"), JobSpec("switch")])
    worker = running.start(Worker(app, [queue], quick))

    async def opened() -> bool:
        breaker = worker.breakers.get("switch")
        return breaker is not None and breaker.state is BreakerState.OPEN

    await wait_for(opened)
    assert metrics.value("jobqueue_breaker_state", breaker=name) == 2
    await redis.delete("fail:switch")
    await jq.enqueue(queue, "switch", {})

    async def closed() -> bool:
        return metrics.value("jobqueue_breaker_state", breaker=name) == 0

    await wait_for(closed)
    transitions = {
        state: metrics.value("jobqueue_breaker_transitions_total", breaker=name, state=state)
        for state in ("open", "half_open", "closed")
    }
    assert transitions["open"] > opened_before
    assert transitions["half_open"] >= 1
    assert transitions["closed"] >= 1


async def test_the_queue_gauges_show_lanes_scheduled_dead_letters_backlog_and_workers(
    jq: JobQueue, redis: Redis, settings: Settings, queue: str
) -> None:
    await jq.enqueue_many(queue, [JobSpec("noop", lane="high"), JobSpec("noop", lane="high")])
    await jq.enqueue(queue, "noop", {}, lane="low")
    await jq.enqueue(queue, "noop", {}, delay_s=60)
    ops = await registered_ops(redis, settings, queue, "w1")
    [job] = (await ops.claim(1)).jobs
    assert (await ops.fail(job, "ValueError: no", retryable=False)).startswith("dead")

    assert await probe_of(redis, settings, queue).check() is None

    lanes = {
        lane: metrics.value("jobqueue_queue_length", queue=queue, lane=lane)
        for lane in settings.lanes
    }
    assert lanes == {"high": 1, "default": 0, "low": 1}  # the claim took one from high
    assert metrics.value("jobqueue_scheduled_jobs", queue=queue) == 1
    assert metrics.value("jobqueue_dead_letters", queue=queue) == 1
    assert metrics.value("jobqueue_workers_live", queue=queue) == 1
    backlog = metrics.value("jobqueue_ledger_backlog", queue=queue)
    assert backlog == await redis.xlen(jq.keys(queue).events)
    assert metrics.value("jobqueue_ledger_oldest_event_age_seconds", queue=queue) >= 0
    assert metrics.value("jobqueue_ledger_backpressure", queue=queue) == 0
    assert metrics.value("jobqueue_redis_up") == 1


async def test_reading_the_gauges_uses_one_constant_time_command_per_key(
    jq: JobQueue, redis: Redis, settings: Settings, queue: str
) -> None:
    """No KEYS or SCAN, and no command that reads a list or stream beyond its first entry."""
    await jq.enqueue_many(queue, [JobSpec("noop") for _ in range(50)])
    await registered_ops(redis, settings, queue, "w1")
    await redis.config_resetstat()

    await probe_of(redis, settings, queue, worker="w1").check()

    stats = await redis.info("commandstats")
    used = {name.removeprefix("cmdstat_").lower() for name in stats}
    allowed = {"llen", "zcard", "xlen", "xrange", "time", "smembers", "exists", "pttl", "info"}
    assert used <= allowed | {"config|resetstat", "config"}, used


async def test_a_workers_in_flight_jobs_are_read_from_its_processing_list(
    jq: JobQueue, redis: Redis, quiet: Settings, running: Running, queue: str
) -> None:
    job_id = await jq.enqueue(queue, "sleep", {"s": 2.0})
    worker = running.start(Worker(app, [queue], quiet))

    async def started() -> bool:
        return bool(await redis.exists(f"running:{job_id}"))

    await wait_for(started)
    assert await probe_of(redis, quiet, queue, worker=worker.worker_id).check() is None
    in_flight = metrics.value("jobqueue_jobs_in_flight", queue=queue, worker=worker.worker_id)
    assert in_flight == 1


async def test_the_shipper_counts_events_per_sink_and_marks_the_sink_up(
    jq: JobQueue, redis: Redis, settings: Settings, queue: str, tmp_path: Path
) -> None:
    await jq.enqueue_many(queue, [JobSpec("noop") for _ in range(3)])
    sink = NdjsonSink(tmp_path, name=f"ndjson-{queue}")
    shipper = Shipper(redis, settings, sink, Scrubber(), [queue], consumer="test")
    try:
        shipped = await shipper.ship_once(queue)
    finally:
        await sink.close()

    assert shipped == 3
    assert metrics.value("jobqueue_ledger_events_shipped_total", sink=sink.name) == 3
    assert metrics.value("jobqueue_sink_up", sink=sink.name) == 1


async def test_a_failing_sink_is_counted_and_shown_down(
    jq: JobQueue, redis: Redis, settings: Settings, queue: str
) -> None:
    await jq.enqueue(queue, "noop", {})
    sink = DownSink(f"down-{queue}")
    shipper = Shipper(redis, settings, sink, Scrubber(), [queue], consumer="test")

    assert await shipper.ship_once(queue) == 0
    errors = metrics.value(
        "jobqueue_ledger_ship_errors_total", sink=sink.name, cause="sink_unavailable"
    )
    assert errors == 1
    assert metrics.value("jobqueue_sink_up", sink=sink.name) == 0
    assert metrics.value("jobqueue_ledger_events_shipped_total", sink=sink.name) == 0


async def test_a_fallback_in_use_shows_in_its_gauges(
    jq: JobQueue, redis: Redis, settings: Settings, queue: str, tmp_path: Path
) -> None:
    await jq.enqueue_many(queue, [JobSpec("noop") for _ in range(2)])
    primary = DownSink(f"down-{queue}")
    sink = FallbackSink(primary, NdjsonSink(tmp_path, name="fallback"))
    shipper = Shipper(redis, settings, sink, Scrubber(), [queue], consumer="test")
    try:
        assert await shipper.ship_once(queue) == 2
        await probe_of(redis, settings, queue, sink=sink).check()
    finally:
        await sink.close()

    assert metrics.value("jobqueue_ledger_fallback_active", sink=primary.name) == 1
    assert metrics.value("jobqueue_sink_up", sink=primary.name) == 0
    assert metrics.value("jobqueue_sink_up", sink=sink.name) == 1
    assert metrics.value("jobqueue_ledger_fallback_bytes", sink=primary.name) > 0
    state = metrics.value("jobqueue_breaker_state", breaker=sink.breaker.name)
    assert state == metrics.BREAKER_CODES[sink.breaker.state]


async def test_the_loop_lag_gauge_shows_a_blocked_event_loop() -> None:
    watch = asyncio.create_task(metrics.watch_loop_lag(interval_s=0.05))
    try:
        await asyncio.sleep(0.01)
        time.sleep(0.3)  # noqa: ASYNC251 - blocking the loop is the point
        for _ in range(20):
            if metrics.value("jobqueue_event_loop_lag_seconds") >= 0.2:
                break
            await asyncio.sleep(0)
        assert metrics.value("jobqueue_event_loop_lag_seconds") >= 0.2
    finally:
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)


def test_every_metric_is_named_with_the_jobqueue_prefix() -> None:
    families = [family.name for family in metrics.REGISTRY.collect()]
    assert families
    assert [name for name in families if not name.startswith("jobqueue_")] == []
