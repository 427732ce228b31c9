"""A worker and a producer that find their Redis master through Sentinel."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.queue import JobQueue, JobSpec
from engine.settings import Settings, load_settings
from engine.worker import Worker
from tests.cluster import apps
from tests.cluster.helpers import run_until_acked
from tests.cluster.servers import LocalSentinel

pytestmark = pytest.mark.slow


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[LocalSentinel]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("the Sentinel test needs redis-server on PATH")
    local = LocalSentinel(Path(binary), tmp_path / "sentinel")
    try:
        yield local.start()
    finally:
        local.stop()


@pytest.fixture
def sentinel_settings(sentinel: LocalSentinel) -> Settings:
    return load_settings(
        redis_url=sentinel.url,
        heartbeat_ttl_ms=1500,
        heartbeat_interval_ms=500,
        idle_block_s=1.0,
        shutdown_grace_s=5.0,
    )


async def test_jobs_enqueued_through_sentinel_are_claimed_and_acked(
    sentinel_settings: Settings,
) -> None:
    """A redis+sentinel:// URL reaches the master Sentinel names: jobs enqueued there are
    claimed and acked, and each `acked` event lands in the master's outbox."""
    apps.runs.clear()
    jq = await JobQueue.connect(sentinel_settings)
    try:
        job_ids = await jq.enqueue_many("mail", [JobSpec("record", {"n": n}) for n in range(10)])
        await run_until_acked(Worker(apps.app, ["mail"], sentinel_settings), len(job_ids))
        events = await jq.events("mail")
    finally:
        await jq.close()

    assert sorted(f["job"] for _, f in events if f["type"] == "acked") == sorted(job_ids)
    assert set(apps.runs) == {("mail", job_id) for job_id in job_ids}
