"""Fixtures for the admin commands and the dashboard: a queue client and the CLI."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from redis.asyncio import Redis

from engine.cli import main
from engine.queue import JobQueue
from engine.settings import Settings


@pytest.fixture
async def jq(redis: Redis, settings: Settings) -> AsyncIterator[JobQueue]:
    queue = await JobQueue.connect(settings)
    yield queue
    await queue.close()


@dataclass
class Cli:
    """Runs `jobqueue ...` against the test server, off the event loop (it has its own)."""

    url: str
    capsys: pytest.CaptureFixture[str]

    async def __call__(self, *argv: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(main, [*argv, "--redis-url", self.url])
        out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture
def cli(redis: Redis, settings: Settings, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(settings.redis_url.get_secret_value(), capsys)
