"""jobqueue: one Lua script per transition, each appending its event to the queue's
outbox stream; the worker claims in batches and groups its acks.

Runs in /work/main/.venv. The worker reads its settings as `jobqueue worker` does, so
the driver turns the ledger on or off with JOBQUEUE_LEDGER_SHIP_IN_WORKER and points it
at a folder with JOBQUEUE_LEDGER_FOLDER. The stamp handler is bench/apps.py's.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from bench import apps
from bench.peers import protocol
from bench.peers.protocol import CONCURRENCY, NOOP, QUEUE, SLEEP, STAMP, Peer
from engine.app import App, JobContext
from engine.connection import create_redis
from engine.logs import configure_logging
from engine.queue import JobQueue, JobSpec
from engine.settings import load_settings
from engine.worker import run_worker as run_engine_worker

if (apps.URL_ENV, apps.STARTED_KEY) != (protocol.URL_ENV, protocol.STARTED_KEY):
    msg = "bench/apps.py and bench/peers/protocol.py disagree on the stamp handler's keys"
    raise RuntimeError(msg)

app = App()
app.register(STAMP, apps.stamp)  # pushes "<job id> <time>": the tag is the job id


@app.task(NOOP)
async def noop(ctx: JobContext, payload: Any) -> None:
    await protocol.marks().run(ctx.job_id)


@app.task(SLEEP)
async def sleep_1ms(ctx: JobContext, payload: Any) -> None:
    await asyncio.sleep(0.001)
    await protocol.marks().run(ctx.job_id)


class JobqueuePeer(Peer):
    module = "bench.peers.jobqueue"
    packages = ("jobqueue",)
    batch_api = "enqueue_many"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.settings = load_settings(redis_url=url)
        self.ledger = self.settings.ledger_ship_in_worker
        self.name = f"jobqueue-ledger-{'on' if self.ledger else 'off'}"

    async def open(self) -> None:
        self.jq = JobQueue(create_redis(self.settings), self.settings)

    async def close(self) -> None:
        await self.jq.close()

    async def enqueue(self, task: str, n: int) -> str:
        return await self.jq.enqueue(QUEUE, task, {"n": n})

    async def enqueue_batch(self, task: str, start: int, count: int) -> None:
        await self.jq.enqueue_many(QUEUE, [JobSpec(task, {"n": i})
                                           for i in range(start, start + count)])  # fmt: skip

    async def pending(self) -> int:
        stats = await self.jq.stats(QUEUE)
        return stats.ready + stats.scheduled + sum(stats.in_flight.values())

    def environment(self) -> dict[str, str]:
        return super().environment() | {"ledger_ship_in_worker": str(self.ledger).lower()}


def run_worker(url: str) -> None:
    configure_logging("WARNING", json_lines=True)
    settings = load_settings(redis_url=url, concurrency=CONCURRENCY)
    protocol.signal_ready()
    asyncio.run(run_engine_worker(app, [QUEUE], settings))  # until SIGTERM


if __name__ == "__main__":
    sys.exit(protocol.main(JobqueuePeer, run_worker))
