"""`replay state` and `replay verify`: queues rebuilt from events alone, and compared with
the live Redis the engine wrote them from."""

from __future__ import annotations

from pathlib import Path

from redis.asyncio import Redis

from engine.keys import QueueKeys
from engine.settings import Settings
from replay.times import format_ts
from tests.redis_server import RedisServer
from tests.replay.conftest import Replay
from tests.replay.helpers import (
    Q,
    dead_job,
    killed_worker_job,
    retried_job,
    running_job,
    ship_to_ndjson,
    stream_events,
)

KEYS = QueueKeys(Q)


async def _busy_queue(redis: Redis, settings: Settings) -> None:
    """A queue with a done job, a dead one, one in flight and one waiting."""
    await killed_worker_job(redis, settings)
    await dead_job(redis, settings)
    await running_job(redis, settings)
    from engine.queue import JobQueue

    await JobQueue(redis, settings).enqueue(Q, "send", {}, job_id="job-waiting", lane="low")


async def test_state_at_a_time_shows_what_was_in_flight_then(
    redis: Redis, settings: Settings, redis_server: RedisServer, replay: Replay
) -> None:
    job_id = await killed_worker_job(redis, settings)
    events = await stream_events(redis)
    first_claim = next(e for e in events if e.type == "claimed")

    then = replay(
        "state", "--at", format_ts(first_claim.ts_ms), "--source", redis_server.url, "--json"
    )
    now = replay("state", "--source", redis_server.url, "--json")

    [queue_then] = then.json()["queues"]
    assert queue_then["in_flight"] == {"doomed": [job_id]}
    [queue_now] = now.json()["queues"]
    assert queue_now["in_flight"] == {}
    assert queue_now["job_states"] == {"done": 1}
    assert queue_now["workers"] == ["survivor"]


async def test_state_now_matches_what_redis_holds(
    redis: Redis, settings: Settings, redis_server: RedisServer, tmp_path: Path, replay: Replay
) -> None:
    await _busy_queue(redis, settings)
    await ship_to_ndjson(redis, tmp_path, delete=True)

    result = replay("state", "--source", str(tmp_path), "--json")

    [queue] = result.json()["queues"]
    assert queue["lanes"] == {"default": [], "low": await redis.lrange(KEYS.lane("low"), 0, -1)}
    assert queue["in_flight"] == {"w1": await redis.lrange(KEYS.processing("w1"), 0, -1)}
    assert queue["dead"] == await redis.lrange(KEYS.dead, 0, -1) == ["job-dead"]
    assert queue["job_states"] == {"active": 1, "dead": 1, "done": 1, "ready": 1}


async def test_state_prints_plain_tables_per_queue(
    redis: Redis, settings: Settings, redis_server: RedisServer, replay: Replay
) -> None:
    await _busy_queue(redis, settings)

    result = replay("state", "--source", redis_server.url)

    assert result.code == 0
    assert f"Queue {Q} at " in result.out
    assert "job states: active 1, dead 1, done 1, ready 1" in result.out
    assert any(line.split()[:3] == ["low", "1", "job-waiting"] for line in result.out.splitlines())
    assert any(line.split()[:3] == ["w1", "1", "job-running"] for line in result.out.splitlines())


async def test_verify_agrees_with_redis_when_the_ledger_is_split_between_folder_and_stream(
    redis: Redis, settings: Settings, redis_server: RedisServer, tmp_path: Path, replay: Replay
) -> None:
    """The shipped head comes from the folder, the un-shipped tail from the stream."""
    await killed_worker_job(redis, settings)
    await ship_to_ndjson(redis, tmp_path, delete=True)
    await dead_job(redis, settings)
    await running_job(redis, settings)

    result = replay(
        "verify", "--redis-url", redis_server.url, "--source", str(tmp_path),
        "--source", redis_server.url,
    )  # fmt: skip

    assert result.code == 0, result.out + result.err
    assert "No divergence in 1 queue(s)." in result.out
    assert "3 job records compared" in result.out


async def test_verify_finds_a_stray_id_pushed_into_a_lane(
    redis: Redis, settings: Settings, redis_server: RedisServer, replay: Replay
) -> None:
    await _busy_queue(redis, settings)
    await redis.lpush(KEYS.lane("high"), "stray-1")

    result = replay(
        "verify", "--redis-url", redis_server.url, "--source", redis_server.url, "--json"
    )

    assert result.code == 1
    divergences = result.json()["divergences"]
    assert {
        "queue": Q,
        "subject": "lane high",
        "ledger": "not there",
        "live": "holds [stray-1]",
    } in divergences
    assert {
        "queue": Q,
        "subject": "job stray-1",
        "ledger": "no record",
        "live": "no record",
    } not in divergences


async def test_verify_finds_a_job_whose_state_was_changed_behind_the_ledger(
    redis: Redis, settings: Settings, redis_server: RedisServer, replay: Replay
) -> None:
    job_id = await running_job(redis, settings)
    await redis.hset(KEYS.job(job_id), "state", "ready")

    result = replay("verify", "--redis-url", redis_server.url, "--source", redis_server.url)

    assert result.code == 1
    row = next(line for line in result.out.splitlines() if f"job {job_id}" in line)
    assert row.split() == [Q, "job", job_id, "active", "on", "w1", "ready"]
    assert "1 divergences." in result.out


async def test_verify_lists_every_kind_of_divergence(
    redis: Redis, settings: Settings, redis_server: RedisServer, replay: Replay
) -> None:
    """A job lost from a processing list, a dead letter removed, a scheduled entry added, a
    worker missing from the registry: each is listed."""
    await _busy_queue(redis, settings)
    await redis.delete(KEYS.processing("w1"))
    await redis.lrem(KEYS.dead, 1, "job-dead")
    await redis.zadd(KEYS.scheduled, {"job-waiting": 1_900_000_000_000})
    await redis.srem(KEYS.workers, "survivor")

    result = replay(
        "verify", "--redis-url", redis_server.url, "--source", redis_server.url, "--json"
    )

    assert result.code == 1
    subjects = {d["subject"] for d in result.json()["divergences"]}
    assert subjects >= {"processing w1", "dead letters", "scheduled job-waiting", "worker registry"}


async def test_verify_leaves_alone_a_done_job_whose_record_expired(
    redis: Redis, settings: Settings, redis_server: RedisServer, replay: Replay
) -> None:
    job_id = await retried_job(redis, settings)
    await redis.delete(KEYS.job(job_id))  # as job_retention_ms would

    result = replay("verify", "--redis-url", redis_server.url, "--source", redis_server.url)

    assert result.code == 0, result.out
