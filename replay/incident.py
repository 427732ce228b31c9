"""What happened in a time window: worker deaths and the jobs they took down, reaps, retries
grouped by error, dead letters by reason, paused periods, the slowest jobs, the tasks that
failed most, and the jobs with anomalies.

Jobs are judged on their whole history in the ledger, not only the part in the window, so
that a claim made before the window still explains an ack inside it.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Final

from replay.anomalies import Anomaly
from replay.events import Event
from replay.history import JobHistory, JobKey, all_histories
from replay.merge import Ledger

NOT_RECORDED: Final = "not recorded in the ledger"
KEPT_JOB_IDS: Final = 5
ERROR_KEY_CHARS: Final = 120
_DIGITS: Final = re.compile(r"\d+")


@dataclass(slots=True)
class Group:
    """Events sharing an error or a reason: how many, of which tasks, a few of the jobs."""

    key: str
    example: str
    count: int = 0
    tasks: Counter[str] = field(default_factory=Counter)
    jobs: list[str] = field(default_factory=list)

    def add(self, event: Event) -> None:
        self.count += 1
        self.tasks[event.task or "?"] += 1
        if event.job_id and len(self.jobs) < KEPT_JOB_IDS and event.job_id not in self.jobs:
            self.jobs.append(event.job_id)


@dataclass(slots=True)
class WorkerDeath:
    """A `worker_reaped` event, and what became of each job the worker held."""

    event: Event
    jobs: list[tuple[str, str]] = field(default_factory=list)


@dataclass(slots=True)
class Period:
    """A time the ledger records a queue as paused."""

    queue: str
    start_ms: int
    end_ms: int | None
    by: str


@dataclass(slots=True)
class Incident:
    since_ms: int
    until_ms: int
    queue: str | None
    events: int = 0
    worker_deaths: list[WorkerDeath] = field(default_factory=list)
    reaps: list[Event] = field(default_factory=list)
    retries: list[Group] = field(default_factory=list)
    dead_letters: list[Group] = field(default_factory=list)
    paused: list[Period] = field(default_factory=list)
    slowest: list[JobHistory] = field(default_factory=list)
    failing_tasks: list[tuple[str, int, int]] = field(default_factory=list)
    anomalies: list[Anomaly] = field(default_factory=list)
    histories: list[JobHistory] = field(default_factory=list)
    fallback: str = NOT_RECORDED
    backpressure: str = NOT_RECORDED


def error_key(error: str) -> str:
    """Errors that differ only in numbers (ids, attempts, ports) group together."""
    first_line = error.strip().splitlines()[0] if error.strip() else "(no error text)"
    return _DIGITS.sub("N", first_line)[:ERROR_KEY_CHARS]


def build_incident(
    ledger: Ledger, since_ms: int, until_ms: int, *, queue: str | None = None, top: int = 10
) -> Incident:
    incident = Incident(since_ms, until_ms, queue)
    events = ledger.events
    window = [
        i for i, event in enumerate(events)
        if since_ms <= event.ts_ms <= until_ms and (queue is None or event.queue == queue)
    ]  # fmt: skip
    incident.events = len(window)

    _collect_events(incident, events, window)
    incident.paused = _paused_periods(events, since_ms, until_ms, queue)
    touched = {(events[i].queue, events[i].job_id) for i in window if events[i].job_id is not None}
    _collect_jobs(incident, ledger, _job_keys(touched), top)
    return incident


def _job_keys(touched: set[tuple[str, str | None]]) -> set[JobKey]:
    return {(queue, job_id) for queue, job_id in touched if job_id is not None}


def _collect_events(incident: Incident, events: list[Event], window: list[int]) -> None:
    retries: dict[str, Group] = {}
    dead: dict[str, Group] = {}
    failures: Counter[str] = Counter()
    dead_by_task: Counter[str] = Counter()
    for i in window:
        event = events[i]
        if event.type == "worker_reaped":
            incident.worker_deaths.append(WorkerDeath(event))
        elif event.type == "reaped":
            incident.reaps.append(event)
        elif event.type == "retried":
            error = _retry_error(events, i)
            retries.setdefault(error_key(error), Group(error_key(error), error)).add(event)
        elif event.type == "dead_lettered":
            reason = event.reason or "(no reason)"
            dead.setdefault(reason, Group(reason, event.error or "")).add(event)
            dead_by_task[event.task or "?"] += 1
        elif event.type == "failed":
            failures[event.task or "?"] += 1

    incident.retries = sorted(retries.values(), key=lambda group: -group.count)
    incident.dead_letters = sorted(dead.values(), key=lambda group: -group.count)
    tasks = set(failures) | set(dead_by_task)
    ranked = sorted(tasks, key=lambda task: (-failures[task], -dead_by_task[task], task))
    incident.failing_tasks = [(task, failures[task], dead_by_task[task]) for task in ranked]


def _retry_error(events: list[Event], i: int) -> str:
    """A retry's error: its own (a retry that was no failure), or its `failed` event's,
    written just before it by the same script call."""
    event = events[i]
    if event.error:
        return event.error
    previous = events[i - 1] if i else None
    if previous is not None and previous.type == "failed" and previous.job_id == event.job_id:
        return previous.error or ""
    return ""


def _paused_periods(
    events: list[Event], since_ms: int, until_ms: int, queue: str | None
) -> list[Period]:
    periods: list[Period] = []
    open_by_queue: dict[str, Period] = {}
    for event in events:
        if event.type not in ("paused", "resumed") or (queue and event.queue != queue):
            continue
        if event.type == "paused":
            period = Period(event.queue, event.ts_ms, None, event.attributes.get("by", ""))
            open_by_queue[event.queue] = period
            periods.append(period)
        elif event.queue in open_by_queue:
            open_by_queue.pop(event.queue).end_ms = event.ts_ms
    return [p for p in periods if p.start_ms <= until_ms and (p.end_ms or until_ms) >= since_ms]


def _collect_jobs(incident: Incident, ledger: Ledger, keys: set[JobKey], top: int) -> None:
    histories = all_histories(ledger.events, from_start=ledger.from_start, only=keys)
    incident.histories = histories
    by_key = {(h.queue, h.job_id): h for h in histories}
    for death in incident.worker_deaths:
        death.jobs = [
            (job_id, _after(by_key.get((death.event.queue, job_id)), death.event))
            for job_id in death.event.named_jobs
        ]
    incident.slowest = _slowest(histories, incident.since_ms, incident.until_ms, top)
    incident.anomalies = [
        anomaly for history in histories for anomaly in history.anomalies
        if incident.since_ms <= anomaly.ts_ms <= incident.until_ms
    ]  # fmt: skip


def _after(history: JobHistory | None, death: Event) -> str:
    """What became of a job after its worker was reaped."""
    if history is None:
        return "no events of the job in the ledger"
    later = [row.event for row in history.rows if row.event.ts_ms >= death.ts_ms]
    claims = [event.worker for event in later if event.type == "claimed"]
    again = f"claimed again by {', '.join(str(w) for w in claims)}; " if claims else ""
    return f"{again}now {history.outcome}"


def _slowest(
    histories: list[JobHistory], since_ms: int, until_ms: int, top: int
) -> list[JobHistory]:
    finished = [
        h for h in histories
        if h.state == "done" and h.enqueued_ms is not None and h.last_event is not None
        and since_ms <= h.last_event.ts_ms <= until_ms
    ]  # fmt: skip
    return sorted(finished, key=total_ms, reverse=True)[:top]


def total_ms(history: JobHistory) -> int:
    """Enqueue to the last state change."""
    if history.enqueued_ms is None or history.last_event is None:
        return 0
    return history.last_event.ts_ms - history.enqueued_ms
