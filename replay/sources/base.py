"""What every source reader shares: what to read, what went wrong, and the reader's base.

A source yields batches of `Event`s and records, in its `SourceReport`, every line,
object, record or entry it could not read, with where it was. Damage never stops a read:
the events before and after it are kept, and the report counts what was skipped.
"""

from __future__ import annotations

import abc
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from replay.events import Event

DEFAULT_NAMESPACE = "jobqueue"
DEFAULT_KAFKA_TIMEOUT_S = 60.0
MAX_KEPT_PROBLEMS = 1000


@dataclass(frozen=True, slots=True)
class ReadOptions:
    """What to read. `job_id`, `queue` and the times let a source skip work early; the
    merge applies `job_id` and `queue` exactly, the times only narrow what is read."""

    job_id: str | None = None
    queue: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    namespace: str = DEFAULT_NAMESPACE
    s3_endpoint_url: str | None = None
    kafka_timeout_s: float = DEFAULT_KAFKA_TIMEOUT_S


@dataclass(frozen=True, slots=True)
class Problem:
    """Something a source could not read: its kind, where it was, and why."""

    kind: str  # corrupt_line, torn_line, damaged_file, damaged_object, unknown_schema, ...
    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass(slots=True)
class SourceReport:
    """One source's reading: how many events it gave and what it could not read."""

    name: str
    address: str
    events: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    problems: list[Problem] = field(default_factory=list)

    def add(self, problem: Problem) -> None:
        self.counts[problem.kind] += 1
        if len(self.problems) < MAX_KEPT_PROBLEMS:  # the counts stay exact past the cap
            self.problems.append(problem)

    @property
    def problem_count(self) -> int:
        return sum(self.counts.values())


class Progress(Protocol):
    """Where a reader reports how far it got (a progress bar, or nothing)."""

    def start(self, description: str, total: int | None) -> None: ...

    def advance(self, amount: int) -> None: ...


class NoProgress:
    """A progress sink that shows nothing."""

    def start(self, description: str, total: int | None) -> None:
        pass

    def advance(self, amount: int) -> None:
        pass


class Source(abc.ABC):
    """One place the ledger is kept; `read` yields its events and fills `report`."""

    kind: str = "source"

    def __init__(self, address: str) -> None:
        self.address = address
        self.name = self.kind
        self.report = SourceReport(self.name, address)

    def rename(self, name: str) -> None:
        """Give the source the short name shown beside its events (ndjson, ndjson#2...)."""
        self.name = name
        self.report.name = name

    @abc.abstractmethod
    def read(self, options: ReadOptions, progress: Progress) -> Iterator[list[Event]]:
        """Yield the source's events in batches; raises `SourceUnavailable` if it cannot be
        read at all. Batches keep the per-event cost of merging low."""
