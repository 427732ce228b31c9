"""Queues rebuilt from events alone: lanes, processing lists, scheduled set, dead letters,
the worker registry, the paused flag and every job's state.

Each job event that leaves the job in a state (its `next_state`) moves the job id the way
the engine's script did: out of where it was, then to the tail of its lane (enqueue,
promote, retry, requeue) or its head (reap, return), to the worker's processing list
(claim), to the scheduled set at its due time, or to the dead-letter list. A purge deletes
it. Types replay does not know are handled by their states the same way.
"""

from __future__ import annotations

import contextlib
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from replay.events import Event
from replay.merge import gc_paused

TO_HEAD: Final = frozenset({"reaped", "returned"})

# The container that holds a job id: its lane, a worker's processing list, the scheduled
# set or the dead letters. Kept by identity, so taking the id out needs no lookup.
Where = deque[str] | list[str] | dict[str, int]


@dataclass(slots=True)
class JobState:
    """What the ledger says about one job now."""

    state: str
    lane: str | None = None
    worker: str | None = None
    seq: int | None = None
    task: str | None = None
    where: Where | None = field(default=None, repr=False, compare=False)


@dataclass(slots=True)
class QueueState:
    """One queue as its events built it."""

    queue: str
    lanes: dict[str, deque[str]] = field(default_factory=dict)
    processing: dict[str, list[str]] = field(default_factory=dict)
    scheduled: dict[str, int] = field(default_factory=dict)
    dead: deque[str] = field(default_factory=deque)
    workers: set[str] = field(default_factory=set)
    paused: bool = False
    jobs: dict[str, JobState] = field(default_factory=dict)
    events: int = 0
    last_ts_ms: int | None = None

    def job_states(self) -> Counter[str]:
        return Counter(job.state for job in self.jobs.values())

    def in_flight(self) -> dict[str, list[str]]:
        return {worker: ids for worker, ids in sorted(self.processing.items()) if ids}

    # -- moving job ids ------------------------------------------------------------------

    def take(self, job_id: str, job: JobState) -> None:
        """Remove the job id from wherever the ledger last put it."""
        where, job.where = job.where, None
        if where is None:
            return
        if isinstance(where, dict):
            where.pop(job_id, None)
        elif where and where[0] == job_id:
            del where[0]  # a claim takes the head of its lane; an ack, the oldest claim
        else:
            with contextlib.suppress(ValueError):  # not there: it arrived before the window
                where.remove(job_id)

    def put(self, job_id: str, job: JobState, event: Event) -> None:
        """Place the job id where its new state keeps it."""
        state = job.state
        if state == "ready" and job.lane is not None:
            lane = self.lanes.get(job.lane)
            if lane is None:
                lane = self.lanes[job.lane] = deque()
            if event.type in TO_HEAD:
                lane.appendleft(job_id)
            else:
                lane.append(job_id)
            job.where = lane
        elif state == "active" and job.worker is not None:
            claimed = self.processing.get(job.worker)
            if claimed is None:
                claimed = self.processing[job.worker] = []
            claimed.append(job_id)
            job.where = claimed
        elif state == "scheduled":
            self.scheduled[job_id] = event.due_at_ms or 0
            job.where = self.scheduled
        elif state == "dead":
            self.dead.append(job_id)
            job.where = self.dead

    def drop_processing(self, worker: str) -> None:
        """The worker's processing list is deleted (reaped, or left the registry)."""
        claimed = self.processing.pop(worker, [])
        for job_id in claimed:
            job = self.jobs.get(job_id)
            if job is not None and job.where is claimed:
                job.where = None


class StateBuilder:
    """Applies events, in (queue, stream id) order, to the queues they belong to."""

    def __init__(self) -> None:
        self.queues: dict[str, QueueState] = {}

    def apply_all(self, events: Iterable[Event]) -> dict[str, QueueState]:
        for event in events:
            self.apply(event)
        return self.queues

    def apply(self, event: Event) -> None:
        queue = self.queues.get(event.queue)
        if queue is None:
            queue = self.queues[event.queue] = QueueState(event.queue)
        queue.events += 1
        queue.last_ts_ms = event.ts_ms

        if event.job_id is not None and (event.next_state is not None or event.type == "purged"):
            _move(queue, event.job_id, event)
        else:
            _queue_event(queue, event)


def _move(queue: QueueState, job_id: str, event: Event) -> None:
    job = queue.jobs.get(job_id)
    if job is None:
        job = queue.jobs[job_id] = JobState(state="unknown")
    queue.take(job_id, job)

    if event.type == "purged":
        del queue.jobs[job_id]
        return

    assert event.next_state is not None
    job.state = event.next_state
    job.lane = event.lane or job.lane
    job.task = event.task or job.task
    job.seq = event.seq if event.seq is not None else job.seq
    job.worker = event.worker if job.state == "active" else None
    queue.put(job_id, job, event)


def _queue_event(queue: QueueState, event: Event) -> None:
    kind, worker = event.type, event.worker
    if kind == "worker_registered" and worker is not None:
        queue.workers.add(worker)
    elif kind in ("worker_reaped", "worker_left") and worker is not None:
        queue.workers.discard(worker)
        queue.drop_processing(worker)
    elif kind == "paused":
        queue.paused = True
    elif kind == "resumed":
        queue.paused = False
    elif event.job_id is not None and event.seq is not None:
        job = queue.jobs.get(event.job_id)  # a refused ack still counts in the job's seq
        if job is not None:
            job.seq = event.seq


def rebuild(events: Iterable[Event], *, at_ms: int | None = None) -> dict[str, QueueState]:
    """Every queue's state after its events up to `at_ms` (server time), or all of them."""
    builder = StateBuilder()
    with gc_paused():
        if at_ms is None:
            return builder.apply_all(events)
        return builder.apply_all(event for event in events if event.ts_ms <= at_ms)
