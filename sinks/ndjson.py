"""The local ledger: one JSON object per line, in rotating gzip segments inside one folder.

Used as the fallback behind a remote primary, and as the primary of small deployments.

Folder layout::

    ledger-<YYYYMMDD>T<HHMMSS>-<seq>.ndjson      the live segment, appended to
    ledger-<YYYYMMDD>T<HHMMSS>-<seq>.ndjson.gz   rotated segments
    drained/ledger-...ndjson.gz                  segments already re-shipped by `drain`
    .lock                                        held by the one sink writing the folder

The stamp is the UTC time the segment was started and `seq` grows by one per segment, so
names sort in write order. A batch is written with one `write()` of complete lines to a
file opened O_APPEND with mode 0600.

Durability, by `fsync` policy:

- "batch": `write` returns once the batch is fsynced.
- "interval": `write` returns after the OS write; an fsync follows within
  `fsync_interval_ms`. A process crash loses nothing (the kernel holds the data), but a
  power failure or kernel crash can lose up to that interval of events.
- "never": the OS flushes when it likes; a power failure can lose any unflushed events.

Rotation happens when the UTC date changes and when a batch would take the live segment
past `max_file_bytes` (a batch is never split, so one batch may exceed the limit). The
finished segment is compressed to `<name>.ndjson.gz.tmp`, fsynced, renamed to
`<name>.ndjson.gz`, and only then is the plain file removed: a crash leaves the plain file
or the complete gz, never a partial gz under the final name. Compression runs in a
background thread after the write that rotated, so it never delays a write.

Retention deletes rotated segments (here and in `drained/`), oldest first, never the live
one: by age, a segment goes once the segment after it started more than `retention_days`
ago (the newest rotated segment stays until another one follows it); by size, the oldest go
until rotated segments take at most `retention_bytes`. Retention runs at start and after
every rotation, so a sink that writes nothing deletes nothing. Both default to keeping
everything.

At start, leftover `.gz.tmp` files are removed, a plain file whose gz exists is removed,
and a torn tail (bytes after the last newline, or a last line that is not a JSON object) is
cut from every plain segment and counted in `torn_lines_recovered`. Today's plain segment,
if under the size limit, becomes the live one again; older ones are compressed.

Errors: any OSError (ENOSPC, EROFS, EACCES, ENOTDIR...) raises `SinkUnavailable` at once,
naming the folder and the errno; a batch that was partly written is cut back first, so no
torn line stays behind. A write whose deadline passed while its thread still waited for the
file is skipped; one already writing completes, which at-least-once delivery tolerates.

One sink per folder: a second one, in any process, is refused while the first holds `.lock`.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import errno
import fcntl
import gzip
import io
import itertools
import json
import os
import re
import shutil
import stat
import threading
import time
import zlib
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, Literal

import structlog
from structlog.typing import FilteringBoundLogger

from ledger.event import JobEvent
from sinks.base import (
    DEFAULT_CLOSE_TIMEOUT_S,
    DEFAULT_WRITE_TIMEOUT_S,
    Sink,
    SinkError,
    SinkUnavailable,
    bounded,
)

log: FilteringBoundLogger = structlog.get_logger(__name__)

FsyncPolicy = Literal["batch", "interval", "never"]

DEFAULT_MAX_FILE_BYTES: Final = 64 * 1024 * 1024
DEFAULT_FSYNC_INTERVAL_MS: Final = 500
DRAINED_DIR: Final = "drained"
LOCK_NAME: Final = ".lock"

_FILE_MODE: Final = 0o600
_DIR_MODE: Final = 0o700
_SECONDS_PER_DAY: Final = 86_400
_TAIL_CHUNK_BYTES: Final = 64 * 1024
_COPY_CHUNK_BYTES: Final = 1024 * 1024
_STAMP_FORMAT: Final = "%Y%m%dT%H%M%S"
_SEGMENT_NAME: Final = re.compile(r"ledger-(\d{8}T\d{6})-(\d{6,})\.ndjson(\.gz)?")
_FSYNC_POLICIES: Final = ("batch", "interval", "never")


@dataclass(frozen=True, slots=True)
class ReadProblem:
    """A line, or the rest of a segment, that could not be read as an event."""

    path: Path
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


ReadResult = JobEvent | ReadProblem


@dataclass(frozen=True, slots=True)
class _Segment:
    path: Path
    start_s: int
    seq: int

    @property
    def key(self) -> tuple[int, int]:
        return (self.start_s, self.seq)

    @property
    def compressed(self) -> bool:
        return self.path.name.endswith(".gz")

    @property
    def drained(self) -> bool:
        return self.path.parent.name == DRAINED_DIR


@dataclass(slots=True)
class _WriteRequest:
    batch: Sequence[JobEvent]
    abandoned: bool = False


# --- reading -------------------------------------------------------------------------------


def iter_segments(folder: Path | str, *, include_drained: bool = False) -> list[Path]:
    """The folder's segments in write order: rotated ones oldest first, the live one last.

    A missing folder has no segments. `include_drained` adds the segments in `drained/`.
    """
    return [segment.path for segment in _scan(Path(folder), include_drained=include_drained)]


def read_segment(path: Path) -> Generator[ReadResult, None, None]:
    """Yield the events of one segment, and a `ReadProblem` for each line that is not one.

    A corrupt or truncated gzip stream ends the segment with a problem saying how many lines
    were read before it.
    """
    line_no = 0
    try:
        with _open_segment(path) as file:
            for line_no, raw in enumerate(file, start=1):
                yield _parse_line(path, line_no, raw)
    except (OSError, EOFError, zlib.error) as exc:
        yield ReadProblem(path, line_no + 1, f"unreadable after {line_no} lines: {exc}")


def read_events(folder: Path | str, *, include_drained: bool = False) -> Iterator[ReadResult]:
    """Yield every event of the folder in write order, with a `ReadProblem` for bad lines.

    Reading a live segment while a sink writes it may report its last line as torn.
    """
    for path in iter_segments(folder, include_drained=include_drained):
        yield from read_segment(path)


def bytes_on_disk(folder: Path | str) -> int:
    """Bytes taken by the files of the folder and of its `drained/` folder."""
    folder = Path(folder)
    return sum(_size_of_files(directory) for directory in (folder, folder / DRAINED_DIR))


def _open_segment(path: Path) -> io.BufferedIOBase:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")
    return path.open("rb")


def _parse_line(path: Path, line_no: int, raw: bytes) -> ReadResult:
    try:
        record = json.loads(raw)
    except ValueError as exc:
        return _bad_line(path, line_no, raw, str(exc))
    if not isinstance(record, dict):
        return _bad_line(path, line_no, raw, "not a JSON object")

    try:
        return JobEvent.from_record(record)
    except (TypeError, ValueError) as exc:
        return _bad_line(path, line_no, raw, f"not an event: {exc}")


def _bad_line(path: Path, line_no: int, raw: bytes, detail: str) -> ReadProblem:
    torn = not raw.endswith(b"\n")
    reason = "torn line (no trailing newline)" if torn else f"corrupt line: {detail}"
    return ReadProblem(path, line_no, reason)


def _size_of_files(directory: Path) -> int:
    total = 0
    with contextlib.suppress(FileNotFoundError, NotADirectoryError), os.scandir(directory) as it:
        for entry in it:
            with contextlib.suppress(FileNotFoundError):
                info = entry.stat(follow_symlinks=False)
                total += info.st_size if stat.S_ISREG(info.st_mode) else 0
    return total


# --- segment names -------------------------------------------------------------------------


def _scan(folder: Path, *, include_drained: bool) -> list[_Segment]:
    """Segments sorted by (start, seq); when a plain file and its gz both exist, the gz."""
    directories = [folder, folder / DRAINED_DIR] if include_drained else [folder]
    found: dict[str, _Segment] = {}
    for directory in directories:
        for segment in _list_segments(directory):
            plain_name = segment.path.name.removesuffix(".gz")
            if segment.compressed or plain_name not in found:
                found[plain_name] = segment
    return sorted(found.values(), key=lambda segment: segment.key)


def _list_segments(directory: Path) -> list[_Segment]:
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    segments = (_parse_name(directory / name) for name in names)
    return [segment for segment in segments if segment is not None]


def _parse_name(path: Path) -> _Segment | None:
    match = _SEGMENT_NAME.fullmatch(path.name)
    if match is None:
        return None
    start_s = calendar.timegm(time.strptime(match[1], _STAMP_FORMAT))
    return _Segment(path, start_s, int(match[2]))


def _segment_name(start_s: int, seq: int) -> str:
    return f"ledger-{time.strftime(_STAMP_FORMAT, time.gmtime(start_s))}-{seq:06d}.ndjson"


def _utc_day(epoch_s: float) -> int:
    return int(epoch_s // _SECONDS_PER_DAY)


# --- file helpers --------------------------------------------------------------------------


def _encode(batch: Sequence[JobEvent]) -> bytes:
    lines = (
        json.dumps(event.to_record(), separators=(",", ":"), sort_keys=True) + "\n"
        for event in batch
    )
    return "".join(lines).encode()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def fsync_dir(directory: Path) -> None:
    """Make the creations, renames and removals of entries in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _last_newline(file: BinaryIO, end: int) -> int:
    """Offset of the last newline before `end`, or -1; reads backwards in chunks."""
    pos = end
    while pos > 0:
        start = max(0, pos - _TAIL_CHUNK_BYTES)
        file.seek(start)
        index = file.read(pos - start).rfind(b"\n")
        if index >= 0:
            return start + index
        pos = start
    return -1


def _is_json_object(raw: bytes) -> bool:
    try:
        return isinstance(json.loads(raw), dict)
    except ValueError:
        return False


def _cut_torn_tail(path: Path) -> int:
    """Cut what follows the last complete JSON line; return how many lines were cut."""
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
        return 0

    with path.open("r+b") as file:
        end = info.st_size
        keep = _last_newline(file, end) + 1
        cut = int(keep < end)

        start = _last_newline(file, keep - 1) + 1 if keep else 0
        file.seek(start)
        if keep and not _is_json_object(file.read(keep - start)):
            keep, cut = start, cut + 1

        if cut:
            file.truncate(keep)
            file.flush()
            os.fsync(file.fileno())
            log.warning(
                "ndjson_torn_tail_cut",
                path=str(path),
                lines=cut,
                bytes=end - keep,
                next="appending after the last complete line",
            )
    return cut


def _compress(plain: Path) -> None:
    """Replace `plain` by `plain.gz` so that a crash never leaves a partial gz behind."""
    final = plain.with_name(plain.name + ".gz")
    tmp = plain.with_name(plain.name + ".gz.tmp")

    try:
        _write_gzip(plain, tmp)
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk should not stay fuller for it
        raise

    os.replace(tmp, final)
    fsync_dir(plain.parent)
    plain.unlink()
    log.info("ndjson_segment_compressed", path=str(final), bytes=final.stat().st_size)


def _write_gzip(source_path: Path, target: Path) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, _FILE_MODE)
    with os.fdopen(fd, "wb") as raw, source_path.open("rb") as source:
        with gzip.GzipFile(filename=source_path.name, mode="wb", fileobj=raw) as compressed:
            shutil.copyfileobj(source, compressed, _COPY_CHUNK_BYTES)
        raw.flush()
        os.fsync(raw.fileno())


# --- the sink ------------------------------------------------------------------------------


class NdjsonSink(Sink):
    """Appends batches to the live segment of `folder`; see the module docstring.

    `clock` returns epoch seconds; it names segments and drives rotation and retention.
    """

    def __init__(
        self,
        folder: Path | str,
        *,
        name: str = "ndjson",
        fsync: FsyncPolicy = "batch",
        fsync_interval_ms: int = DEFAULT_FSYNC_INTERVAL_MS,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        retention_days: float | None = None,
        retention_bytes: int | None = None,
        write_timeout_s: float = DEFAULT_WRITE_TIMEOUT_S,
        close_timeout_s: float = DEFAULT_CLOSE_TIMEOUT_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if fsync not in _FSYNC_POLICIES:
            msg = f"fsync policy must be one of {', '.join(_FSYNC_POLICIES)}, not {fsync!r}"
            raise ValueError(msg)
        self.folder = Path(folder)
        self.name = name
        self.fsync = fsync
        self.fsync_interval_ms = fsync_interval_ms
        self.max_file_bytes = max_file_bytes
        self.retention_days = retention_days
        self.retention_bytes = retention_bytes
        self.write_timeout_s = write_timeout_s
        self.close_timeout_s = close_timeout_s
        self.torn_lines_recovered = 0
        self._clock = clock

        # Guards the live file (start, write, rotate, fsync, close); compression and
        # retention take `_maintenance_lock` and touch only finished segments.
        self._lock = threading.Lock()
        self._maintenance_lock = threading.Lock()
        self._started = False
        self._closed = False
        self._lock_fd: int | None = None
        self._live: _Segment | None = None
        self._fd: int | None = None
        self._last_key = (0, 0)
        self._dirty = False

        self._flush_task: asyncio.Task[None] | None = None
        self._maintenance_task: asyncio.Task[None] | None = None
        self._maintenance_wanted = False

    @property
    def live_path(self) -> Path | None:
        """The segment being appended to, if one is open."""
        return self._live.path if self._live else None

    async def start(self) -> None:
        """Recover the folder now rather than at the first write (see the module docstring)."""
        await bounded(self.name, asyncio.to_thread(self._start_sync), self.write_timeout_s)
        self._request_maintenance()

    async def write(self, batch: Sequence[JobEvent]) -> None:
        """Append the batch as complete lines, durably as the fsync policy says."""
        if not batch:
            return
        request = _WriteRequest(batch)
        work = asyncio.to_thread(self._write_sync, request)
        try:
            maintenance_due = await bounded(self.name, work, self.write_timeout_s)
        except BaseException:
            request.abandoned = True  # its thread may still be waiting for the file
            raise

        if maintenance_due:
            self._request_maintenance()
        if self.fsync == "interval":
            self._schedule_flush()

    async def rotate(self) -> None:
        """Finish the live segment and compress it; the next write starts a new one."""
        work = asyncio.to_thread(self._rotate_sync)
        await bounded(self.name, work, self.write_timeout_s)
        await self.maintain()

    async def maintain(self) -> None:
        """Compress finished segments and apply retention now, and wait until done."""
        task = self._request_maintenance()
        await asyncio.shield(task)

    async def close(self) -> None:
        """Wait for compression, fsync the live segment (unless "never") and release it."""
        if self._flush_task is not None:
            self._flush_task.cancel()
            await asyncio.wait({self._flush_task})
        await self._finish_maintenance()
        work = asyncio.to_thread(self._close_sync)
        await bounded(self.name, work, self.close_timeout_s)

    # --- background work, on the event loop ---

    def _request_maintenance(self) -> asyncio.Task[None]:
        self._maintenance_wanted = True
        if self._maintenance_task is None or self._maintenance_task.done():
            self._maintenance_task = asyncio.create_task(self._maintenance_loop())
        return self._maintenance_task

    async def _maintenance_loop(self) -> None:
        while self._maintenance_wanted:
            self._maintenance_wanted = False
            try:
                await asyncio.to_thread(self._maintain_sync)
            except (OSError, SinkError) as exc:
                log.warning(
                    "ndjson_maintenance_failed",
                    folder=str(self.folder),
                    error=str(exc),
                    next="finished segments stay as they are until the next rotation",
                )

    async def _finish_maintenance(self) -> None:
        task = self._maintenance_task
        if task is None or task.done():
            return
        try:
            await asyncio.wait_for(task, self.close_timeout_s)
        except TimeoutError:
            log.warning(
                "ndjson_maintenance_unfinished",
                folder=str(self.folder),
                next="its thread finishes on its own; the next start compresses the rest",
            )

    def _schedule_flush(self) -> None:
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.fsync_interval_ms / 1000)
        try:
            await asyncio.to_thread(self._fsync_sync)
        except OSError as exc:
            log.error(
                "ndjson_fsync_failed",
                folder=str(self.folder),
                error=str(exc),
                next="the events stay in the page cache; the fsync is retried after the next write",
            )

    # --- blocking work, in threads ---

    def _start_sync(self) -> None:
        with self._lock:
            self._ensure_started()

    def _write_sync(self, request: _WriteRequest) -> bool:
        """Append one batch; return whether maintenance is due (start, new segment)."""
        with self._lock:
            if request.abandoned:
                return False
            if self._closed:
                msg = f"sink {self.name} on {self.folder} is closed"
                raise SinkUnavailable(msg)
            data = _encode(request.batch)
            try:
                started = self._ensure_started()
                new_segment = self._rotate_if_due(len(data))
                self._append(data)
            except OSError as exc:
                raise self._unavailable("write", exc) from exc
            return started or new_segment

    def _rotate_sync(self) -> None:
        with self._lock:
            try:
                self._ensure_started()
                self._finish_live()
            except OSError as exc:
                raise self._unavailable("rotate", exc) from exc

    def _fsync_sync(self) -> None:
        with self._lock:
            if self._fd is not None and self._dirty:
                os.fsync(self._fd)
                self._dirty = False

    def _close_sync(self) -> None:
        with self._lock:
            self._closed = True
            try:
                self._finish_live()
            finally:
                if self._lock_fd is not None:
                    os.close(self._lock_fd)
                    self._lock_fd = None

    def _maintain_sync(self) -> None:
        with self._maintenance_lock:
            with self._lock:
                if self._closed:
                    return
                self._ensure_started()
                finished = [
                    segment
                    for segment in _scan(self.folder, include_drained=False)
                    if not segment.compressed and segment.path != self.live_path
                ]
            for segment in finished:
                _compress(segment.path)
            self._apply_retention()

    # --- start-up (called with `_lock` held) ---

    def _ensure_started(self) -> bool:
        if self._started:
            return False
        try:
            os.makedirs(self.folder, mode=_DIR_MODE, exist_ok=True)
            self._take_folder_lock()
            self._remove_leftovers()
            segments = _scan(self.folder, include_drained=True)
            self._recover_torn_tails(segments)
            self._resume_live(segments)
        except OSError as exc:
            raise self._unavailable("start", exc) from exc
        self._started = True
        return True

    def _take_folder_lock(self) -> None:
        if self._lock_fd is not None:  # held since an earlier start that failed later on
            return
        path = self.folder / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, _FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            msg = f"sink {self.name}: {self.folder} is written by another sink (holds {path})"
            raise SinkUnavailable(msg) from exc
        self._lock_fd = fd

    def _remove_leftovers(self) -> None:
        names = set(os.listdir(self.folder))
        for name in sorted(names):
            partial_gz = name.endswith(".gz.tmp")
            compressed_already = name.endswith(".ndjson") and f"{name}.gz" in names
            if partial_gz or compressed_already:
                (self.folder / name).unlink()
                log.info("ndjson_leftover_removed", path=str(self.folder / name))

    def _recover_torn_tails(self, segments: list[_Segment]) -> None:
        for segment in segments:
            if not segment.compressed and not segment.drained:
                self.torn_lines_recovered += _cut_torn_tail(segment.path)

    def _resume_live(self, segments: list[_Segment]) -> None:
        if not segments:
            return
        newest = segments[-1]
        self._last_key = newest.key
        if newest.compressed:
            return
        same_day = _utc_day(newest.start_s) == _utc_day(self._clock())
        if same_day and os.stat(newest.path).st_size < self.max_file_bytes:
            self._open_live(newest)

    # --- the live segment (called with `_lock` held) ---

    def _open_live(self, segment: _Segment) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        self._fd = os.open(segment.path, flags, _FILE_MODE)
        self._live = segment
        self._last_key = max(self._last_key, segment.key)

    def _new_live(self) -> None:
        start_s = max(int(self._clock()), self._last_key[0])
        seq = self._last_key[1] + 1
        self._open_live(_Segment(self.folder / _segment_name(start_s, seq), start_s, seq))
        if self.fsync != "never":
            fsync_dir(self.folder)

    def _rotate_if_due(self, incoming_bytes: int) -> bool:
        """Start a new live segment if needed; return whether one was started."""
        if self._live is None or self._fd is None:
            self._new_live()
            return True

        size = os.fstat(self._fd).st_size
        new_day = _utc_day(self._clock()) > _utc_day(self._live.start_s)
        too_big = size > 0 and size + incoming_bytes > self.max_file_bytes
        if not (new_day or too_big):
            return False

        self._finish_live()
        self._new_live()
        return True

    def _append(self, data: bytes) -> None:
        assert self._fd is not None
        offset = os.fstat(self._fd).st_size
        try:
            _write_all(self._fd, data)
            if self.fsync == "batch":
                os.fsync(self._fd)
        except OSError:
            self._cut_back(offset)
            raise
        self._dirty = self.fsync == "interval"

    def _cut_back(self, offset: int) -> None:
        """Truncate a partly written batch away; if that fails, finish the segment."""
        assert self._fd is not None
        try:
            if os.fstat(self._fd).st_size > offset:
                os.ftruncate(self._fd, offset)
        except OSError as exc:
            log.error(
                "ndjson_cut_back_failed",
                path=str(self.live_path),
                offset=offset,
                error=str(exc),
                next="the segment is finished with a torn line; the next write starts anew",
            )
            os.close(self._fd)
            self._fd, self._live = None, None

    def _finish_live(self) -> None:
        if self._fd is None:
            return
        fd, self._fd, self._live = self._fd, None, None
        try:
            if self.fsync != "never":
                os.fsync(fd)
        finally:
            os.close(fd)
            self._dirty = False

    def _unavailable(self, action: str, exc: OSError) -> SinkUnavailable:
        code = errno.errorcode.get(exc.errno or 0, "unknown errno")
        msg = f"sink {self.name} cannot {action} in {self.folder}: {code} ({exc.strerror or exc})"
        return SinkUnavailable(msg)

    # --- retention (called with `_maintenance_lock` held) ---

    def _apply_retention(self) -> None:
        segments = _scan(self.folder, include_drained=True)
        expired = self._expired_by_age(segments)
        for segment in expired:
            self._delete(segment, reason="age")

        rotated = [s for s in segments if s.compressed and s not in expired]
        for segment in self._over_size(rotated):
            self._delete(segment, reason="size")

    def _expired_by_age(self, segments: list[_Segment]) -> list[_Segment]:
        if self.retention_days is None:
            return []
        cutoff_s = self._clock() - self.retention_days * _SECONDS_PER_DAY
        pairs = itertools.pairwise(segments)
        return [old for old, after in pairs if old.compressed and after.start_s <= cutoff_s]

    def _over_size(self, rotated: list[_Segment]) -> list[_Segment]:
        if self.retention_bytes is None:
            return []
        sizes = [(segment, _size_or_zero(segment.path)) for segment in rotated]
        total = sum(size for _, size in sizes)
        doomed = []
        for segment, size in sizes:
            if total <= self.retention_bytes:
                break
            doomed.append(segment)
            total -= size
        return doomed

    def _delete(self, segment: _Segment, *, reason: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            segment.path.unlink()
            log.info(
                "ndjson_segment_deleted",
                path=str(segment.path),
                reason=reason,
                drained=segment.drained,
            )


def _size_or_zero(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
