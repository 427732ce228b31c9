"""The engine as a least-privilege Redis ACL user: the rules of the deploy ACL suffice."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import NoPermissionError
from structlog.testing import capture_logs

from engine.embedded import EmbeddedRedis
from engine.errors import ConfigError
from engine.queue import JobQueue, JobSpec
from engine.settings import Settings, load_settings
from engine.worker import Worker
from tests.cluster import apps
from tests.cluster.helpers import count_by_job, run_until_acked, shipped_events
from tests.security.conftest import FAST, user_url
from tests.security.servers import ADMIN

LOUD = ("warning", "error", "critical")


async def _run_jobs(settings: Settings) -> set[str]:
    """Enqueue plain, retried and delayed jobs, run a worker until all are acked."""
    specs = [JobSpec("record") for _ in range(10)]
    specs += [JobSpec("fail_first"), JobSpec("record", delay_s=0.2)]
    jq = await JobQueue.connect(settings)
    try:
        job_ids = set(await jq.enqueue_many("billing", specs))
        await run_until_acked(Worker(apps.app, ["billing"], settings), len(job_ids))
    finally:
        await jq.close()
    return job_ids


async def _operate(settings: Settings) -> None:
    """The admin side: stats, dead letters, pause and resume, the queue registry."""
    jq = await JobQueue.connect(settings)
    try:
        assert (await jq.stats("billing")).ready == 0
        assert await jq.dead_letters("billing") == []
        assert await jq.pause("billing")
        assert await jq.resume("billing")
        assert await jq.queues() == ["billing"]
    finally:
        await jq.close()


async def _denied_commands(server: EmbeddedRedis) -> list[str]:
    admin = Redis.from_url(user_url(server, ADMIN[1], user=ADMIN[0]), decode_responses=True)
    try:
        entries = await admin.acl_log()
    finally:
        await admin.aclose()
    return [f"{e['username']}: {e['object']} ({e['reason']})" for e in entries]


async def test_the_deploy_acl_user_runs_the_whole_job_cycle(
    acl_server: EmbeddedRedis, acl_settings: Settings, tmp_path: Path
) -> None:
    """As the `jobqueue` user of deploy/redis/users.acl.template, a worker enqueues,
    claims, retries, promotes, acks and ships, and operators read and pause: Redis denies
    no command on the way (its ACL LOG stays empty) and nothing is logged as a warning."""
    with capture_logs() as logs:
        job_ids = await _run_jobs(acl_settings)
        await _operate(acl_settings)

    assert await _denied_commands(acl_server) == []
    assert [e for e in logs if e["log_level"] in LOUD] == []
    acked = count_by_job(shipped_events(tmp_path / "ledger"), "acked")
    assert acked == Counter({("billing", job_id): 1 for job_id in job_ids})


async def test_the_deploy_acl_lets_an_anonymous_client_only_ping(
    acl_server: EmbeddedRedis,
) -> None:
    """The password-less default user exists for health checks: PING, and nothing else."""
    anonymous = Redis(port=acl_server.port, decode_responses=True)
    try:
        assert await anonymous.ping()
        with pytest.raises(NoPermissionError):
            await anonymous.get("jobqueue:{billing}:meta")
    finally:
        await anonymous.aclose()


async def test_a_wrong_password_is_a_clear_error_that_never_shows_the_password(
    acl_server: EmbeddedRedis,
) -> None:
    """A refused password stops start-up with a ConfigError saying so; neither the
    message nor the exception chain holds the password."""
    wrong = "not-the-password-4f1c"
    settings = load_settings(redis_url=user_url(acl_server, wrong), **FAST)
    with pytest.raises(ConfigError, match="refused the credentials") as caught:
        await JobQueue.connect(settings)
    assert wrong not in str(caught.value)
    assert wrong not in repr(caught.value)
    assert caught.value.__cause__ is None
