"""Ledgers written by the real engine, and ways to damage them on purpose."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from redis.asyncio import Redis

from engine.jobs import ClaimedJob
from engine.keys import QueueKeys
from engine.ops import AckItem, WorkerOps
from engine.queue import JobQueue
from engine.settings import Settings
from ledger.event import JobEvent
from replay.cli import main
from sinks.ndjson import NdjsonSink, iter_segments
from tests.engine.helpers import registered_ops

Q = "emails"
Record = dict[str, Any]


@dataclass(frozen=True, slots=True)
class CliResult:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def run_replay(capsys: pytest.CaptureFixture[str], argv: list[str]) -> CliResult:
    capsys.readouterr()
    code = main(argv)
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)


# -- ledgers from the real engine ------------------------------------------------------------


async def ack(ops: WorkerOps, job: ClaimedJob, run_ms: int = 5) -> str:
    [status] = await ops.ack([AckItem(job.id, job.token, run_ms)])
    return status


async def killed_worker_job(redis: Redis, settings: Settings) -> str:
    """A job whose first worker dies mid-run (its heartbeat key goes, as after SIGKILL and
    the TTL): reaped, claimed by another worker, acked."""
    jq = JobQueue(redis, settings)
    job_id = await jq.enqueue(Q, "send", {"to": "a"}, job_id="job-killed")
    doomed = await registered_ops(redis, settings, Q, "doomed")
    await doomed.claim(1)
    await redis.delete(doomed.keys.heartbeat("doomed"))

    survivor = await registered_ops(redis, settings, Q, "survivor")
    await redis.delete(survivor.keys.reaper_lock)
    assert (await survivor.reap(lock_ms=1000)).returned == 1
    [job] = (await survivor.claim(1)).jobs
    assert await ack(survivor, job) == "ok"
    return job_id


async def zombie_ack_job(redis: Redis, settings: Settings) -> str:
    """A reaped worker comes back and acks late: the engine refuses it (`ack_rejected`)."""
    jq = JobQueue(redis, settings)
    job_id = await jq.enqueue(Q, "send", {}, job_id="job-zombie")
    zombie = await registered_ops(redis, settings, Q, "zombie")
    [old] = (await zombie.claim(1)).jobs
    await redis.delete(zombie.keys.heartbeat("zombie"))
    live = await registered_ops(redis, settings, Q, "live")
    await redis.delete(live.keys.reaper_lock)
    await live.reap(lock_ms=1000)
    [new] = (await live.claim(1)).jobs
    assert await ack(zombie, old) == "stale:not_owner"
    assert await ack(live, new) == "ok"
    return job_id


async def retried_job(redis: Redis, settings: Settings) -> str:
    """Fails once, is retried at once, then succeeds; heartbeats name it while it runs."""
    jq = JobQueue(redis, settings)
    job_id = await jq.enqueue(Q, "send", {"to": "b"}, job_id="job-retried", max_attempts=3)
    ops = await registered_ops(redis, settings, Q, "w1")
    [job] = (await ops.claim(1)).jobs
    assert await ops.renew()
    assert await ops.fail(job, "ConnectionError: smtp down") == "retried:0"
    [job] = (await ops.claim(1)).jobs
    assert await ops.renew()
    assert await ack(ops, job, 7) == "ok"
    return job_id


async def dead_job(redis: Redis, settings: Settings, *, max_attempts: int = 2) -> str:
    """Fails every attempt until it is dead-lettered as retries_exhausted."""
    jq = JobQueue(redis, settings)
    job_id = await jq.enqueue(Q, "charge", {"n": 1}, job_id="job-dead", max_attempts=max_attempts)
    ops = await registered_ops(redis, settings, Q, "w1")
    for attempt in range(1, max_attempts + 1):
        [job] = (await ops.claim(1)).jobs
        status = await ops.fail(job, f"ValueError: card declined ({attempt})")
    assert status == "dead:retries_exhausted"
    return job_id


async def running_job(redis: Redis, settings: Settings) -> str:
    """Claimed and never finished."""
    jq = JobQueue(redis, settings)
    job_id = await jq.enqueue(Q, "send", {}, job_id="job-running")
    ops = await registered_ops(redis, settings, Q, "w1")
    await ops.claim(1)
    return job_id


# -- moving events around --------------------------------------------------------------------


async def stream_events(redis: Redis, queue: str = Q) -> list[JobEvent]:
    entries = cast(list[tuple[str, dict[str, str]]], await redis.xrange(QueueKeys(queue).events))
    return [JobEvent.from_stream(queue, entry_id, fields) for entry_id, fields in entries]


async def write_ndjson(folder: Path, events: list[JobEvent], *, rotate: bool = False) -> None:
    """Write events with the real NDJSON sink; `rotate` gzips them into a rotated segment."""
    sink = NdjsonSink(folder, fsync="never")
    await sink.write(events)
    if rotate:
        await sink.rotate()
    await sink.close()


async def ship_to_ndjson(redis: Redis, folder: Path, *, delete: bool = False) -> list[JobEvent]:
    """Copy the outbox to an NDJSON folder, and optionally delete it from the stream as the
    shipper does once a sink holds it."""
    events = await stream_events(redis)
    await write_ndjson(folder, events)
    if delete and events:
        await redis.xdel(QueueKeys(Q).events, *(event.stream_id for event in events))
    return events


def edit_ndjson(folder: Path, change: Callable[[list[Record]], list[Record]]) -> None:
    """Rewrite the folder's plain segment with `change` applied to its records, giving them
    stream ids in their new order (inserted records fit between their neighbours)."""
    [segment] = [path for path in iter_segments(folder) if path.suffix == ".ndjson"]
    records = renumbered(change([json.loads(line) for line in segment.read_text().splitlines()]))
    lines = [json.dumps(record, separators=(",", ":"), sort_keys=True) for record in records]
    segment.write_text("".join(line + "\n" for line in lines))


def renumbered(records: list[Record]) -> list[Record]:
    """The records with stream ids `<ms>-<n>` that follow the list's order (in place)."""
    last_ms, n = -1, 0
    for record in records:
        ms = max(record["ts_ms"], last_ms)
        n = n + 1 if ms == last_ms else 0
        last_ms = ms
        record["stream_id"] = f"{ms}-{n}"
        record["event_id"] = f"{record['queue']}/{ms}-{n}"
    return records


def record_after(record: Record, **fields: Any) -> Record:
    """A copy of `record` with fields replaced, to insert after it (same time)."""
    return {**record, "attributes": dict(record["attributes"]), **fields}


def insert_after(records: list[Record], index: int, new: Record) -> list[Record]:
    """Insert `new` after `index`; the job's later events move up one seq, so that only the
    inserted event is out of place."""
    if new.get("seq") is not None:
        for record in records[index + 1 :]:
            if record["job_id"] == new["job_id"] and record["seq"] is not None:
                record["seq"] += 1
    return [*records[: index + 1], new, *records[index + 1 :]]


def find(records: list[Record], job_id: str | None, kind: str, nth: int = 0) -> int:
    """Index of the nth record of this type (and job, if given)."""
    hits = [
        i
        for i, r in enumerate(records)
        if r["type"] == kind and (job_id is None or r["job_id"] == job_id)
    ]
    return hits[nth]
