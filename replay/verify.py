"""Compares the state rebuilt from the ledger with live Redis, and lists every divergence.

Live state is read by known key names only (lanes, processing lists of registered workers,
the scheduled set, the dead-letter list, the registry, the paused flag, job records).
Each queue's lists and sets are read in one MULTI with the stream's last generated id, and
the ledger is rebuilt up to that id, so the two sides describe the same moment. Lanes and
workers the ledger knows but the snapshot did not include, and the job records, are read
afterwards: a job record whose seq moved past the ledger's changed during the check and is
not compared. Redis Cluster is not supported here yet: the snapshot uses one connection.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, cast

import redis
from redis.exceptions import ResponseError

from engine.keys import QueueKeys
from replay.events import Event
from replay.merge import order_key
from replay.state import QueueState, rebuild
from replay.times import format_ts

JOB_FIELDS: Final = ("state", "worker", "seq", "lane")
JOB_BATCH: Final = 1000
SHOWN_IDS: Final = 10


@dataclass(frozen=True, slots=True)
class Divergence:
    """One way the ledger and live Redis disagree."""

    queue: str
    subject: str
    ledger: str
    live: str

    def to_dict(self) -> dict[str, str]:
        return {
            "queue": self.queue,
            "subject": self.subject,
            "ledger": self.ledger,
            "live": self.live,
        }


@dataclass(slots=True)
class LiveQueue:
    """One queue as Redis holds it."""

    queue: str
    lanes: dict[str, list[str]] = field(default_factory=dict)
    processing: dict[str, list[str]] = field(default_factory=dict)
    scheduled: dict[str, int] = field(default_factory=dict)
    dead: list[str] = field(default_factory=list)
    workers: set[str] = field(default_factory=set)
    paused: bool = False
    last_id: str | None = None
    jobs: dict[str, dict[str, str] | None] = field(default_factory=dict)


@dataclass(slots=True)
class VerifyReport:
    divergences: list[Divergence] = field(default_factory=list)
    queues: list[str] = field(default_factory=list)
    jobs_compared: int = 0
    jobs_moved_on: int = 0


# -- reading Redis -------------------------------------------------------------------------


def snapshot(
    client: redis.Redis, namespace: str, queues: Iterable[str], lanes: Sequence[str]
) -> dict[str, LiveQueue]:
    """Each queue's lists, sets and last stream id, read atomically per queue."""
    return {queue: _snapshot_queue(client, QueueKeys(queue, namespace), lanes) for queue in queues}


def _snapshot_queue(client: redis.Redis, keys: QueueKeys, lanes: Sequence[str]) -> LiveQueue:
    workers = sorted(cast(set[str], client.smembers(keys.workers)))
    with client.pipeline(transaction=True) as pipe:
        for lane in lanes:
            pipe.lrange(keys.lane(lane), 0, -1)
        for worker in workers:
            pipe.lrange(keys.processing(worker), 0, -1)
        pipe.zrange(keys.scheduled, 0, -1, withscores=True)
        pipe.lrange(keys.dead, 0, -1)
        pipe.smembers(keys.workers)
        pipe.hget(keys.meta, "paused")
        pipe.xinfo_stream(keys.events)
        replies = pipe.execute(raise_on_error=False)

    live = LiveQueue(keys.queue)
    live.lanes = dict(zip(lanes, replies[: len(lanes)], strict=True))
    live.processing = dict(
        zip(workers, replies[len(lanes) : len(lanes) + len(workers)], strict=True)
    )
    scheduled, dead, registry, paused, stream = replies[len(lanes) + len(workers) :]
    live.scheduled = {member: int(score) for member, score in scheduled}
    live.dead, live.workers, live.paused = dead, set(registry), paused == "1"
    live.last_id = None if isinstance(stream, ResponseError) else stream.get("last-generated-id")
    return live


def read_missing_lists(
    client: redis.Redis, keys: QueueKeys, live: LiveQueue, ledger: QueueState
) -> None:
    """Lanes and processing lists the ledger knows of that the snapshot did not read."""
    for lane in ledger.lanes:
        if lane not in live.lanes:
            live.lanes[lane] = cast(list[str], client.lrange(keys.lane(lane), 0, -1))
    for worker in ledger.processing:
        if worker not in live.processing:
            live.processing[worker] = cast(list[str], client.lrange(keys.processing(worker), 0, -1))


def read_jobs(client: redis.Redis, keys: QueueKeys, job_ids: Iterable[str]) -> dict[str, Any]:
    """Each job record's state, worker, seq and lane (None when there is no record)."""
    ids = sorted(job_ids)
    found: dict[str, dict[str, str] | None] = {}
    for start in range(0, len(ids), JOB_BATCH):
        batch = ids[start : start + JOB_BATCH]
        with client.pipeline(transaction=False) as pipe:
            for job_id in batch:
                pipe.hmget(keys.job(job_id), JOB_FIELDS)
            replies = pipe.execute()
        for job_id, values in zip(batch, replies, strict=True):
            record = {name: value for name, value in zip(JOB_FIELDS, values, strict=True) if value}
            found[job_id] = record or None
    return found


# -- the ledger side -----------------------------------------------------------------------


def ledger_state(events: Iterable[Event], live: dict[str, LiveQueue]) -> dict[str, QueueState]:
    """The ledger's queues up to each queue's snapshot id (all events of other queues)."""
    limits = {queue: _id_key(queue, q.last_id) for queue, q in live.items() if q.last_id}
    return rebuild(event for event in events if _before(event, limits))


def _id_key(queue: str, stream_id: str) -> tuple[str, int, int]:
    ms, _, n = stream_id.partition("-")
    return (queue, int(ms), int(n or 0))


def _before(event: Event, limits: dict[str, tuple[str, int, int]]) -> bool:
    limit = limits.get(event.queue)
    return limit is None or order_key(event) <= limit


# -- comparing -----------------------------------------------------------------------------


def check_queue(
    client: redis.Redis, keys: QueueKeys, ledger: QueueState, live: LiveQueue, report: VerifyReport
) -> None:
    """Read what the snapshot left out for this queue, then compare the two sides."""
    read_missing_lists(client, keys, live, ledger)
    live.jobs = read_jobs(client, keys, job_ids_to_read(ledger, live))
    compare(keys.queue, ledger, live, report)


def compare(queue: str, ledger: QueueState, live: LiveQueue, report: VerifyReport) -> None:
    """Append every divergence between one queue's two sides to the report."""
    found = report.divergences
    for lane in sorted(set(ledger.lanes) | set(live.lanes)):
        _lists(
            found, queue, f"lane {lane}", list(ledger.lanes.get(lane, ())), live.lanes.get(lane, [])
        )
    for worker in sorted(set(ledger.processing) | set(live.processing)):
        ours, theirs = ledger.processing.get(worker, []), live.processing.get(worker, [])
        _lists(found, queue, f"processing {worker}", ours, theirs)
    _lists(found, queue, "dead letters", list(ledger.dead), live.dead)
    _scheduled(found, queue, ledger.scheduled, live.scheduled)
    _registry(found, queue, ledger, live)
    _jobs(queue, ledger, live, report)


def _lists(
    found: list[Divergence], queue: str, subject: str, ours: list[str], theirs: list[str]
) -> None:
    if ours == theirs:
        return
    ours_set, theirs_set = set(ours), set(theirs)
    extra = [job_id for job_id in theirs if job_id not in ours_set]
    missing = [job_id for job_id in ours if job_id not in theirs_set]
    if not extra and not missing:
        found.append(
            Divergence(queue, subject, _ids(ours), f"same jobs, other order: {_ids(theirs)}")
        )
        return
    if extra:
        found.append(Divergence(queue, subject, "not there", f"holds {_ids(extra)}"))
    if missing:
        found.append(Divergence(queue, subject, f"holds {_ids(missing)}", "not there"))


def _scheduled(
    found: list[Divergence], queue: str, ours: dict[str, int], theirs: dict[str, int]
) -> None:
    for job_id in sorted(set(ours) | set(theirs)):
        mine, live = ours.get(job_id), theirs.get(job_id)
        if mine != live:
            found.append(Divergence(queue, f"scheduled {job_id}", _due(mine), _due(live)))


def _registry(found: list[Divergence], queue: str, ledger: QueueState, live: LiveQueue) -> None:
    if ledger.workers != live.workers:
        ours, theirs = sorted(ledger.workers), sorted(live.workers)
        found.append(Divergence(queue, "worker registry", _ids(ours), _ids(theirs)))
    if ledger.paused != live.paused:
        found.append(Divergence(queue, "paused", str(ledger.paused), str(live.paused)))


def _jobs(queue: str, ledger: QueueState, live: LiveQueue, report: VerifyReport) -> None:
    for job_id, record in sorted(live.jobs.items()):
        job = ledger.jobs.get(job_id)
        ours = "no record" if job is None else _describe(job.state, job.worker)
        if record is None:
            if job is not None and job.state != "done":  # done records expire by design
                report.divergences.append(Divergence(queue, f"job {job_id}", ours, "no record"))
            continue
        if job is not None and job.seq is not None and int(record.get("seq", 0)) > job.seq:
            report.jobs_moved_on += 1
            continue
        report.jobs_compared += 1
        theirs = _describe(record.get("state", "?"), record.get("worker"))
        if ours != theirs:
            report.divergences.append(Divergence(queue, f"job {job_id}", ours, theirs))


def _describe(state: str, worker: str | None) -> str:
    return f"{state} on {worker}" if state == "active" else state


def _ids(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:SHOWN_IDS])
    more = f" and {len(ids) - SHOWN_IDS} more" if len(ids) > SHOWN_IDS else ""
    return f"[{shown}{more}]" if ids else "[]"


def _due(due_ms: int | None) -> str:
    return "not there" if due_ms is None else f"due {format_ts(due_ms)}"


def job_ids_to_read(ledger: QueueState, live: LiveQueue) -> set[str]:
    """Every job either side mentions."""
    ids = set(ledger.jobs) | set(live.scheduled) | set(live.dead)
    for members in (*live.lanes.values(), *live.processing.values()):
        ids.update(members)
    return ids
