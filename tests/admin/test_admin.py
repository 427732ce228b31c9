"""The admin commands: workers, peek, purge, pause and resume, through `jobqueue ...`."""

from __future__ import annotations

import json

from redis.asyncio import Redis

from engine import admin
from engine.queue import JobQueue, JobSpec
from engine.settings import Settings
from engine.tui import take_snapshot
from tests.admin.conftest import Cli
from tests.admin.helpers import LIVE_TTL_MS, dead_letter, live_worker
from tests.engine.helpers import events

Q = "admin"
ADMIN_COMMANDS = [
    ("workers", "--json"),
    ("peek", Q, "--json"),
    ("stats", "--json"),
    ("dlq", "list", Q, "--json"),
    ("pause", Q, "--json"),
    ("resume", Q, "--json"),
    ("purge", Q, "--lane", "low", "--yes", "--json"),
]


async def test_workers_shows_each_heartbeat_age_and_the_jobs_in_flight(
    jq: JobQueue, redis: Redis, settings: Settings, cli: Cli
) -> None:
    """A live worker has a recent heartbeat and its claimed ids; a dead one is 'expired'."""
    ids = await jq.enqueue_many(Q, [JobSpec("t"), JobSpec("t")])
    busy = await live_worker(redis, settings, Q, "w1")
    await busy.claim(2)
    gone = await live_worker(redis, settings, Q, "w2")
    await redis.delete(gone.keys.heartbeat("w2"))

    code, out, _ = await cli("workers", Q, "--json")

    assert code == 0
    w1, w2 = json.loads(out)
    assert (w1["worker"], w1["state"], w1["in_flight"]) == ("w1", "alive", 2)
    assert sorted(w1["job_ids"]) == sorted(ids)
    assert 0 <= w1["heartbeat_age_ms"] < LIVE_TTL_MS
    assert 0 < w1["ttl_left_ms"] <= LIVE_TTL_MS
    assert (w2["worker"], w2["state"], w2["heartbeat_age_ms"], w2["in_flight"]) == (
        "w2", "expired", None, 0,
    )  # fmt: skip


async def test_workers_without_a_queue_lists_every_registered_queue(
    redis: Redis, settings: Settings, cli: Cli
) -> None:
    """The queue registry names the queues: nothing is looked up by pattern."""
    for queue in ("q1", "q2"):
        await redis.sadd("jobqueue:queues", queue)
        await live_worker(redis, settings, queue, f"w-{queue}")

    code, out, _ = await cli("workers", "--json")
    text_code, text, _ = await cli("workers")

    assert code == text_code == 0
    assert [(w["queue"], w["worker"]) for w in json.loads(out)] == [("q1", "w-q1"), ("q2", "w-q2")]
    assert "w-q1" in text
    assert "alive" in text


async def test_peek_shows_the_head_of_a_lane_and_changes_nothing(
    jq: JobQueue, redis: Redis, cli: Cli
) -> None:
    """Ids in lane order, with task, attempts, creation time and a truncated payload."""
    long_text = "x" * (admin.PAYLOAD_CHARS * 2)
    ids = await jq.enqueue_many(
        Q, [JobSpec("a", {"n": 1}, lane="low"), JobSpec("b", long_text, lane="low"),
            JobSpec("c", lane="low")],
    )  # fmt: skip
    before = await redis.xlen(jq.keys(Q).events)

    code, out, _ = await cli("peek", Q, "--lane", "low", "-n", "2", "--json")

    assert code == 0
    first, second = json.loads(out)
    assert (first["id"], first["task"], first["attempts"], first["state"]) == (
        ids[0], "a", 0, "ready",
    )  # fmt: skip
    assert json.loads(first["payload"]) == {"n": 1}
    assert isinstance(first["created_ms"], int)
    assert second["id"] == ids[1]
    assert second["payload_truncated"]
    assert len(second["payload"]) == admin.PAYLOAD_CHARS
    assert await redis.llen(jq.keys(Q).lane("low")) == 3
    assert await redis.xlen(jq.keys(Q).events) == before


async def test_peek_refuses_an_unknown_lane_as_bad_input(jq: JobQueue, cli: Cli) -> None:
    await jq.enqueue(Q, "t")

    code, _, err = await cli("peek", Q, "--lane", "urgent")

    assert code == 2
    assert "unknown lane 'urgent'" in err


async def test_purge_without_yes_is_refused_and_deletes_nothing(
    jq: JobQueue, redis: Redis, cli: Cli
) -> None:
    await jq.enqueue(Q, "t", lane="low")

    code, _, err = await cli("purge", Q, "--lane", "low")

    assert code == 2
    assert "--yes" in err
    assert await redis.llen(jq.keys(Q).lane("low")) == 1


async def test_purge_deletes_every_ready_job_of_the_lane_with_a_purged_event_each(
    jq: JobQueue, redis: Redis, cli: Cli
) -> None:
    """More jobs than one batch holds: the command loops until the lane is empty."""
    total = admin.PURGE_BATCH * 2 + 7
    low: list[str] = []
    for start in range(0, total, 500):
        batch = [JobSpec("t", lane="low") for _ in range(min(500, total - start))]
        low += await jq.enqueue_many(Q, batch)
    kept = await jq.enqueue(Q, "t", lane="high")

    code, out, _ = await cli("purge", Q, "--lane", "low", "--yes", "--by", "alice", "--json")

    assert code == 0
    assert json.loads(out) == {"queue": Q, "lane": "low", "purged": total, "stray": 0}
    assert await redis.llen(jq.keys(Q).lane("low")) == 0
    assert not await redis.exists(jq.keys(Q).job(low[0]), jq.keys(Q).job(low[-1]))
    assert (await jq.job(Q, kept))["state"] == "ready"
    purged = [e for e in await events(redis, Q) if e["type"] == "purged"]
    assert [e["job"] for e in purged] == low
    assert {(e["from"], e["lane"], e["reason"], e["seq"]) for e in purged} == {
        ("ready", "low", "operator", "2"),
    }  # fmt: skip
    assert {json.loads(e["attrs"])["by"] for e in purged} == {"alice"}


async def test_a_stray_lane_entry_leaves_with_an_event_that_names_what_was_found(
    jq: JobQueue, redis: Redis
) -> None:
    """An id without a ready record is dropped from the lane; no record is touched."""
    job_id = await jq.enqueue(Q, "t")
    await redis.rpush(jq.keys(Q).lane("default"), "ghost")

    result = await admin.purge_lane(jq, Q, "default", by="bob", batch=1)

    assert (result.purged, result.stray) == (1, 1)
    ghost = [e for e in await events(redis, Q) if e.get("job") == "ghost"]
    assert [(e["type"], e["reason"]) for e in ghost] == [("purged", "operator")]
    assert "seq" not in ghost[0]
    assert json.loads(ghost[0]["attrs"]) == {"by": "bob", "stray": "missing"}
    assert not await redis.exists(jq.keys(Q).job(job_id), jq.keys(Q).job("ghost"))


async def test_pause_and_resume_answer_in_json_and_say_when_nothing_changed(
    jq: JobQueue, cli: Cli
) -> None:
    await jq.enqueue(Q, "t")

    replies = [await cli(command, Q, "--json") for command in ("pause", "pause", "resume")]

    assert [code for code, _, _ in replies] == [0, 0, 0]
    assert [json.loads(out) for _, out, _ in replies] == [
        {"queue": Q, "paused": True, "changed": True},
        {"queue": Q, "paused": True, "changed": False},
        {"queue": Q, "paused": False, "changed": True},
    ]


async def test_the_admin_commands_and_the_dashboard_never_walk_the_keyspace(
    jq: JobQueue, redis: Redis, settings: Settings, cli: Cli
) -> None:
    """INFO commandstats shows no KEYS or SCAN after every admin read and change."""
    ops = await live_worker(redis, settings, Q, "w1")
    await dead_letter(jq, ops)
    await jq.enqueue_many(Q, [JobSpec("t", lane="low") for _ in range(3)])
    await redis.config_resetstat()

    for argv in ADMIN_COMMANDS:
        assert (await cli(*argv))[0] == 0
    await take_snapshot(jq, [])

    stats = await redis.info("commandstats")
    assert "cmdstat_evalsha" in stats
    walking = {n for n in stats if n.split("|")[0] in {"cmdstat_keys", "cmdstat_scan"}}
    assert walking == set()
