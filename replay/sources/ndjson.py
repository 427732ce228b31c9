"""Reads a local NDJSON ledger folder (live and rotated gzip segments, and `drained/`).

The segments are those `sinks.ndjson.iter_segments` lists, in write order. Reading is the
cost of a rebuild, so a block of lines is parsed by one call of `parse_json` (orjson's
`loads`, twice as fast as the standard library's) on a JSON array made of them, and records
become events without a `JobEvent` in between. A block that does not parse that way (a
damaged line) is parsed line by line with the standard library, so that each bad line is
reported with its file and line number, in the same words whether orjson is installed or
not, and the others are kept. orjson reads an integer beyond 64 bits as a float where the
standard library keeps it whole; the ledger's integers come from Redis and clocks and never
reach that size.

A lookup for one job never parses a line that does not contain the job id: the block is
searched for the id's bytes (ids are plain ASCII, written without escapes) and only the
lines around each hit are parsed. Damaged lines elsewhere then go unreported.

Gzip segments are inflated here with zlib rather than `gzip.open`, so that a corrupt or
truncated stream keeps every line inflated before the damage.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

from ledger.errors import LedgerError
from ledger.event import JobEvent
from replay.errors import SourceUnavailable
from replay.events import Event, from_job_event, from_record, from_records
from replay.sources.base import Problem, Progress, ReadOptions, Source, SourceReport
from sinks.ndjson import iter_segments

# Lines are parsed in blocks of at most this much text: small enough that a block's records
# stay in the CPU cache while they become events, and that its buffers are reused rather
# than mapped afresh (with 4 MiB blocks, a million-event read spent 2.3 s in the kernel
# faulting pages in; with these, 0.9 s).
BLOCK_BYTES: Final = 256 * 1024
# A gzip segment is inflated a compressed chunk at a time (about 4 MiB of text). A chunk
# whose data is corrupt gives nothing: zlib may notice the damage only after inflating some
# of it into garbage.
GZIP_READ_BYTES: Final = 256 * 1024
_GZIP_WBITS: Final = 16 + zlib.MAX_WBITS

parse_json: Callable[[bytes], Any]
try:
    from orjson import loads as parse_json
except ImportError:  # a declared dependency; without it a rebuild is slower, nothing else
    parse_json = json.loads


class Damaged(Exception):
    """Raised when a segment cannot be read past some point (bad gzip data, I/O error)."""


class NdjsonSource(Source):
    """A folder of NDJSON segments written by `sinks.ndjson.NdjsonSink`."""

    kind = "ndjson"

    def __init__(self, folder: Path) -> None:
        super().__init__(str(folder))
        self.folder = folder

    def read(self, options: ReadOptions, progress: Progress) -> Iterator[list[Event]]:
        if not self.folder.is_dir():
            msg = f"ledger folder {self.folder} does not exist or is not a folder"
            raise SourceUnavailable(msg)

        segments = iter_segments(self.folder, include_drained=True)
        progress.start(f"reading {self.folder}", sum(_size(path) for path in segments))
        needle = options.job_id.encode() if options.job_id else None
        for path in segments:
            yield from SegmentReader(path, self.report, needle).events(progress)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


class SegmentReader:
    """Reads one segment, counting lines so that a problem names its line."""

    def __init__(self, path: Path, report: SourceReport, needle: bytes | None) -> None:
        self.path = path
        self.report = report
        self.needle = needle
        self.lines_done = 0

    def events(self, progress: Progress) -> Iterator[list[Event]]:
        """The segment's events, a block of lines at a time."""
        rest = b""
        try:
            for block in _blocks(self.path, progress):
                data = rest + block if rest else block
                cut = data.rfind(b"\n") + 1
                rest = data[cut:]
                if cut:
                    yield self._complete_lines(data[:cut] if cut < len(data) else data)
        except Damaged as exc:
            reason = f"unreadable after {self.lines_done} lines: {exc}"
            self._problem("damaged_file", self.lines_done + 1, reason)
            return

        if rest:
            yield self._last_line(rest)

    def _complete_lines(self, body: bytes) -> list[Event]:
        lines = body.count(b"\n")  # a scan of the whole block: counted once
        events = self._find(body) if self.needle else self._parse_block(body, lines)
        self.lines_done += lines
        return events

    def _parse_block(self, body: bytes, lines: int) -> list[Event]:
        """Every line of a block of complete lines; fast unless one of them is damaged."""
        try:
            records = parse_json(b"[" + body[:-1].replace(b"\n", b",") + b"]")
        except ValueError:  # orjson's JSONDecodeError is one too
            records = None

        if isinstance(records, list) and len(records) == lines:
            events = from_records(records)
            if events is not None:
                return events
        return self._parse_lines(body)

    def _parse_lines(self, body: bytes) -> list[Event]:
        events = []
        for offset, raw in enumerate(body.splitlines(keepends=True), start=1):
            event = self._parse_line(raw, self.lines_done + offset)
            if event is not None:
                events.append(event)
        return events

    def _find(self, body: bytes) -> list[Event]:
        """The lines of a block that contain the needle (the job id), parsed one by one."""
        assert self.needle is not None
        events = []
        hit = body.find(self.needle)
        while hit >= 0:
            start = body.rfind(b"\n", 0, hit) + 1
            end = body.find(b"\n", hit) + 1
            line_no = self.lines_done + body.count(b"\n", 0, start) + 1
            event = self._parse_line(body[start:end], line_no)
            if event is not None:
                events.append(event)
            hit = body.find(self.needle, end)
        return events

    def _last_line(self, raw: bytes) -> list[Event]:
        """What follows the last newline: a line whose writer may not have finished it."""
        if self.needle and self.needle not in raw:
            return []
        event = self._parse_line(raw, self.lines_done + 1)
        return [] if event is None else [event]

    def _parse_line(self, raw: bytes, line_no: int) -> Event | None:
        try:
            record: Any = json.loads(raw)
        except ValueError as exc:
            self._bad_line(raw, line_no, str(exc))
            return None
        if not isinstance(record, dict):
            self._bad_line(raw, line_no, "not a JSON object")
            return None

        event = from_record(record)
        if event is not None:
            return event
        try:
            return from_job_event(JobEvent.from_record(record))
        except (LedgerError, TypeError, ValueError) as exc:
            self._problem("corrupt_line", line_no, f"not an event: {exc}")
            return None

    def _bad_line(self, raw: bytes, line_no: int, detail: str) -> None:
        if not raw.endswith(b"\n"):
            self._problem("torn_line", line_no, "torn line (no trailing newline)")
        else:
            self._problem("corrupt_line", line_no, f"corrupt line: {detail}")

    def _problem(self, kind: str, line_no: int, reason: str) -> None:
        self.report.add(Problem(kind, f"{self.path}:{line_no}", reason))


def _blocks(path: Path, progress: Progress) -> Iterator[bytes]:
    """The segment's bytes in blocks, inflated if it is gzip; raises `Damaged`."""
    try:
        with path.open("rb") as file:
            if path.name.endswith(".gz"):
                yield from _inflate(file, progress)
            else:
                while block := file.read(BLOCK_BYTES):
                    progress.advance(len(block))
                    yield block
    except OSError as exc:
        raise Damaged(str(exc)) from exc


def _inflate(file: Any, progress: Progress) -> Iterator[bytes]:
    """Inflate every gzip member in turn; a cut or corrupt stream raises `Damaged`."""
    inflater = zlib.decompressobj(_GZIP_WBITS)
    fed = False
    while chunk := file.read(GZIP_READ_BYTES):
        progress.advance(len(chunk))
        while chunk:
            fed = True
            try:
                block = inflater.decompress(chunk)
            except zlib.error as exc:
                msg = f"corrupt gzip data ({exc})"
                raise Damaged(msg) from exc
            for start in range(0, len(block), BLOCK_BYTES):
                yield block[start : start + BLOCK_BYTES]
            chunk = b""
            if inflater.eof:  # one member ended; another may follow
                chunk = inflater.unused_data
                inflater = zlib.decompressobj(_GZIP_WBITS)
                fed = False

    if fed and not inflater.eof:
        msg = "the gzip stream is cut short"
        raise Damaged(msg)
