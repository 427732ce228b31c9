"""Fixtures for the cluster tests: one three-master cluster per module, emptied per test."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster

from engine.keys import QueueKeys
from engine.queue import JobQueue
from engine.settings import Settings, load_settings
from tests.cluster.servers import LocalCluster


def _redis_server() -> Path:
    found = shutil.which("redis-server")
    if found is None:
        pytest.skip("the cluster tests need redis-server (7.0 or newer) on PATH")
    return Path(found)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Three masters on free loopback ports, all 16,384 slots covered."""
    local = LocalCluster(_redis_server(), tmp_path_factory.mktemp("cluster")).start()
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture
async def cluster_client(cluster: LocalCluster) -> AsyncIterator[RedisCluster]:
    """A plain cluster client on emptied masters (the cluster is ours alone)."""
    client = RedisCluster.from_url(cluster.url.replace("redis+cluster", "redis"))
    await client.flushall(target_nodes=RedisCluster.PRIMARIES)
    yield client
    await client.aclose()


@pytest.fixture
def cluster_settings(
    cluster: LocalCluster, cluster_client: RedisCluster, tmp_path: Path
) -> Settings:
    """Settings on the cluster URL, short heartbeats, the ledger shipped under tmp_path."""
    return load_settings(
        redis_url=cluster.url,
        heartbeat_ttl_ms=1500,
        heartbeat_interval_ms=500,
        idle_block_s=1.0,
        backoff_base_ms=10,
        backoff_cap_ms=50,
        shutdown_grace_s=5.0,
        # Jobs here fail on purpose; the per-task breaker would pause their task for 30 s.
        breaker_enabled=False,
        ledger_ship_in_worker=True,
        ledger_folder=tmp_path / "ledger",
    )


@pytest.fixture
async def cluster_jq(cluster_settings: Settings) -> AsyncIterator[JobQueue]:
    """A producer and admin client on the cluster, checked at connect like any other."""
    jq = await JobQueue.connect(cluster_settings)
    yield jq
    await jq.close()


@pytest.fixture
def spread_queues(cluster: LocalCluster) -> list[str]:
    """One queue name per master: their hash tags land on three different nodes."""
    chosen: dict[int, str] = {}
    for n in range(1000):
        name = f"orders-{n}"
        chosen.setdefault(cluster.node_of(QueueKeys(name).events), name)
        if len(chosen) == len(cluster.nodes):
            return sorted(chosen.values())
    pytest.fail("no queue names found for every master")
