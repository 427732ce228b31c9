"""The rotating gzip NDJSON ledger, on real files in a temporary folder.

Rotation and retention run on a `FakeClock`; nothing here sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import resource
import stat
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from ledger.event import JobEvent
from sinks.base import SinkUnavailable
from sinks.ndjson import (
    NdjsonSink,
    ReadProblem,
    bytes_on_disk,
    iter_segments,
    read_events,
    read_segment,
)
from tests.sinks.helpers import FakeClock, numbered_events, utc

NOON = utc("2025-01-31T12:00:00")
TODAY_SEGMENT = "ledger-20250131T000000-000001.ndjson"

SinkFactory = Callable[..., NdjsonSink]


def ndjson(events: list[JobEvent]) -> bytes:
    """The bytes the sink is expected to write for these events."""
    lines = (json.dumps(e.to_record(), separators=(",", ":"), sort_keys=True) for e in events)
    return "".join(line + "\n" for line in lines).encode()


def events_in(folder: Path) -> list[JobEvent]:
    """Every event of the folder, failing the test on any unreadable line."""
    results = list(read_events(folder))
    assert [r for r in results if isinstance(r, ReadProblem)] == []
    return [r for r in results if isinstance(r, JobEvent)]


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def seed(folder: Path, files: dict[str, bytes]) -> None:
    """Create the folder with these files in it, as an earlier run might have left it."""
    folder.mkdir()
    for name, content in files.items():
        (folder / name).write_bytes(content)


def names_in(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def files_under(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "ledger"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOON)


@pytest.fixture
async def make_sink(folder: Path, clock: FakeClock) -> AsyncIterator[SinkFactory]:
    """Builds sinks on `folder` and the fake clock by default, and closes them all."""
    sinks: list[NdjsonSink] = []

    def build(where: Path | None = None, **options: Any) -> NdjsonSink:
        options.setdefault("clock", clock)
        sink = NdjsonSink(where or folder, **options)
        sinks.append(sink)
        return sink

    yield build
    for sink in sinks:
        with contextlib.suppress(SinkUnavailable):
            await sink.close()


@contextlib.contextmanager
def file_size_limit(limit_bytes: int) -> Iterator[None]:
    """Make writes past `limit_bytes` fail with EFBIG (root included; SIGXFSZ is ignored)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


# --- format --------------------------------------------------------------------------------


async def test_a_batch_is_one_write_of_compact_sorted_json_lines(
    make_sink: SinkFactory, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each event is one JSON line with sorted keys; the batch goes out in one write()."""
    written: list[bytes] = []
    real_write = os.write

    def recording_write(fd: int, data: Any) -> int:
        written.append(bytes(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", recording_write)
    events = numbered_events(3)
    sink = make_sink()
    await sink.write(events)

    assert [data for data in written if b"event_id" in data] == [ndjson(events)]
    assert sink.live_path is not None
    assert sink.live_path.read_bytes() == ndjson(events)
    assert events_in(folder) == events


async def test_files_are_owner_only_even_under_a_permissive_umask(
    make_sink: SinkFactory, folder: Path
) -> None:
    """Live and rotated segments are created 0600 and the folder 0700, whatever the umask."""
    previous = os.umask(0)
    try:
        sink = make_sink()
        await sink.write(numbered_events(2))
        await sink.rotate()
        await sink.write(numbered_events(2, start=2))
    finally:
        os.umask(previous)

    segments = iter_segments(folder)
    assert [p.name.endswith(".gz") for p in segments] == [True, False]
    assert [mode_of(p) for p in segments] == [0o600, 0o600]
    assert mode_of(folder) == 0o700


# --- start-up recovery ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tail", "lines_cut"),
    [
        pytest.param(b'{"event_id":"emails/17647', 1, id="no-trailing-newline"),
        pytest.param(b"not json\n", 1, id="complete-line-not-json"),
        pytest.param(b"\0" * 16, 1, id="zeros-after-power-loss"),
        pytest.param(b'not json\n{"torn', 2, id="bad-line-then-torn-line"),
    ],
)
async def test_torn_tail_of_the_live_segment_is_cut_at_start_and_counted(
    make_sink: SinkFactory, folder: Path, tail: bytes, lines_cut: int
) -> None:
    """Start cuts back to the last complete JSON line, counts the lines and warns."""
    good = numbered_events(2)
    seed(folder, {TODAY_SEGMENT: ndjson(good) + tail})
    live = folder / TODAY_SEGMENT

    sink = make_sink()
    with capture_logs() as logs:
        await sink.start()

    assert sink.torn_lines_recovered == lines_cut
    assert live.read_bytes() == ndjson(good)
    warnings = [e for e in logs if e["event"] == "ndjson_torn_tail_cut"]
    assert [(w["log_level"], w["lines"], w["path"]) for w in warnings] == [
        ("warning", lines_cut, str(live))
    ]

    more = numbered_events(1, start=2)
    await sink.write(more)
    assert sink.live_path == live
    assert events_in(folder) == good + more


async def test_leftover_tmp_is_removed_and_older_plain_segments_compressed_at_start(
    make_sink: SinkFactory, folder: Path
) -> None:
    """A half-written .gz.tmp goes; yesterday's plain segment becomes a readable gz."""
    older, today = numbered_events(2), numbered_events(1, start=2)
    seed(
        folder,
        {
            "ledger-20250130T000000-000001.ndjson": ndjson(older),
            "ledger-20250130T000000-000001.ndjson.gz.tmp": b"\x1f\x8b half",
            "ledger-20250131T000000-000002.ndjson": ndjson(today),
        },
    )

    sink = make_sink()
    await sink.start()
    await sink.maintain()

    assert names_in(folder) == [
        ".lock",
        "ledger-20250130T000000-000001.ndjson.gz",
        "ledger-20250131T000000-000002.ndjson",
    ]
    assert list(read_segment(folder / "ledger-20250130T000000-000001.ndjson.gz")) == older
    assert sink.live_path == folder / "ledger-20250131T000000-000002.ndjson"
    assert events_in(folder) == older + today


async def test_segment_left_both_plain_and_compressed_is_read_once(
    make_sink: SinkFactory, folder: Path
) -> None:
    """A crash between the gz rename and the plain unlink duplicates nothing."""
    events = numbered_events(3)
    plain = folder / "ledger-20250130T000000-000001.ndjson"
    seed(folder, {plain.name: ndjson(events), f"{plain.name}.gz": gzip.compress(ndjson(events))})

    assert iter_segments(folder) == [plain.with_name(plain.name + ".gz")]
    assert events_in(folder) == events

    await make_sink().start()
    assert not plain.exists()


async def test_restart_on_the_same_day_appends_to_the_same_live_segment(
    make_sink: SinkFactory, folder: Path
) -> None:
    """A new sink picks up today's segment instead of starting another one."""
    first = make_sink()
    await first.write(numbered_events(2))
    await first.close()

    second = make_sink()
    await second.write(numbered_events(2, start=2))

    assert second.live_path == first_segment(folder)
    assert events_in(folder) == numbered_events(4)


def first_segment(folder: Path) -> Path:
    return iter_segments(folder)[0]


async def test_second_sink_on_the_same_folder_is_refused(make_sink: SinkFactory) -> None:
    """Two writers would race on rotation, so the folder lock turns the second one away."""
    await make_sink().write(numbered_events(1))

    with pytest.raises(SinkUnavailable, match="written by another sink"):
        await make_sink().write(numbered_events(1, start=1))


# --- rotation ------------------------------------------------------------------------------


async def test_size_limit_rotates_and_never_splits_a_batch(
    make_sink: SinkFactory, folder: Path
) -> None:
    """Two batches fit per segment; a batch bigger than the limit gets a segment alone."""
    batches = [numbered_events(3, start=100 + 3 * i) for i in range(5)]
    batch_bytes = len(ndjson(batches[0]))
    huge = numbered_events(9, start=200)

    sink = make_sink(max_file_bytes=2 * batch_bytes)
    for batch in [*batches, huge]:
        await sink.write(batch)
    await sink.maintain()

    segments = iter_segments(folder)
    contents = [list(read_segment(path)) for path in segments]
    assert contents == [batches[0] + batches[1], batches[2] + batches[3], batches[4], huge]
    assert [path.name.endswith(".gz") for path in segments] == [True, True, True, False]
    assert segments[-1] == sink.live_path


async def test_utc_day_change_rotates_the_live_segment(
    make_sink: SinkFactory, folder: Path, clock: FakeClock
) -> None:
    """The first write after midnight UTC starts a segment named after the new day."""
    clock.now = utc("2025-01-31T23:59:59")
    sink = make_sink()
    await sink.write(numbered_events(1))
    clock.advance(2)
    await sink.write(numbered_events(1, start=1))
    await sink.maintain()

    assert [path.name for path in iter_segments(folder)] == [
        "ledger-20250131T235959-000001.ndjson.gz",
        "ledger-20250201T000001-000002.ndjson",
    ]
    assert events_in(folder) == numbered_events(2)


async def test_clock_stepping_back_neither_rotates_nor_reorders(
    make_sink: SinkFactory, folder: Path, clock: FakeClock
) -> None:
    """Names never sort before an older segment, and a day behind is not a new day."""
    sink = make_sink()
    await sink.write(numbered_events(1))
    clock.advance(-86_400)
    await sink.write(numbered_events(1, start=1))
    await sink.rotate()
    await sink.write(numbered_events(1, start=2))

    names = [path.name for path in iter_segments(folder)]
    assert names == [
        "ledger-20250131T120000-000001.ndjson.gz",
        "ledger-20250131T120000-000002.ndjson",
    ]
    assert events_in(folder) == numbered_events(3)


# --- retention -----------------------------------------------------------------------------


async def test_retention_by_age_deletes_segments_older_than_the_limit(
    make_sink: SinkFactory, folder: Path, clock: FakeClock
) -> None:
    """A segment goes once the one after it started more than retention_days ago."""
    sink = make_sink(retention_days=2)
    for day in range(6):
        await sink.write(numbered_events(1, start=day))
        clock.advance(86_400)
    clock.advance(-86_400)  # back to the sixth day, whose segment is live
    await sink.maintain()

    assert [path.name[:15] for path in iter_segments(folder)] == [
        "ledger-20250203",
        "ledger-20250204",
        "ledger-20250205",
    ]
    assert events_in(folder) == numbered_events(3, start=3)


async def test_retention_by_size_deletes_the_oldest_segments_first(
    make_sink: SinkFactory, folder: Path
) -> None:
    """Rotated segments are deleted oldest first until they fit in retention_bytes."""
    batches = [numbered_events(3, start=100 + 3 * i) for i in range(5)]
    writer = make_sink(max_file_bytes=len(ndjson(batches[0])))
    for batch in batches:
        await writer.write(batch)
    await writer.close()
    rotated = [path for path in iter_segments(folder) if path.name.endswith(".gz")]
    assert len(rotated) == 4

    newest_two_bytes = sum(path.stat().st_size for path in rotated[-2:])
    sink = make_sink(retention_bytes=newest_two_bytes)
    await sink.start()
    await sink.maintain()

    assert iter_segments(folder) == [*rotated[-2:], sink.live_path]
    assert events_in(folder) == batches[2] + batches[3] + batches[4]


async def test_retention_never_deletes_the_live_segment(
    make_sink: SinkFactory, folder: Path
) -> None:
    """With zero days and zero bytes allowed, everything but the live segment goes."""
    sink = make_sink(retention_days=0, retention_bytes=0)
    await sink.write(numbered_events(1))
    await sink.rotate()
    await sink.write(numbered_events(1, start=1))
    await sink.maintain()

    assert iter_segments(folder) == [sink.live_path]
    assert events_in(folder) == numbered_events(1, start=1)


# --- failures ------------------------------------------------------------------------------


async def test_full_disk_raises_sink_unavailable_at_once(
    make_sink: SinkFactory, folder: Path
) -> None:
    """ENOSPC (the live segment is /dev/full) names folder and errno, with no timeout wait."""
    seed(folder, {})
    (folder / TODAY_SEGMENT).symlink_to("/dev/full")
    sink = make_sink(write_timeout_s=30)

    with pytest.raises(SinkUnavailable, match="ENOSPC") as raised:
        await sink.write(numbered_events(2))

    assert str(folder) in str(raised.value)
    assert "did not confirm" not in str(raised.value)


async def test_unusable_folder_raises_sink_unavailable_at_once(
    make_sink: SinkFactory, tmp_path: Path
) -> None:
    """A folder that cannot be created (its parent is a file) names folder and errno."""
    (tmp_path / "a-file").write_text("not a folder")
    folder = tmp_path / "a-file" / "ledger"
    sink = make_sink(folder, write_timeout_s=30)

    with pytest.raises(SinkUnavailable, match="ENOTDIR") as raised:
        await sink.write(numbered_events(1))

    assert str(folder) in str(raised.value)


async def test_partly_written_batch_is_cut_back(make_sink: SinkFactory, folder: Path) -> None:
    """A batch that fails halfway (EFBIG past a file size limit) leaves no torn line."""
    before = numbered_events(200)
    sink = make_sink()
    await sink.write(before)
    assert sink.live_path is not None
    size = sink.live_path.stat().st_size

    with capture_logs(), file_size_limit(size + 100):
        with pytest.raises(SinkUnavailable, match="EFBIG"):
            await sink.write(numbered_events(10, start=200))
        size_after_failure = sink.live_path.stat().st_size

    assert size_after_failure == size
    assert events_in(folder) == before


async def test_write_after_close_raises_sink_unavailable(make_sink: SinkFactory) -> None:
    """A closed sink refuses writes instead of reopening its folder."""
    sink = make_sink()
    await sink.write(numbered_events(1))
    await sink.close()

    with pytest.raises(SinkUnavailable, match="closed"):
        await sink.write(numbered_events(1, start=1))


# --- fsync policies ------------------------------------------------------------------------


@pytest.fixture
def fsynced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records the path of every file or folder fsynced during the test."""
    paths: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        paths.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    return paths


@pytest.mark.parametrize(
    ("policy", "after_writes", "after_close"),
    [("batch", 2, 3), ("interval", 0, 1), ("never", 0, 0)],
)
async def test_fsync_policy_decides_when_the_live_segment_is_fsynced(
    make_sink: SinkFactory, fsynced: list[str], policy: str, after_writes: int, after_close: int
) -> None:
    """batch: every write; interval: later (here, at close); never: not even at close."""
    sink = make_sink(fsync=policy, fsync_interval_ms=60_000)
    await sink.write(numbered_events(1))
    await sink.write(numbered_events(1, start=1))
    live = str(sink.live_path)
    assert fsynced.count(live) == after_writes

    await sink.close()
    assert fsynced.count(live) == after_close


async def test_interval_policy_fsyncs_after_the_interval_without_another_write(
    make_sink: SinkFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last writes of a quiet period are still fsynced once the interval is over."""
    loop = asyncio.get_running_loop()
    synced = asyncio.Event()
    real_fsync = os.fsync

    def signalling_fsync(fd: int) -> None:
        real_fsync(fd)
        loop.call_soon_threadsafe(synced.set)

    sink = make_sink(fsync="interval", fsync_interval_ms=1)
    await sink.write(numbered_events(1))  # the new segment's folder fsync happens here
    monkeypatch.setattr(os, "fsync", signalling_fsync)
    await sink.write(numbered_events(1, start=1))

    await asyncio.wait_for(synced.wait(), timeout=10)


# --- reading -------------------------------------------------------------------------------


def test_corrupt_line_is_reported_with_file_and_line_and_skipped(folder: Path) -> None:
    """Reading goes on past a bad line, and says where it was."""
    first, second = numbered_events(1), numbered_events(1, start=1)
    segment = folder / "ledger-20250130T000000-000001.ndjson.gz"
    seed(folder, {segment.name: gzip.compress(ndjson(first) + b'{"half": \n' + ndjson(second))})

    results = list(read_events(folder))

    assert results[0] == first[0]
    assert isinstance(results[1], ReadProblem)
    assert (results[1].path, results[1].line) == (segment, 2)
    assert results[1].reason.startswith("corrupt line")
    assert results[2] == second[0]


def test_truncated_gzip_is_reported_with_the_lines_read_before_it(folder: Path) -> None:
    """A damaged gzip stream ends its segment with one problem, not an exception."""
    segment = folder / "ledger-20250130T000000-000001.ndjson.gz"
    whole = gzip.compress(ndjson(numbered_events(500)))
    seed(folder, {segment.name: whole[: len(whole) * 2 // 3]})

    results = list(read_segment(segment))
    events = [r for r in results if isinstance(r, JobEvent)]
    problems = [r for r in results if isinstance(r, ReadProblem)]

    assert 0 < len(events) < 500
    assert events == numbered_events(len(events))
    assert problems == [
        ReadProblem(segment, len(events) + 1, problems[0].reason),
    ]
    assert f"after {len(events)} lines" in problems[0].reason


def test_missing_folder_has_no_segments_and_no_bytes(tmp_path: Path) -> None:
    """Nothing was ever written there, which is not an error for a reader."""
    assert iter_segments(tmp_path / "nowhere") == []
    assert bytes_on_disk(tmp_path / "nowhere") == 0


async def test_bytes_on_disk_counts_live_rotated_and_drained_segments(
    make_sink: SinkFactory, folder: Path
) -> None:
    """The figure covers the folder and drained/, so it can back a disk-usage alert."""
    sink = make_sink()
    await sink.write(numbered_events(5))
    await sink.rotate()
    await sink.write(numbered_events(5, start=5))
    seed(folder / "drained", {"ledger-20250101T000000-000000.ndjson.gz": b"x" * 1000})

    files = files_under(folder)
    assert len(files) == 4  # .lock (empty), the rotated, the live and the drained segment
    assert bytes_on_disk(folder) == sum(path.stat().st_size for path in files)
    assert iter_segments(folder, include_drained=True)[0].parent.name == "drained"
