"""Fixtures shared by the whole suite: real Redis servers, one per version found."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog
from redis.asyncio import Redis

import engine.logs
from engine.settings import Settings, load_settings
from tests.redis_server import RedisServer, redis_binaries

BINARIES = redis_binaries()

# Workers ship their ledger to NDJSON under ledger_folder; keep the tests' out of the tree.
os.environ.setdefault("JOBQUEUE_LEDGER_FOLDER", tempfile.mkdtemp(prefix="jobqueue-test-ledger-"))
# Engine tests read each transition's event from the outbox stream, so workers do not
# ship (and delete) them unless a test turns shipping on; tests/ledger does.
os.environ.setdefault("JOBQUEUE_LEDGER_SHIP_IN_WORKER", "false")


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """CLI entry points configure structlog for their process; undo it after each test
    so one test's log level never hides another test's captured log events."""
    yield
    structlog.reset_defaults()
    engine.logs._configured = False


@pytest.fixture(scope="session", params=sorted(BINARIES), ids=lambda v: f"redis-{v}")
def redis_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RedisServer]:
    """A private redis-server of each version found, for the whole session."""
    version: str = request.param
    server = RedisServer(BINARIES[version], tmp_path_factory.mktemp(f"redis-{version}")).start()
    yield server
    server.stop()


@pytest.fixture
def settings(redis_server: RedisServer) -> Settings:
    """Settings pointing at the test server, with short heartbeats so tests run quickly."""
    return load_settings(
        redis_url=redis_server.url,
        heartbeat_ttl_ms=1500,
        heartbeat_interval_ms=500,
        idle_block_s=1.0,
        backoff_base_ms=10,
        backoff_cap_ms=50,
        shutdown_grace_s=5.0,
    )


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A client on a clean database (the server is ours alone, so FLUSHALL is safe)."""
    client = Redis.from_url(redis_server.url, decode_responses=True)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path
