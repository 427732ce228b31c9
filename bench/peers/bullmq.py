"""bullmq (the Python port of BullMQ): asyncio workers over BullMQ's Lua scripts, with a
lock per active job and a stalled-job check.

Runs in bench/.peers/modern. One processor serves every task, dispatching on the job's
name; the payload is `job.data["n"]`. The worker keeps bullmq's defaults but for
`concurrency` (32): completed jobs are kept (`removeOnComplete` false).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from bullmq import Queue, Worker

from bench.peers import protocol
from bench.peers.protocol import CONCURRENCY, NOOP, QUEUE, SLEEP, STAMP, Peer


async def process(job: Any, token: str) -> None:
    if job.name == NOOP:
        await protocol.marks().run(job.id)
    elif job.name == SLEEP:
        await asyncio.sleep(0.001)
        await protocol.marks().run(job.id)
    elif job.name == STAMP:
        await protocol.marks().stamp(job.id)


class BullmqPeer(Peer):
    name = "bullmq"
    module = "bench.peers.bullmq"
    packages = ("bullmq",)
    batch_api = "addBulk"
    notes = ("bullmq: completed jobs stay in Redis (`removeOnComplete` defaults to false)",)

    async def open(self) -> None:
        self.queue = Queue(QUEUE, {"connection": self.url})

    async def close(self) -> None:
        await self.queue.close()

    async def enqueue(self, task: str, n: int) -> str:
        job = await self.queue.add(task, {"n": n})
        return str(job.id)

    async def enqueue_batch(self, task: str, start: int, count: int) -> None:
        await self.queue.addBulk([{"name": task, "data": {"n": i}}
                                  for i in range(start, start + count)])  # fmt: skip

    async def describe(self, tag: str) -> str:
        fields = await self.queue.client.hmget(f"bull:{QUEUE}:{tag}", "ats", "atm", "stc")
        started, made, stalled = (int(value or 0) for value in fields)
        return f"attempts started {started}, attempts made {made}, stalled {stalled} times"

    async def pending(self) -> int:
        counts = await self.queue.getJobCounts("wait", "active", "delayed", "prioritized")
        return sum(int(count) for count in counts.values())


def run_worker(url: str) -> None:
    logging.basicConfig(level=logging.WARNING)

    async def work() -> None:
        protocol.signal_ready()
        worker = Worker(QUEUE, process, {"connection": url, "concurrency": CONCURRENCY})
        await protocol.until_signalled()  # bullmq leaves signals to the application
        await worker.close()

    asyncio.run(work())


if __name__ == "__main__":
    sys.exit(protocol.main(BullmqPeer, run_worker))
