"""The circuit breaker, the fallback sink and the drain back to the primary.

The primary here is `MemorySink`, an in-memory test sink that can be switched to fail: a
legitimate fake, since what is under test is the routing around it, not a remote system.
The fallback is a real `NdjsonSink` on a temporary folder. Time is a `FakeClock`.
"""

from __future__ import annotations

import contextlib
import gzip
import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from ledger.event import JobEvent
from sinks.base import SinkUnavailable
from sinks.breaker import BreakerState, CircuitBreaker
from sinks.fallback import FallbackSink, drain
from sinks.ndjson import NdjsonSink, ReadProblem, iter_segments, read_events
from tests.sinks.helpers import FakeClock, MemorySink, numbered_events, utc

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


def make_breaker(clock: FakeClock, **options: Any) -> CircuitBreaker:
    settings: dict[str, Any] = {
        "failure_threshold": 3,
        "min_calls": 100,
        "reset_timeout_s": 30.0,
        "probe_timeout_s": 10.0,
        "clock": clock,
    } | options
    return CircuitBreaker("primary", **settings)


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        assert breaker.allow()
        breaker.record_failure()


def ids(events: list[JobEvent]) -> list[str]:
    return [event.event_id for event in events]


def fallback_ids(folder: Path) -> list[str]:
    return [r.event_id for r in read_events(folder) if isinstance(r, JobEvent)]


def write_segment(folder: Path, name: str, content: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(gzip.compress(content))
    return path


def drained_names(folder: Path) -> list[str]:
    return sorted(path.name for path in (folder / "drained").iterdir())


# --- breaker -------------------------------------------------------------------------------


def test_breaker_opens_after_consecutive_failures_and_refuses_calls() -> None:
    """A success resets the count; the third failure in a row opens it, with a warning."""
    breaker = make_breaker(FakeClock())
    fail(breaker, 2)
    breaker.record_success()
    fail(breaker, 2)
    assert breaker.state is CLOSED

    with capture_logs() as logs:
        fail(breaker, 1)

    assert breaker.state is OPEN
    assert not breaker.allow()
    assert [(e["event"], e["log_level"]) for e in logs] == [("breaker_opened", "warning")]


def test_breaker_opens_when_the_failure_rate_in_the_window_is_too_high() -> None:
    """Every other call failing trips it once min_calls outcomes are in the window."""
    breaker = make_breaker(FakeClock(), failure_threshold=100, min_calls=10, failure_rate=0.5)
    for _ in range(4):
        fail(breaker, 1)
        breaker.record_success()
    fail(breaker, 1)
    assert breaker.state is CLOSED  # 5 of 9: too few calls to judge

    breaker.record_success()
    fail(breaker, 1)
    assert breaker.state is OPEN  # 6 of 11


def test_breaker_forgets_outcomes_older_than_the_window() -> None:
    """Failures from long ago do not count towards the rate."""
    clock = FakeClock()
    breaker = make_breaker(clock, failure_threshold=100, min_calls=4, window_s=60.0)
    fail(breaker, 3)
    breaker.record_success()
    clock.advance(61)

    fail(breaker, 1)
    for _ in range(3):
        breaker.record_success()
    assert breaker.state is CLOSED


def test_breaker_cools_down_lets_one_probe_through_and_closes_on_success() -> None:
    """Open for reset_timeout_s, then exactly one call; its success closes the breaker."""
    clock = FakeClock()
    changes: list[tuple[BreakerState, BreakerState]] = []
    breaker = make_breaker(clock, on_change=lambda old, new: changes.append((old, new)))
    fail(breaker, 3)

    clock.advance(29.9)
    assert not breaker.allow()
    clock.advance(0.1)
    assert breaker.allow()
    assert breaker.state is HALF_OPEN
    assert not breaker.allow()

    breaker.record_success()
    assert breaker.state is CLOSED
    assert breaker.allow()
    assert changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]


def test_failed_probe_reopens_the_breaker_for_another_cool_down() -> None:
    """The probe's failure sends it back to open, not to closed."""
    clock = FakeClock()
    breaker = make_breaker(clock)
    fail(breaker, 3)
    clock.advance(30)
    fail(breaker, 1)

    assert breaker.state is OPEN
    clock.advance(29)
    assert not breaker.allow()
    clock.advance(1)
    assert breaker.allow()


def test_probe_that_never_reports_expires_back_to_open() -> None:
    """A cancelled probe cannot leave the breaker half-open and refusing forever."""
    clock = FakeClock()
    breaker = make_breaker(clock)
    fail(breaker, 3)
    clock.advance(30)
    assert breaker.allow()  # the probe, which never reports

    clock.advance(9.9)
    assert breaker.state is HALF_OPEN
    clock.advance(0.1)
    assert breaker.state is OPEN

    assert not breaker.allow()
    clock.advance(30)
    assert breaker.allow()


# --- fallback sink -------------------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(utc("2025-01-31T12:00:00"))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "fallback"


@pytest.fixture
async def fallback(folder: Path, clock: FakeClock) -> AsyncIterator[NdjsonSink]:
    sink = NdjsonSink(folder, clock=clock, max_file_bytes=4096)
    yield sink
    with contextlib.suppress(SinkUnavailable):
        await sink.close()


@pytest.fixture
def primary() -> MemorySink:
    return MemorySink()


@pytest.fixture
def sink(primary: MemorySink, fallback: NdjsonSink, clock: FakeClock) -> FallbackSink:
    return FallbackSink(primary, fallback, breaker=make_breaker(clock))


async def test_batches_go_to_the_primary_while_it_works(
    sink: FallbackSink, primary: MemorySink, folder: Path
) -> None:
    """Nothing reaches the fallback folder while the primary confirms every write."""
    events = numbered_events(5)
    await sink.write(events[:2])
    await sink.write(events[2:])

    assert primary.event_ids == ids(events)
    assert (sink.events_to_primary, sink.events_to_fallback) == (5, 0)
    assert not sink.fallback_active
    assert iter_segments(folder) == []


async def test_failing_primary_sends_the_same_records_to_the_fallback(
    sink: FallbackSink, primary: MemorySink, folder: Path
) -> None:
    """Same event ids, same records; one warning naming the sink and the batch size."""
    primary.failing = True
    events = numbered_events(3)

    with capture_logs() as logs:
        await sink.write(events)
        await sink.write(numbered_events(2, start=3))

    assert list(read_events(folder)) == [*events, *numbered_events(2, start=3)]
    assert sink.fallback_active
    assert (sink.events_to_primary, sink.events_to_fallback) == (0, 5)
    warnings = [e for e in logs if e["event"] == "sink_unavailable_writing_to_fallback"]
    assert [(w["log_level"], w["sink"], w["batch_size"]) for w in warnings] == [
        ("warning", "memory", 3)
    ]


async def test_open_breaker_sends_batches_to_the_fallback_without_calling_the_primary(
    sink: FallbackSink, primary: MemorySink, folder: Path
) -> None:
    """Once the breaker opens, a dead primary costs no more timeouts."""
    primary.failing = True
    for n in range(3):
        await sink.write(numbered_events(1, start=n))
    assert sink.breaker.state is OPEN
    calls = primary.calls

    await sink.write(numbered_events(1, start=3))

    assert primary.calls == calls
    assert fallback_ids(folder) == ids(numbered_events(4))


async def test_primary_back_after_a_probe_is_logged_and_used_again(
    sink: FallbackSink, primary: MemorySink, clock: FakeClock
) -> None:
    """After the cool-down, a good probe closes the breaker and clears fallback_active."""
    primary.failing = True
    for n in range(3):
        await sink.write(numbered_events(1, start=n))
    primary.failing = False
    clock.advance(30)

    with capture_logs() as logs:
        await sink.write(numbered_events(1, start=3))

    assert primary.event_ids == ids(numbered_events(1, start=3))
    assert not sink.fallback_active
    assert sink.breaker.state is CLOSED
    recovered = [e for e in logs if e["event"] == "sink_recovered_writing_to_primary"]
    assert [(e["log_level"], e["sink"]) for e in recovered] == [("info", "memory")]


async def test_fallback_failing_too_raises_sink_unavailable(
    primary: MemorySink, tmp_path: Path, clock: FakeClock
) -> None:
    """With both down, the shipper must keep the events, so the write raises."""
    (tmp_path / "a-file").write_text("not a folder")
    broken = NdjsonSink(tmp_path / "a-file" / "fallback", clock=clock)
    sink = FallbackSink(primary, broken, breaker=make_breaker(clock))
    primary.failing = True

    with capture_logs() as logs, pytest.raises(SinkUnavailable, match="fallback") as raised:
        await sink.write(numbered_events(1))

    assert "memory" in str(raised.value)
    assert "ENOTDIR" in str(raised.value)
    assert "fallback_unavailable_events_stay_in_outbox" in [e["event"] for e in logs]


# --- drain ---------------------------------------------------------------------------------


async def fill_fallback(sink: FallbackSink, primary: MemorySink, batches: int) -> list[str]:
    """Write batches of 10 while the primary is down; return their event ids."""
    primary.failing = True
    written: list[str] = []
    for n in range(batches):
        events = numbered_events(10, start=10 * n)
        await sink.write(events)
        written += ids(events)
    primary.failing = False
    return written


async def test_drain_reships_every_event_exactly_once_and_a_second_drain_nothing(
    sink: FallbackSink, primary: MemorySink, fallback: NdjsonSink, folder: Path
) -> None:
    """Rotated and live segments all reach the primary once, then sit in drained/."""
    written = await fill_fallback(sink, primary, batches=8)
    assert len(iter_segments(folder)) > 2  # several rotated segments and the live one

    report = await drain(folder, primary, batch_size=7, live=fallback)
    again = await drain(folder, primary, batch_size=7, live=fallback)

    assert Counter(primary.event_ids) == Counter(written)
    assert len(primary.event_ids) == len(written)
    assert (report.events, report.complete, report.problems) == (80, True, [])
    assert report.segments == len(drained_names(folder))
    assert (again.segments, again.events) == (0, 0)
    assert iter_segments(folder) == []


async def test_interrupted_drain_reships_the_whole_segment_next_time(
    sink: FallbackSink, primary: MemorySink, fallback: NdjsonSink, folder: Path
) -> None:
    """A primary failing mid-segment leaves that segment for the next drain, whole."""
    written = await fill_fallback(sink, primary, batches=2)
    await fallback.rotate()
    segments = iter_segments(folder)
    assert len(segments) == 2  # one batch of 10 each: the size limit fits only one

    flaky = MemorySink(fail_after_calls=1)
    first = await drain(folder, flaky, batch_size=5)
    assert not first.complete
    assert (first.segments, first.events) == (0, 5)
    assert iter_segments(folder) == segments

    flaky.fail_after_calls = None
    second = await drain(folder, flaky, batch_size=5)

    assert (second.segments, second.events, second.complete) == (2, 20, True)
    assert Counter(flaky.event_ids) == Counter(written) + Counter(written[:5])
    assert drained_names(folder) == [segment.name for segment in segments]


async def test_drain_reports_and_skips_corrupt_lines(folder: Path, primary: MemorySink) -> None:
    """A bad line is reported with its file and line and never blocks the drain."""
    good = numbered_events(2)
    lines = [json.dumps(e.to_record(), sort_keys=True).encode() + b"\n" for e in good]
    segment = write_segment(
        folder, "ledger-20250130T000000-000001.ndjson.gz", lines[0] + b"\xff{oops\n" + lines[1]
    )

    report = await drain(folder, primary)

    assert primary.event_ids == ids(good)
    assert [(p.path, p.line) for p in report.problems] == [(segment, 2)]
    assert all(isinstance(p, ReadProblem) for p in report.problems)
    assert (report.segments, report.events, report.complete) == (1, 2, True)
    assert drained_names(folder) == [segment.name]


async def test_drain_of_a_folder_that_was_never_written_does_nothing(
    tmp_path: Path, primary: MemorySink
) -> None:
    """No fallback folder means nothing was ever written to the fallback."""
    report = await drain(tmp_path / "never-used", primary)

    assert (report.segments, report.events, report.complete) == (0, 0, True)
    assert primary.calls == 0
