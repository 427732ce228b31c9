"""Auditor filters over the merged ledger.

Every filter narrows the events; values of one filter given several times are
alternatives (`--type acked --type failed`). `--where PATH=VALUE` compares one value:
`payload.<field>...` is the job's payload from its enqueue, so it selects every event of the
jobs whose payload matches; `attrs.<key>` is the event's attribute; any other name is an
event field (`reason=crash_limit`). VALUE is read as JSON when it parses (`3`, `true`,
`"3"`), else as text, and a string field also matches its text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from replay.errors import BadInput
from replay.events import FIELDS, Event

_MISSING: Final = object()
_ATTRIBUTE_ROOTS: Final = ("attrs", "attributes")


@dataclass(frozen=True, slots=True)
class Where:
    """One `--where PATH=VALUE` condition."""

    root: str  # "payload", "attrs" or an event field
    path: tuple[str, ...]
    text: str

    def matches(self, value: Any) -> bool:
        if value is _MISSING:
            return False
        try:
            wanted = json.loads(self.text)
        except ValueError:
            wanted = self.text
        if value == wanted and type(value) is type(wanted):
            return True
        return isinstance(value, str) and value == self.text


def parse_where(text: str) -> Where:
    name, sep, value = text.partition("=")
    parts = tuple(part for part in name.strip().split("."))
    if not sep or not parts or not all(parts):
        msg = f"cannot read --where {text!r}: give PATH=VALUE, e.g. payload.customer=42"
        raise BadInput(msg)
    root, path = parts[0], parts[1:]
    if root == "payload" or root in _ATTRIBUTE_ROOTS:
        if not path:
            msg = f"--where {text!r} names no field inside {root}"
            raise BadInput(msg)
        return Where("attrs" if root in _ATTRIBUTE_ROOTS else root, path, value)
    if root not in FIELDS or path:
        msg = f"--where {text!r}: {root!r} is not payload.*, attrs.* or an event field"
        raise BadInput(msg)
    return Where(root, (), value)


@dataclass(slots=True)
class Query:
    queues: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    workers: list[str] = field(default_factory=list)
    jobs: list[str] = field(default_factory=list)
    since_ms: int | None = None
    until_ms: int | None = None
    wheres: list[Where] = field(default_factory=list)

    def run(self, events: list[Event]) -> list[Event]:
        payloads = _payload_matches(events, [w for w in self.wheres if w.root == "payload"])
        return [event for event in events if self._keeps(event, payloads)]

    def _keeps(self, event: Event, payload_jobs: set[tuple[str, str]] | None) -> bool:
        if not self._plain_filters(event):
            return False
        if payload_jobs is not None and (event.queue, event.job_id or "") not in payload_jobs:
            return False
        return all(
            where.matches(_value(event, where)) for where in self.wheres if where.root != "payload"
        )

    def _plain_filters(self, event: Event) -> bool:
        checks = (
            (self.queues, event.queue),
            (self.tasks, event.task),
            (self.types, event.type),
            (self.workers, event.worker),
        )
        if any(wanted and value not in wanted for wanted, value in checks):
            return False
        if self.jobs and not any(event.mentions(job_id) for job_id in self.jobs):
            return False
        if self.since_ms is not None and event.ts_ms < self.since_ms:
            return False
        return self.until_ms is None or event.ts_ms <= self.until_ms


def _value(event: Event, where: Where) -> Any:
    if where.root == "attrs":
        return event.attributes.get(where.path[0], _MISSING) if len(where.path) == 1 else _MISSING
    return getattr(event, where.root)


def _payload_matches(events: Iterable[Event], wheres: list[Where]) -> set[tuple[str, str]] | None:
    """The jobs whose enqueue payload meets every payload condition (None: no condition)."""
    if not wheres:
        return None
    jobs = set()
    for event in events:
        if event.payload is None or event.job_id is None:
            continue
        payload = _parse(event.payload)
        if all(where.matches(_dig(payload, where.path)) for where in wheres):
            jobs.add((event.queue, event.job_id))
    return jobs


def _parse(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return _MISSING


def _dig(value: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value
