"""arq: asyncio workers that poll a sorted set of job ids and take each with WATCH/MULTI.

Runs in bench/.peers/arq (arq pins redis-py below 6). Handlers take the payload as the
keyword argument `n`. The worker keeps arq's defaults but for `max_jobs` (32).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from arq import Worker, create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.worker import func

from bench.peers import protocol
from bench.peers.protocol import CONCURRENCY, NOOP, QUEUE, SLEEP, STAMP, Peer


async def noop(ctx: dict[str, Any], *, n: int) -> None:
    await protocol.marks().run(ctx["job_id"])


async def sleep_1ms(ctx: dict[str, Any], *, n: int) -> None:
    await asyncio.sleep(0.001)
    await protocol.marks().run(ctx["job_id"])


async def stamp(ctx: dict[str, Any], *, n: int) -> None:
    await protocol.marks().stamp(ctx["job_id"])


class ArqPeer(Peer):
    name = "arq"
    module = "bench.peers.arq"
    packages = ("arq",)
    notes = ("arq: no batch enqueue API; a queue is filled by 8 concurrent `enqueue_job` loops. "
             "Its worker polls every 0.5 s (`poll_delay`, default) when it finds nothing, "
             "which sets its pickup latency",)  # fmt: skip

    async def open(self) -> None:
        self.pool: ArqRedis = await create_pool(RedisSettings.from_dsn(self.url))

    async def close(self) -> None:
        await self.pool.aclose()

    async def enqueue(self, task: str, n: int) -> str:
        job = await self.pool.enqueue_job(task, _queue_name=QUEUE, n=n)
        assert job is not None  # None only for a job id already queued
        return job.job_id

    async def pending(self) -> int:
        return int(await self.pool.zcard(QUEUE))  # a job leaves the set when it finishes


def run_worker(url: str) -> None:
    logging.basicConfig(level=logging.WARNING)  # no INFO line per job, as for every queue

    async def work() -> None:
        functions = [func(noop, name=NOOP), func(sleep_1ms, name=SLEEP), func(stamp, name=STAMP)]
        worker = Worker(functions, queue_name=QUEUE, redis_settings=RedisSettings.from_dsn(url),
                        max_jobs=CONCURRENCY)  # fmt: skip
        protocol.signal_ready()
        try:
            await worker.async_run()  # until SIGTERM, which arq handles
        except asyncio.CancelledError:
            pass
        finally:
            await worker.close()

    asyncio.run(work())


if __name__ == "__main__":
    sys.exit(protocol.main(ArqPeer, run_worker))
