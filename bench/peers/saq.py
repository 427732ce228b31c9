"""saq: asyncio workers that move job ids from a waiting list to an active list (BLMOVE).

Runs in bench/.peers/modern. Handlers take the payload as the keyword argument `n`.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from saq import Queue, Worker

from bench.peers import protocol
from bench.peers.protocol import CONCURRENCY, NOOP, QUEUE, SLEEP, STAMP, Peer


async def noop(ctx: dict[str, Any], *, n: int) -> None:
    await protocol.marks().run(ctx["job"].key)


async def sleep_1ms(ctx: dict[str, Any], *, n: int) -> None:
    await asyncio.sleep(0.001)
    await protocol.marks().run(ctx["job"].key)


async def stamp(ctx: dict[str, Any], *, n: int) -> None:
    await protocol.marks().stamp(ctx["job"].key)


class SaqPeer(Peer):
    name = "saq"
    module = "bench.peers.saq"
    packages = ("saq",)
    notes = (
        "saq: no batch enqueue API (`Queue.batch()` groups aborts, it sends one call per job); "
        "a queue is filled by 8 concurrent `enqueue` loops",
        "saq: its sweep (at worker start, then every 60 s) re-queues a job it finds in the "
        "active list whose record does not say active yet, so a job dequeued at that moment "
        "can run twice (its INFO log shows 'Sweeping job', then 'Retrying')",
    )

    async def open(self) -> None:
        self.queue = Queue.from_url(self.url, name=QUEUE)
        await self.queue.connect()

    async def close(self) -> None:
        await self.queue.disconnect()

    async def enqueue(self, task: str, n: int) -> str:
        job = await self.queue.enqueue(task, n=n)
        assert job is not None  # None only for a key already queued
        return job.key

    async def describe(self, tag: str) -> str:
        job = await self.queue.job(tag)  # finished jobs stay 600 s (`ttl`)
        if job is None:
            return "expired"
        return f"attempts {job.attempts}, status {job.status.value}, error {job.error!r}"

    async def pending(self) -> int:
        return await self.queue.count("incomplete")  # queued and active, until finished


def run_worker(url: str) -> None:
    logging.basicConfig(level=logging.WARNING)  # no INFO line per job, as for every queue

    async def work() -> None:
        queue = Queue.from_url(url, name=QUEUE)
        functions = [(NOOP, noop), (SLEEP, sleep_1ms), (STAMP, stamp)]
        worker = Worker(queue, functions, concurrency=CONCURRENCY)  # type: ignore[type-var]
        protocol.signal_ready()
        await worker.start()  # until SIGTERM
        await queue.disconnect()

    asyncio.run(work())


if __name__ == "__main__":
    sys.exit(protocol.main(SaqPeer, run_worker))
