"""rq with its SimpleWorker: synchronous, one job at a time, in the worker's own process
(rq's default Worker forks a child per job).

Runs in bench/.peers/modern. Jobs name their function by its import path in this module;
handlers take the payload as the keyword argument `n`.
"""

from __future__ import annotations

import logging
import sys
import time

from redis import Redis
from rq import Queue, SimpleWorker, get_current_job

from bench.peers import protocol
from bench.peers.protocol import NOOP, QUEUE, SLEEP, STAMP, Peer

FUNCTIONS = {task: f"bench.peers.rq.{task}" for task in (NOOP, SLEEP, STAMP)}


def _tag() -> str:
    job = get_current_job()
    assert job is not None  # always, inside a handler
    return job.id


def noop(n: int) -> None:
    protocol.sync_marks().run(_tag())


def sleep_1ms(n: int) -> None:
    time.sleep(0.001)
    protocol.sync_marks().run(_tag())


def stamp(n: int) -> None:
    protocol.sync_marks().stamp(_tag())


class RqPeer(Peer):
    name = "rq"
    module = "bench.peers.rq"
    packages = ("rq",)
    batch_api = "enqueue_many"
    notes = (
        "rq: SimpleWorker runs one job at a time (no concurrency setting), so its "
        "end-to-end rates are at concurrency 1; its 1 ms handler uses time.sleep",
    )

    async def open(self) -> None:
        self.redis = Redis.from_url(self.url)
        self.queue = Queue(QUEUE, connection=self.redis)

    async def close(self) -> None:
        self.redis.close()

    # rq's producer is synchronous: these block the loop, which has nothing else to do.
    async def enqueue(self, task: str, n: int) -> str:
        return str(self.queue.enqueue(FUNCTIONS[task], n=n).id)

    async def enqueue_batch(self, task: str, start: int, count: int) -> None:
        self.queue.enqueue_many([Queue.prepare_data(FUNCTIONS[task], kwargs={"n": i})
                                 for i in range(start, start + count)])  # fmt: skip

    async def pending(self) -> int:
        moving = self.redis.llen(self.queue.intermediate_queue_key)
        return int(self.queue.count + moving + self.queue.started_job_registry.count)


def run_worker(url: str) -> None:
    connection = Redis.from_url(url)
    worker = SimpleWorker([Queue(QUEUE, connection=connection)], connection=connection)
    protocol.signal_ready()
    worker.work(logging_level=logging.getLevelName(logging.WARNING))  # until SIGTERM


if __name__ == "__main__":
    sys.exit(protocol.main(RqPeer, run_worker))
