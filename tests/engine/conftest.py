"""Fixtures for worker tests: the sample app's Redis and a way to run workers."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from engine.queue import JobQueue
from engine.settings import Settings
from engine.worker import Worker
from tests.apps import sample
from tests.redis_server import RedisServer


@pytest.fixture
async def sample_app(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[None]:
    """Point the sample handlers' run counters at the test server."""
    monkeypatch.setenv("JOBQUEUE_TEST_REDIS_URL", redis_server.url)
    sample._redis = None
    yield
    if sample._redis is not None:
        await sample._redis.aclose()
        sample._redis = None


@pytest.fixture
async def jq(redis: object, settings: Settings) -> AsyncIterator[JobQueue]:
    queue = await JobQueue.connect(settings)
    yield queue
    await queue.close()


Predicate = Callable[[], Awaitable[bool]]


async def wait_for(predicate: Predicate, timeout_s: float = 20.0, step_s: float = 0.02) -> None:
    """Poll `predicate` until it holds; fail the test with a clear message otherwise."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"condition not met within {timeout_s}s")
        await asyncio.sleep(step_s)


class Running:
    """Workers started in the test's event loop, stopped gracefully at the end."""

    def __init__(self) -> None:
        self.workers: list[tuple[Worker, asyncio.Task[None]]] = []

    def start(self, worker: Worker) -> Worker:
        self.workers.append((worker, asyncio.create_task(worker.run())))
        return worker

    async def stop(self, worker: Worker | None = None) -> None:
        for w, task in list(self.workers):
            if worker is None or w is worker:
                w.stop()
                await self._stopped(w, task)
                self.workers.remove((w, task))

    @staticmethod
    async def _stopped(worker: Worker, task: asyncio.Task[None]) -> None:
        """Wait for a graceful stop; a stop that hangs fails with every task's stack."""
        done, _ = await asyncio.wait([task], timeout=worker.settings.shutdown_grace_s + 20)
        if done:
            await task
            return
        stacks = io.StringIO()
        for pending in asyncio.all_tasks():
            pending.print_stack(file=stacks)
        pytest.fail(f"worker {worker.worker_id} did not stop:\n{stacks.getvalue()}")


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    handle = Running()
    yield handle
    await handle.stop()
