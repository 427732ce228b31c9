"""Event factories, a settable clock and an in-memory sink for the sink tests."""

from __future__ import annotations

import calendar
import time
from collections.abc import Sequence

from ledger.event import JobEvent
from sinks.base import Sink, SinkUnavailable

BASE_MS = 1_764_780_000_000


def numbered_event(n: int, *, queue: str = "emails") -> JobEvent:
    """The n-th enqueued event of a queue, with a distinct stream id and a small payload."""
    return JobEvent(
        queue=queue,
        stream_id=f"{BASE_MS + n}-0",
        type="enqueued",
        ts_ms=BASE_MS + n,
        job_id=f"job-{n}",
        seq=1,
        lane="default",
        task="send_welcome",
        payload=f'{{"n":{n}}}',
        attributes={"source": "test"},
    )


def numbered_events(count: int, *, start: int = 0) -> list[JobEvent]:
    return [numbered_event(n) for n in range(start, start + count)]


def utc(stamp: str) -> float:
    """Epoch seconds of a UTC time written as 2025-01-31T23:59:59."""
    return float(calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S")))


class FakeClock:
    """A clock that only moves when a test moves it."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class MemorySink(Sink):
    """A primary that keeps events in a list and can be switched to fail."""

    def __init__(self, name: str = "memory", *, fail_after_calls: int | None = None) -> None:
        self.name = name
        self.failing = False
        self.fail_after_calls = fail_after_calls
        self.calls = 0
        self.events: list[JobEvent] = []

    async def write(self, batch: Sequence[JobEvent]) -> None:
        self.calls += 1
        worn_out = self.fail_after_calls is not None and self.calls > self.fail_after_calls
        if self.failing or worn_out:
            msg = f"sink {self.name} is switched off by the test"
            raise SinkUnavailable(msg)
        self.events.extend(batch)

    @property
    def event_ids(self) -> list[str]:
        return [event.event_id for event in self.events]
