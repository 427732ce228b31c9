"""The engine, the worker, the reaper, the shipper and admin reads on a real Redis Cluster.

Each test spreads its queues over the three masters (one hash tag per queue, so each
queue's keys share one slot): a command that crossed slots would fail with CROSSSLOT,
and a job lost between masters would miss its `acked` event in the ledger.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster
from structlog.testing import capture_logs

from engine import admin
from engine.errors import ConfigError
from engine.ops import WorkerOps
from engine.queue import JobQueue, JobSpec
from engine.settings import Settings
from engine.worker import Worker
from tests.cluster import apps
from tests.cluster.helpers import count_by_job, run_until_acked, shipped_events, wait_until
from tests.cluster.servers import LocalCluster

pytestmark = pytest.mark.slow

Job = tuple[str, str]
LOUD = ("warning", "error", "critical")


async def _enqueue_mix(jq: JobQueue, queues: list[str]) -> set[Job]:
    """Plain, retried and delayed jobs on every queue; returns (queue, job id) of each."""
    jobs: set[Job] = set()
    for queue in queues:
        specs = [JobSpec("record", {"n": n}) for n in range(30)]
        specs += [JobSpec("fail_first", {"n": n}) for n in range(3)]
        specs += [JobSpec("record", {"n": n}, delay_s=0.3) for n in range(5)]
        jobs |= {(queue, job_id) for job_id in await jq.enqueue_many(queue, specs)}
    return jobs


async def _outbox_lengths(jq: JobQueue, queues: list[str]) -> list[int]:
    return [await jq.redis.xlen(jq.keys(queue).events) for queue in queues]


async def test_jobs_on_three_masters_are_each_run_and_acked_once(
    cluster_settings: Settings, cluster_jq: JobQueue, spread_queues: list[str], tmp_path: Path
) -> None:
    """Plain, retried and delayed jobs on queues of three masters: each one runs to a
    single `acked` event in the worker's ledger, with no warning logged on the way."""
    apps.runs.clear()
    jq = cluster_jq
    jobs = await _enqueue_mix(jq, spread_queues)
    worker = Worker(apps.app, spread_queues, cluster_settings)

    with capture_logs() as logs:
        await run_until_acked(worker, len(jobs))

    events = shipped_events(tmp_path / "ledger")
    assert count_by_job(events, "acked") == Counter(dict.fromkeys(jobs, 1))
    assert set(apps.runs) == jobs
    assert [e for e in logs if e["log_level"] in LOUD] == []
    assert await _outbox_lengths(jq, spread_queues) == [0, 0, 0]


async def test_a_dead_workers_jobs_are_reaped_and_finished_on_every_master(
    cluster_settings: Settings, cluster_jq: JobQueue, spread_queues: list[str], tmp_path: Path
) -> None:
    """A worker that claimed jobs on three masters and died is reaped queue by queue; its
    jobs go back to their lanes and another worker acks each of them once."""
    jq = cluster_jq
    claimed: set[Job] = set()
    for queue in spread_queues:
        await jq.enqueue_many(queue, [JobSpec("record", {"n": n}) for n in range(4)])
        ghost = WorkerOps(jq.scripts, queue, "ghost", cluster_settings)
        await ghost.register({"host": "gone"})
        claimed |= {(queue, job.id) for job in (await ghost.claim(4)).jobs}
    assert len(claimed) == 12

    await run_until_acked(Worker(apps.app, spread_queues, cluster_settings), len(claimed))

    events = shipped_events(tmp_path / "ledger")
    assert count_by_job(events, "reaped") == Counter(dict.fromkeys(claimed, 1))
    assert count_by_job(events, "acked") == Counter(dict.fromkeys(claimed, 1))
    reaped_workers = [(e.queue, e.worker) for e in events if e.type == "worker_reaped"]
    assert sorted(reaped_workers) == [(queue, "ghost") for queue in spread_queues]


async def test_stats_dead_letters_and_operator_commands_work_on_every_master(
    cluster_settings: Settings, cluster_jq: JobQueue, spread_queues: list[str]
) -> None:
    """Stats, dead-letter listing, requeue, purge, pause and resume each read or change
    one queue on its own master, and the queue registry lists all three."""
    jq = cluster_jq
    for queue in spread_queues:
        await _dead_letter_one(jq, queue, cluster_settings)
        await jq.enqueue_many(queue, [JobSpec("record"), JobSpec("record", lane="high")])

        stats = await jq.stats(queue)
        assert stats.lanes == {"high": 1, "default": 1, "low": 0}
        assert (stats.dead, stats.in_flight) == (1, {"operator-test": 0})
        (letter,) = await jq.dead_letters(queue)
        assert (letter["task"], letter["dead_reason"]) == ("record", "non_retryable")

        assert await jq.pause(queue)
        assert await jq.resume(queue)
        assert await jq.requeue_dead(queue, all_=True) == (1, [])
        assert await jq.purge_dead(queue, ["never-there"]) == (0, ["never-there"])
        assert (await jq.stats(queue)).lanes["default"] == 2

    assert await jq.queues() == spread_queues


async def test_admin_reads_work_on_every_master(
    cluster_settings: Settings, cluster_jq: JobQueue, spread_queues: list[str]
) -> None:
    """`jobqueue workers`, `peek` and the dashboard's backlog read each queue on its own
    master (the server's clock is read apart: a cluster pipeline refuses TIME)."""
    jq = cluster_jq
    for queue in spread_queues:
        await _dead_letter_one(jq, queue, cluster_settings)
        await jq.enqueue(queue, "record", {"n": 1})

        (view,) = await admin.workers(jq, queue)
        assert view.worker == "operator-test"
        assert [job.task for job in await admin.peek(jq, queue)] == ["record"]
        backlog = await admin.ledger_backlog(jq, queue)
        assert backlog.events > 0
        assert backlog.oldest_age_ms is not None


async def _dead_letter_one(jq: JobQueue, queue: str, settings: Settings) -> None:
    await jq.enqueue(queue, "record", {"doomed": True})
    ops = WorkerOps(jq.scripts, queue, "operator-test", settings)
    await ops.register({"host": "test"})
    (job,) = (await ops.claim(1)).jobs
    assert await ops.fail(job, "ValueError: bad input", retryable=False) == "dead:non_retryable"


async def test_the_standalone_shipper_ships_every_queue_of_the_cluster(
    cluster: LocalCluster, cluster_jq: JobQueue, spread_queues: list[str], tmp_path: Path
) -> None:
    """`jobqueue ship` given a redis+cluster:// URL finds the queues in the registry,
    ships each master's outbox to its sink and deletes what it shipped."""
    jq = cluster_jq
    jobs = {(q, await jq.enqueue(q, "record")) for q in spread_queues for _ in range(10)}
    folder = tmp_path / "shipped"
    shipper = _start_shipper(cluster.url, folder)
    try:

        async def drained() -> bool:
            return await _outbox_lengths(jq, spread_queues) == [0, 0, 0]

        await wait_until(drained)
    finally:
        shipper.send_signal(signal.SIGTERM)
        _, stderr = shipper.communicate(timeout=15)

    assert shipper.returncode == 0, stderr
    assert count_by_job(shipped_events(folder), "enqueued") == Counter(dict.fromkeys(jobs, 1))


def _start_shipper(url: str, folder: Path) -> subprocess.Popen[str]:
    command = [
        sys.executable, "-m", "engine.cli", "ship", "--sink", "ndjson", "--folder", str(folder),
        "--redis-url", url, "--consumer", "cluster-test",
    ]  # fmt: skip
    return subprocess.Popen(
        command, env=os.environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


async def test_start_up_refuses_a_cluster_whose_last_master_may_evict_keys(
    cluster: LocalCluster, cluster_client: RedisCluster, cluster_settings: Settings
) -> None:
    """The eviction-policy check reads every master, not just the one first asked."""
    last = cluster_client.get_node("127.0.0.1", cluster.nodes[-1].port)
    await cluster_client.config_set("maxmemory-policy", "allkeys-lru", target_nodes=last)
    try:
        with pytest.raises(ConfigError, match="allkeys-lru"):
            await JobQueue.connect(cluster_settings)
    finally:
        await cluster_client.config_set("maxmemory-policy", "noeviction", target_nodes=last)
