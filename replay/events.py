"""The event as replay holds it: a compact named tuple with `JobEvent`'s fields.

Reading is what a rebuild costs, and a frozen dataclass with nineteen fields takes several
times longer to build than the JSON it came from; a named tuple is made in one call. Events
from S3, Kafka and Redis arrive as `JobEvent` and are converted with `from_job_event`;
NDJSON records become events directly (`from_record`) without a `JobEvent` in between.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Mapping
from typing import Any, Final, NamedTuple

from ledger.event import JobEvent

# Event types whose `attrs["jobs"]` names job ids (comma-separated) instead of `job_id`.
NAMING_TYPES: Final = frozenset({"heartbeat", "worker_reaped"})


class Event(NamedTuple):
    """One ledger event; the fields, in order, are those of `ledger.event.JobEvent`."""

    queue: str
    stream_id: str
    type: str
    ts_ms: int
    job_id: str | None = None
    seq: int | None = None
    prev_state: str | None = None
    next_state: str | None = None
    lane: str | None = None
    task: str | None = None
    attempt: int | None = None
    worker: str | None = None
    token: int | None = None
    payload: str | None = None
    error: str | None = None
    due_at_ms: int | None = None
    reason: str | None = None
    trace_id: str | None = None
    attributes: Mapping[str, str] = {}

    @property
    def event_id(self) -> str:
        return f"{self.queue}/{self.stream_id}"

    @property
    def order_key(self) -> tuple[str, int, int]:
        """Queue, then stream id (milliseconds, then sequence), as `JobEvent.order_key`."""
        ms, _, n = self.stream_id.partition("-")
        return (self.queue, int(ms), int(n or 0))

    @property
    def named_jobs(self) -> list[str]:
        """Job ids a heartbeat or a worker reap names in its attributes."""
        if self.type not in NAMING_TYPES:
            return []
        jobs = self.attributes.get("jobs", "")
        return jobs.split(",") if jobs else []

    def mentions(self, job_id: str) -> bool:
        """Whether the event is about the job, or names it (heartbeats, worker reaps)."""
        return self.job_id == job_id or job_id in self.named_jobs

    def to_record(self) -> dict[str, Any]:
        """The ledger's record form (`JobEvent.to_record`), event id first."""
        record: dict[str, Any] = {"event_id": self.event_id, **self._asdict()}
        record["attributes"] = dict(self.attributes)
        return record


FIELDS: Final = Event._fields
RECORD_KEYS: Final = len(FIELDS) + 1  # the fields and `event_id`

_values_of_record = operator.itemgetter(*FIELDS)
_values_of_job_event = operator.attrgetter(*FIELDS)
_new = tuple.__new__


def from_job_event(event: JobEvent) -> Event:
    return _new(Event, _values_of_job_event(event))


def from_record(record: Any) -> Event | None:
    """The event of a complete, well-formed record, or None to send it the slow way.

    The slow way (`JobEvent.from_record`) names what is wrong; this one only checks what
    the fast path would otherwise get wrong silently: every key present and no other, an
    integer time, and an event id that matches the queue and stream id.
    """
    if type(record) is not dict or len(record) != RECORD_KEYS:
        return None
    try:
        values = _values_of_record(record)
    except KeyError:
        return None
    queue, stream_id, ts_ms = values[0], values[1], values[3]
    if type(ts_ms) is not int or type(stream_id) is not str or type(queue) is not str:
        return None
    if record["event_id"] != f"{queue}/{stream_id}":
        return None
    return _new(Event, values)


def from_records(records: list[Any]) -> list[Event] | None:
    """`from_record` over a whole list, or None when any record needs the slow way.

    The checks are the same, made with C-level loops (`map` over item getters) rather than
    a Python call per record: reading is what a rebuild costs. Events are built first and
    checked after, so that no list of intermediate tuples is kept.
    """
    try:
        if set(map(len, records)) != {RECORD_KEYS}:
            return None
        events = list(map(_new_event, map(_values_of_record, records)))
        ids = map(_event_id_of_record, records)
        expected = map("/".join, map(_queue_and_stream_id, events))
        if not all(map(operator.eq, ids, expected)):
            return None
    except (KeyError, TypeError):  # a record that is no dict, or lacks a key or a string
        return None
    if set(map(type, map(_ts_of, events))) != {int}:
        return None
    return events


_event_id_of_record = operator.itemgetter("event_id")
_queue_and_stream_id = operator.itemgetter(0, 1)
_ts_of = operator.itemgetter(3)
_new_event = functools.partial(_new, Event)
