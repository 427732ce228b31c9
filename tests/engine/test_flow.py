"""Fairness between lanes, producer backpressure, pause, breakers, and bad input."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import pytest
from redis.asyncio import Redis
from structlog.testing import capture_logs

from engine.cli import main
from engine.errors import ConfigError, InvalidName, InvalidPayload, QueueFull
from engine.ops import lane_schedule
from engine.queue import JobQueue, JobSpec
from engine.settings import Settings, load_settings
from engine.worker import Worker
from sinks.breaker import BreakerState
from tests.apps.sample import app
from tests.engine.conftest import Running, wait_for
from tests.engine.helpers import registered_ops, types

Q = "flow"


async def fill(jq: JobQueue, lane: str, n: int) -> None:
    for start in range(0, n, 500):
        await jq.enqueue_many(Q, [JobSpec("t", lane=lane) for _ in range(min(500, n - start))])


async def claimed_lanes(jq: JobQueue, redis: Redis, settings: Settings, n: int) -> Counter[str]:
    ops = await registered_ops(redis, settings, Q, "w1")
    lanes: Counter[str] = Counter()
    while sum(lanes.values()) < n:
        lanes.update(job.lane for job in (await ops.claim(10)).jobs)
    return lanes


def test_the_lane_schedule_interleaves_by_weight() -> None:
    schedule = lane_schedule([8, 2, 1]).split(",")
    assert Counter(schedule) == {"1": 8, "2": 2, "3": 1}
    assert schedule[:3] == ["1", "1", "2"]


async def test_saturated_lanes_split_claims_by_their_weights(
    jq: JobQueue, redis: Redis, settings: Settings
) -> None:
    for lane in ("high", "default", "low"):
        await fill(jq, lane, 1000)

    lanes = await claimed_lanes(jq, redis, settings, 1100)

    assert lanes == {"high": 800, "default": 200, "low": 100}


async def test_a_flooded_high_lane_never_starves_low(
    jq: JobQueue, redis: Redis, settings: Settings
) -> None:
    """With default empty, its share goes to the others and low keeps its own."""
    await fill(jq, "high", 2000)
    await fill(jq, "low", 500)

    lanes = await claimed_lanes(jq, redis, settings, 1100)

    assert lanes == {"high": 1000, "low": 100}


async def test_an_empty_lanes_share_goes_to_the_others(
    jq: JobQueue, redis: Redis, settings: Settings
) -> None:
    await fill(jq, "low", 50)
    lanes = await claimed_lanes(jq, redis, settings, 50)
    assert lanes == {"low": 50}


async def test_enqueue_past_the_lane_limit_raises_queue_full(
    redis: Redis, settings: Settings
) -> None:
    jq = JobQueue(redis, settings.model_copy(update={"max_lane_length": 3}))
    for _ in range(3):
        await jq.enqueue(Q, "t", {})

    with pytest.raises(QueueFull, match="lane 'default' of queue 'flow' holds 3 jobs") as info:
        await jq.enqueue(Q, "t", {})

    assert (info.value.queue, info.value.length, info.value.limit) == (Q, 3, 3)
    assert await redis.llen(jq.keys(Q).lane("default")) == 3
    await jq.enqueue(Q, "t", {}, lane="high")


async def test_enqueue_past_the_queue_limit_raises_and_can_wait_for_room(
    redis: Redis, settings: Settings
) -> None:
    jq = JobQueue(redis, settings.model_copy(update={"max_queue_length": 2}))
    await jq.enqueue(Q, "t", {}, lane="high")
    await jq.enqueue(Q, "t", {}, delay_s=60)
    with pytest.raises(QueueFull, match="queue 'flow' holds 2 jobs"):
        await jq.enqueue(Q, "t", {}, lane="low")

    ops = await registered_ops(redis, settings, Q, "w1")
    waiting = asyncio.create_task(jq.enqueue(Q, "t", {}, lane="low", wait_s=10))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    await ops.claim(1)

    assert await waiting
    assert await redis.llen(jq.keys(Q).lane("low")) == 1


async def test_a_batch_into_a_full_lane_enqueues_a_prefix_and_waits_for_the_rest(
    redis: Redis, settings: Settings
) -> None:
    """The first refused job ends the batch; with wait_s only the rest is sent again."""
    jq = JobQueue(redis, settings.model_copy(update={"max_lane_length": 2}))
    specs = [JobSpec("t", {"n": n}) for n in range(4)]
    with pytest.raises(QueueFull):
        await jq.enqueue_many(Q, specs)
    assert await redis.llen(jq.keys(Q).lane("default")) == 2

    ops = await registered_ops(redis, settings, Q, "w1")
    waiting = asyncio.create_task(jq.enqueue_many(Q, specs[2:], wait_s=10))
    await asyncio.sleep(0.1)
    await ops.claim(2)
    ids = await waiting

    assert len(ids) == 2
    assert await redis.lrange(jq.keys(Q).lane("default"), 0, -1) == ids
    payloads = [json.loads((await jq.job(Q, i))["payload"])["n"] for i in ids]
    assert payloads == [2, 3]


async def test_a_paused_queue_accepts_enqueues_but_hands_out_no_claims(
    jq: JobQueue, redis: Redis, settings: Settings
) -> None:
    ops = await registered_ops(redis, settings, Q, "w1")
    assert await jq.pause(Q, by="alice") is True
    assert await jq.pause(Q) is False
    job_id = await jq.enqueue(Q, "t", {})

    assert (await ops.claim(1)).status == "paused"
    assert (await jq.stats(Q)).paused is True
    assert await jq.resume(Q) is True
    assert [j.id for j in (await ops.claim(1)).jobs] == [job_id]
    assert [t for t in await types(redis, Q) if t in {"paused", "resumed"}] == [
        "paused", "resumed",
    ]  # fmt: skip


@pytest.mark.usefixtures("sample_app")
async def test_the_breaker_opens_on_failures_holds_claims_and_closes_after_a_probe(
    jq: JobQueue, redis: Redis, settings: Settings, running: Running
) -> None:
    quick = settings.model_copy(
        update={"concurrency": 1, "breaker_failure_threshold": 3, "breaker_cooldown_s": 0.5}
    )
    await redis.set("fail:switch", "1")
    await jq.enqueue_many(Q, [JobSpec("switch") for _ in range(3)])
    with capture_logs() as logs:
        worker = running.start(Worker(app, [Q], quick))

        async def opened() -> bool:
            breaker = worker.breakers.get("switch")
            return breaker is not None and breaker.state is BreakerState.OPEN

        await wait_for(opened)
        later = await jq.enqueue_many(Q, [JobSpec("switch") for _ in range(5)])
        assert await redis.llen(jq.keys(Q).lane("default")) == 5
        await redis.delete("fail:switch")

        async def all_done() -> bool:
            last = [(await types(redis, Q, i))[-1] for i in later]
            return last == ["acked"] * len(later)

        await wait_for(all_done)
    assert worker.breakers["switch"].state is BreakerState.CLOSED
    changes = [e for e in logs if e["event"].startswith("breaker")]
    assert changes, "breaker state changes are logged"
    assert await redis.get("switch_runs") == "8"


@pytest.mark.parametrize(
    "name", ["", "has space", "{tag}", "tab\there", "slash/y", "x" * 129, "ümlaut"]
)
async def test_bad_names_are_refused_and_nothing_is_written(
    jq: JobQueue, redis: Redis, name: str
) -> None:
    with pytest.raises(InvalidName):
        await jq.enqueue(name, "t", {})
    with pytest.raises(InvalidName):
        await jq.enqueue(Q, name, {})
    with pytest.raises(InvalidName):
        await jq.enqueue(Q, "t", {}, job_id=name)
    assert await redis.dbsize() == 0


async def test_oversized_and_non_json_payloads_are_refused_with_a_clear_error(
    redis: Redis, settings: Settings
) -> None:
    jq = JobQueue(redis, settings.model_copy(update={"max_payload_bytes": 100}))
    with pytest.raises(InvalidPayload, match="101 bytes, larger than the limit of 100"):
        await jq.enqueue(Q, "t", "x" * 99)
    with pytest.raises(InvalidPayload, match="not JSON-serialisable"):
        await jq.enqueue(Q, "t", {"when": object()})
    with pytest.raises(InvalidPayload, match="not JSON-serialisable"):
        await jq.enqueue(Q, "t", {"x": float("nan")})
    with pytest.raises(InvalidPayload):
        await jq.enqueue_many(Q, [JobSpec("t", {}), JobSpec("t", {"bad": {1, 2}})])
    assert await redis.dbsize() == 0


def test_the_cli_reports_bad_input_on_stderr_with_exit_code_2(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    url = ["--redis-url", settings.redis_url.get_secret_value()]
    assert main(["enqueue", Q, "t", "--payload", "{not json", *url]) == 2
    assert "--payload is not valid JSON" in capsys.readouterr().err
    assert main(["enqueue", "bad queue", "t", *url]) == 2
    assert "queue name 'bad queue' is not allowed" in capsys.readouterr().err
    assert main(["enqueue", Q, "t", "--lane", "urgent", *url]) == 1
    assert "unknown lane 'urgent'" in capsys.readouterr().err


def test_invalid_settings_name_the_setting_and_the_rule(tmp_path: object) -> None:
    with pytest.raises(ConfigError, match=r"heartbeat_ttl_ms .* three renewal intervals"):
        load_settings(heartbeat_ttl_ms=1000, heartbeat_interval_ms=500)
    with pytest.raises(ConfigError, match="setting concurrency"):
        load_settings(concurrency=0)
    with pytest.raises(ConfigError, match="lane_weights has 2 entries"):
        load_settings(lane_weights=[1, 2])


def test_settings_come_from_file_then_environment_then_flags(
    tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "jobqueue.yaml"  # type: ignore[operator]
    config.write_text("concurrency: 4\nmax_attempts: 7\nnamespace: fromfile\n")
    monkeypatch.setenv("JOBQUEUE_CONCURRENCY", "5")
    settings = load_settings(config, namespace="fromflag")
    assert (settings.max_attempts, settings.concurrency, settings.namespace) == (
        7, 5, "fromflag",
    )  # fmt: skip
    assert "redis://" not in repr(settings)


async def test_start_up_refuses_a_redis_that_may_evict_keys(
    redis: Redis, settings: Settings
) -> None:
    await redis.config_set("maxmemory-policy", "allkeys-lru")
    try:
        with pytest.raises(ConfigError, match="maxmemory-policy is 'allkeys-lru'"):
            await JobQueue.connect(settings)
        allowed = settings.model_copy(update={"allow_eviction_policy": True})
        await (await JobQueue.connect(allowed)).close()
    finally:
        await redis.config_set("maxmemory-policy", "noeviction")


@pytest.mark.usefixtures("sample_app")
async def test_the_engine_never_walks_the_keyspace(
    jq: JobQueue, redis: Redis, settings: Settings, running: Running
) -> None:
    """INFO commandstats shows no KEYS or SCAN after a worker, stats and the DLQ ran."""
    await redis.config_resetstat()
    ids = await jq.enqueue_many(Q, [JobSpec("noop"), JobSpec("always_fails", max_attempts=1)])
    running.start(Worker(app, [Q], settings))

    async def done() -> bool:
        return (await jq.stats(Q)).dead == 1 and "acked" in await types(redis, Q, ids[0])

    await wait_for(done)
    await jq.stats(Q)
    await jq.dead_letters(Q)
    await jq.requeue_dead(Q, all_=True)
    await running.stop()

    stats = await redis.info("commandstats")
    assert "cmdstat_evalsha" in stats
    walking = {n for n in stats if n.split("|")[0] in {"cmdstat_keys", "cmdstat_scan"}}
    assert walking == set()
