"""One job's history rebuilt from its events: a timeline, its attempts, derived facts and
the anomalies found on the way.

A job's events are those whose `job_id` is the job, plus the heartbeats and worker reaps
that name it in `attrs["jobs"]`, all from the job's queue and in stream order. An attempt
opens with `claimed` and closes with the first event that leaves the `active` state for
the same claim (acked, deduplicated, failed, reaped, returned, or a retry that did not
count as a failure).

`from_start` says the events were read from the start of the ledger; only then are a
missing start (first seq above 1, a claim before any enqueue) and heartbeats before the
job's first event judged, since otherwise their context may lie before the window.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from replay.anomalies import Anomaly
from replay.details import (
    by,
    enqueue_detail,
    finish_detail,
    generic_detail,
    heartbeat_detail,
    int_or_none,
    joined,
    ran_for,
)
from replay.events import NAMING_TYPES, Event
from replay.merge import gc_paused
from replay.times import format_duration

LIFE_STARTS: Final = frozenset({"enqueued", "scheduled"})
EXPLAINED_REJECTION: Final = "refused by the engine: this worker's claim was reaped (a zombie)"
DETAIL_CHARS: Final = 120


@dataclass(slots=True)
class Attempt:
    """One claim of the job and what ended it."""

    claimed: Event
    closed: Event | None = None
    heartbeats: list[Event] = field(default_factory=list)

    @property
    def worker(self) -> str | None:
        return self.claimed.worker

    @property
    def token(self) -> int | None:
        return self.claimed.token

    @property
    def number(self) -> int | None:
        return self.claimed.attempt

    @property
    def outcome(self) -> str:
        return "in flight" if self.closed is None else self.closed.type

    def end_ms(self, window_end_ms: int) -> int:
        return window_end_ms if self.closed is None else self.closed.ts_ms

    def run_ms(self, window_end_ms: int) -> int:
        return self.end_ms(window_end_ms) - self.claimed.ts_ms

    def largest_gap_ms(self, window_end_ms: int) -> int:
        """The longest time without a heartbeat naming the job, from claim to close."""
        times = [self.claimed.ts_ms, *(beat.ts_ms for beat in self.heartbeats)]
        times.append(self.end_ms(window_end_ms))
        return max(later - earlier for earlier, later in itertools.pairwise(times))

    def ttl_ms(self) -> int | None:
        ttls = [int_or_none(beat.attributes.get("ttl_ms")) for beat in self.heartbeats]
        known = [ttl for ttl in ttls if ttl is not None]
        return max(known) if known else None

    def matches(self, event: Event) -> bool:
        if event.token is not None and self.token is not None:
            return event.token == self.token and event.worker in (None, self.worker)
        return event.worker is None or event.worker == self.worker


@dataclass(slots=True)
class Row:
    """One line of the timeline."""

    event: Event
    since_previous_ms: int | None
    detail: str


@dataclass(slots=True)
class JobHistory:
    """Everything the ledger says about one job of one queue."""

    queue: str
    job_id: str
    rows: list[Row] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    anomalies: list[Anomaly] = field(default_factory=list)
    state: str | None = None
    last_event: Event | None = None
    enqueued_ms: int | None = None
    task: str | None = None
    window_end_ms: int = 0

    @property
    def events(self) -> list[Event]:
        return [row.event for row in self.rows]

    @property
    def first_claim_ms(self) -> int | None:
        return self.attempts[0].claimed.ts_ms if self.attempts else None

    @property
    def queued_ms(self) -> int | None:
        """Enqueue to first claim."""
        first = self.first_claim_ms
        return None if first is None or self.enqueued_ms is None else first - self.enqueued_ms

    @property
    def outcome(self) -> str:
        return describe_outcome(self)

    def largest_heartbeat_gap(self) -> tuple[int, int | None] | None:
        """The longest gap of any attempt, and the largest heartbeat TTL seen, if any."""
        if not self.attempts:
            return None
        gap_ms = max(a.largest_gap_ms(self.window_end_ms) for a in self.attempts)
        ttls = [ttl for ttl in (a.ttl_ms() for a in self.attempts) if ttl is not None]
        return gap_ms, max(ttls) if ttls else None


def describe_outcome(history: JobHistory) -> str:
    state, last = history.state, history.last_event
    open_attempts = [a for a in history.attempts if a.closed is None]
    if state == "active" or (open_attempts and state is None):
        workers = ", ".join(sorted({str(a.worker) for a in open_attempts})) or "unknown"
        return f"in flight on {workers}"
    if state == "dead":
        return f"dead ({last.reason if last and last.reason else 'reason not recorded'})"
    if state == "done":
        return "done (duplicate run)" if last and last.type == "deduplicated" else "done"
    return _OUTCOMES.get(state or "", f"{state}") if state else "unknown (no state recorded)"


_OUTCOMES: Final = {
    "ready": "waiting in its lane",
    "scheduled": "scheduled (waiting for its due time)",
    "failed": "failed, with no retry or dead letter recorded after it",
    "lost": "lost (reaped past its crash limit), with no dead letter recorded after it",
    "purged": "purged",
}


class HistoryBuilder:
    """Walks one job's events in order, building its history and flagging anomalies."""

    def __init__(self, queue: str, job_id: str, *, from_start: bool) -> None:
        self.history = JobHistory(queue, job_id)
        self.from_start = from_start
        self.next_seq: int | None = None
        self.started = False  # saw the enqueue (or schedule) of the current life
        self.known = False  # saw any event about the job itself
        self.failures = 0
        self.max_attempts: int | None = None
        self.reaped: list[Attempt] = []
        self._handlers: dict[str, Callable[[Event], str]] = {
            "enqueued": self._enqueued,
            "scheduled": self._enqueued,
            "requeued": self._requeued,
            "claimed": self._claimed,
            "heartbeat": self._heartbeat,
            "reaped": self._reaped,
            "acked": self._finished,
            "deduplicated": self._finished,
            "failed": self._failed,
            "dead_lettered": self._dead_lettered,
            "ack_rejected": self._rejected,
            "worker_reaped": self._worker_reaped,
        }

    def feed(self, event: Event) -> None:
        own = event.job_id == self.history.job_id
        if own and event.seq is not None:
            self._check_seq(event)

        detail = self._handlers.get(event.type, self._other)(event)

        if own:
            self._track_state(event)
        self._add_row(event, detail)

    def finish(self, window_end_ms: int) -> JobHistory:
        history = self.history
        last_seen = history.rows[-1].event.ts_ms if history.rows else 0
        history.window_end_ms = max(window_end_ms, last_seen)
        for attempt in self._open():
            open_for = format_duration(attempt.run_ms(history.window_end_ms))
            self._flag(
                "in_flight_at_end", attempt.claimed,
                f"attempt {attempt.number} on {attempt.worker} is still open at the end of the "
                f"window ({open_for} after its claim)",
            )  # fmt: skip
        if history.state in ("failed", "lost") and history.last_event is not None:
            self._flag(
                "unfinished_transition", history.last_event,
                f"the job was left {history.state}: no retried or dead_lettered event follows",
            )  # fmt: skip
        return history

    # -- bookkeeping -------------------------------------------------------------------

    def _check_seq(self, event: Event) -> None:
        seq = event.seq
        assert seq is not None
        expected = self.next_seq
        self.next_seq = seq + 1
        if event.type in LIFE_STARTS and seq == 1:
            return
        if expected is None:
            if self.from_start and seq != 1:
                missing = "1" if seq == 2 else f"1 to {seq - 1}"
                self._flag(
                    "seq_gap", event, f"the job's first event has seq {seq}: {missing} missing"
                )
        elif seq > expected:
            count = seq - expected
            self._flag(
                "seq_gap", event,
                f"seq jumps from {expected - 1} to {seq}: {count} event{'s' * (count > 1)} missing",
            )  # fmt: skip
        elif seq < expected:
            self._flag("seq_gap", event, f"seq {seq} repeats or goes back (expected {expected})")

    def _track_state(self, event: Event) -> None:
        history = self.history
        self.known = True
        if event.type == "purged":
            history.state = "purged"
        elif event.next_state is not None:
            history.state = event.next_state
        history.task = event.task or history.task
        if event.next_state is not None or event.type == "purged":
            history.last_event = event

    def _add_row(self, event: Event, detail: str) -> None:
        rows = self.history.rows
        since = event.ts_ms - rows[-1].event.ts_ms if rows else None
        rows.append(Row(event, since, detail[:DETAIL_CHARS]))

    def _flag(self, code: str, event: Event, message: str) -> None:
        history = self.history
        anomaly = Anomaly(code, message, event.event_id, history.queue, history.job_id, event.ts_ms)
        history.anomalies.append(anomaly)

    def _open(self) -> list[Attempt]:
        return [attempt for attempt in self.history.attempts if attempt.closed is None]

    def _attempt_for(self, event: Event) -> Attempt | None:
        matching = [attempt for attempt in self._open() if attempt.matches(event)]
        return matching[0] if matching else None

    def _close(self, event: Event) -> Attempt | None:
        attempt = self._attempt_for(event)
        if attempt is not None:
            attempt.closed = event
        return attempt

    # -- handlers: each returns the row's detail -----------------------------------------

    def _enqueued(self, event: Event) -> str:
        self.started = True
        self.failures = 0
        self.max_attempts = int_or_none(event.attributes.get("max_attempts"))
        if self.history.enqueued_ms is None:
            self.history.enqueued_ms = event.ts_ms
        return enqueue_detail(event)

    def _requeued(self, event: Event) -> str:
        self.failures = 0
        self.started = True
        return joined(by(event), "attempts reset")

    def _claimed(self, event: Event) -> str:
        if self.from_start and not self.started:
            self._flag(
                "claim_without_enqueue", event, "claimed, but the ledger holds no enqueue before it"
            )
        for other in self._open():
            self._flag(
                "overlapping_claims", event,
                f"claimed by {event.worker} while attempt {other.number} on {other.worker} is "
                "still open (no reap, failure or return in between)",
            )  # fmt: skip
        self.history.attempts.append(Attempt(event))
        return f"token {event.token}" if event.token is not None else ""

    def _heartbeat(self, event: Event) -> str:
        detail = heartbeat_detail(event)
        if event.job_id == self.history.job_id:  # a malformed heartbeat about the job
            return detail
        owners = [attempt for attempt in self._open() if attempt.worker == event.worker]
        if owners:
            owners[-1].heartbeats.append(event)
        elif self._open() or self.known:
            holder = ", ".join(str(a.worker) for a in self._open()) or "no worker"
            self._flag(
                "foreign_heartbeat", event,
                f"heartbeat from {event.worker} names the job, which {holder} holds",
            )  # fmt: skip
        return detail

    def _reaped(self, event: Event) -> str:
        attempt = self._close(event)
        if attempt is not None:
            self.reaped.append(attempt)
            self._check_fresh(attempt, event)
        crashes = event.attributes.get("crashes")
        return joined(
            f"{event.worker}'s heartbeat expired",
            f"crash {crashes}" if crashes else "",
            f"by {event.attributes['reaper']}" if "reaper" in event.attributes else "",
        )

    def _check_fresh(self, attempt: Attempt, reap: Event) -> None:
        if not attempt.heartbeats:
            return
        last = attempt.heartbeats[-1]
        ttl = int_or_none(last.attributes.get("ttl_ms"))
        age = reap.ts_ms - last.ts_ms
        if ttl is not None and age < ttl:
            self._flag(
                "reap_while_fresh", reap,
                f"reaped {format_duration(age)} after a heartbeat from {attempt.worker} naming "
                f"the job, within its TTL of {format_duration(ttl)}",
            )  # fmt: skip

    def _finished(self, event: Event) -> str:
        detail = finish_detail(event)
        if event.prev_state != "active":
            return detail
        if self._close(event) is not None:
            return detail
        zombie = [attempt for attempt in self.reaped if attempt.matches(event)]
        if zombie:
            self._flag(
                "ack_after_reap", event,
                f"{event.type} by {event.worker}, whose claim (attempt {zombie[-1].number}) was "
                "reaped: the job may have run twice",
            )  # fmt: skip
        elif self.known or self.from_start:
            self._flag(
                "ack_without_claim", event, f"{event.type} by {event.worker} with no open claim"
            )
        return detail

    def _failed(self, event: Event) -> str:
        self._close(event)
        counted = int_or_none(event.attributes.get("failures"))
        self.failures = counted if counted is not None else self.failures + 1
        return joined(event.error or "", ran_for(event))

    def _dead_lettered(self, event: Event) -> str:
        if event.prev_state == "active":
            self._close(event)
        limit = int_or_none(event.attributes.get("max_attempts")) or self.max_attempts
        if event.reason == "retries_exhausted" and limit is not None and self.failures < limit:
            self._flag(
                "early_dead_letter", event,
                f"dead-lettered as retries_exhausted after {self.failures} failure"
                f"{'s' * (self.failures != 1)}, but max_attempts is {limit}",
            )  # fmt: skip
        return joined(event.reason or "", event.error or "")

    def _rejected(self, event: Event) -> str:
        detail = joined(
            f"{event.attributes.get('op', 'ack')} refused",
            event.reason or "",
            f"token {event.token}",
        )
        if any(attempt.matches(event) for attempt in self.reaped):
            return joined(detail, EXPLAINED_REJECTION)
        return detail

    def _worker_reaped(self, event: Event) -> str:
        return joined(f"worker {event.worker} reaped", f"jobs {event.attributes.get('jobs', '')}")

    def _other(self, event: Event) -> str:
        if event.prev_state == "active" and event.job_id == self.history.job_id:
            self._close(event)
        return generic_detail(event)


def build_history(
    queue: str, job_id: str, events: Iterable[Event], *, from_start: bool, window_end_ms: int = 0
) -> JobHistory:
    builder = HistoryBuilder(queue, job_id, from_start=from_start)
    for event in events:
        builder.feed(event)
    return builder.finish(window_end_ms)


JobKey = tuple[str, str]


def group_by_job(
    events: Iterable[Event], *, only: set[JobKey] | None = None
) -> dict[JobKey, list[Event]]:
    """Each job's events, in the order given; heartbeats and worker reaps go to every job
    they name. Jobs known only from being named are left out; `only` keeps those jobs."""
    groups: dict[JobKey, list[Event]] = {}
    own: set[JobKey] = set()
    for event in events:
        if event.job_id is not None:
            key = (event.queue, event.job_id)
            if only is None or key in only:
                own.add(key)
                groups.setdefault(key, []).append(event)
        elif event.type in NAMING_TYPES:
            for job_id in event.named_jobs:
                key = (event.queue, job_id)
                if only is None or key in only:
                    groups.setdefault(key, []).append(event)
    return {key: found for key, found in groups.items() if key in own}


def all_histories(
    events: list[Event],
    *,
    from_start: bool,
    window_end_ms: int = 0,
    only: set[JobKey] | None = None,
) -> list[JobHistory]:
    """The history of every job (or of the `only` ones) with events of its own, in
    (queue, job id) order."""
    end_ms = window_end_ms or max((event.ts_ms for event in events), default=0)
    with gc_paused():
        return _histories(events, from_start=from_start, end_ms=end_ms, only=only)


def _histories(
    events: list[Event], *, from_start: bool, end_ms: int, only: set[JobKey] | None
) -> list[JobHistory]:
    groups = group_by_job(events, only=only)
    return [
        build_history(
            queue, job_id, groups[(queue, job_id)], from_start=from_start, window_end_ms=end_ms
        )
        for queue, job_id in sorted(groups)
    ]  # fmt: skip
