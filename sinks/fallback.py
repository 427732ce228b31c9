"""A primary sink behind a circuit breaker, with the local NDJSON ledger as its fallback.

While the breaker is open, or when the primary raises `SinkUnavailable`, a batch goes to
the fallback unchanged (same records, same event ids). When the fallback fails too,
`SinkUnavailable` propagates and the shipper keeps the events in the outbox.

`drain` re-ships the fallback's rotated segments to the primary once it is healthy. A
segment is moved to `<folder>/drained/` only after every one of its events was written to
the primary, so a crash or a primary failure in the middle of a segment re-ships that whole
segment at the next drain: the primary then holds some events twice, and consumers dedupe
by event id. Lines that are not events are reported and skipped. Run one drain per folder
at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from structlog.typing import FilteringBoundLogger

from ledger.event import JobEvent
from sinks.base import Sink, SinkUnavailable, bounded
from sinks.breaker import CircuitBreaker
from sinks.ndjson import (
    DRAINED_DIR,
    NdjsonSink,
    ReadProblem,
    fsync_dir,
    iter_segments,
    read_segment,
)

log: FilteringBoundLogger = structlog.get_logger(__name__)

DEFAULT_DRAIN_BATCH_SIZE = 500


class FallbackSink(Sink):
    """Writes to `primary` while it works, and to `fallback` while it does not.

    Without a `breaker`, one is made that opens after five consecutive failures and lets a
    probe through every 30 s.
    """

    def __init__(
        self, primary: Sink, fallback: NdjsonSink, *, breaker: CircuitBreaker | None = None
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self.breaker = breaker or CircuitBreaker(
            primary.name, probe_timeout_s=2 * primary.write_timeout_s
        )
        self.name = f"{primary.name}+{fallback.name}"
        self.write_timeout_s = primary.write_timeout_s + fallback.write_timeout_s
        self.close_timeout_s = primary.close_timeout_s + fallback.close_timeout_s

        self.fallback_active = False
        self.events_to_primary = 0
        self.events_to_fallback = 0

    async def write(self, batch: Sequence[JobEvent]) -> None:
        """Write to the primary if the breaker allows and it succeeds, else to the fallback."""
        if not batch:
            return
        if not self.breaker.allow():
            await self._write_fallback(batch, reason=f"breaker {self.breaker.state}")
            return

        failure = await self._write_primary(batch)
        if failure is not None:
            await self._write_fallback(batch, reason=failure)

    async def close(self) -> None:
        """Close the primary, then the fallback, even if the primary's close failed."""
        try:
            await bounded(self.primary.name, self.primary.close(), self.primary.close_timeout_s)
        finally:
            await self.fallback.close()

    async def _write_primary(self, batch: Sequence[JobEvent]) -> str | None:
        """Write to the primary; return why it failed, or None once it succeeded."""
        write = self.primary.write(batch)
        try:
            await bounded(self.primary.name, write, self.primary.write_timeout_s)
        except SinkUnavailable as exc:
            self.breaker.record_failure()
            return str(exc)
        except Exception:
            self.breaker.record_failure()
            raise

        self.breaker.record_success()
        self.events_to_primary += len(batch)
        if self.fallback_active:
            self.fallback_active = False
            log.info(
                "sink_recovered_writing_to_primary",
                sink=self.primary.name,
                events_to_fallback=self.events_to_fallback,
            )
        return None

    async def _write_fallback(self, batch: Sequence[JobEvent], *, reason: str) -> None:
        if not self.fallback_active:
            self.fallback_active = True
            log.warning(
                "sink_unavailable_writing_to_fallback",
                sink=self.primary.name,
                fallback=self.fallback.name,
                batch_size=len(batch),
                reason=reason,
            )

        try:
            await self.fallback.write(batch)
        except SinkUnavailable as exc:
            log.error(
                "fallback_unavailable_events_stay_in_outbox",
                sink=self.primary.name,
                fallback=self.fallback.name,
                batch_size=len(batch),
                error=str(exc),
            )
            msg = f"sink {self.primary.name} and its fallback {self.fallback.name} failed: {exc}"
            raise SinkUnavailable(msg) from exc
        self.events_to_fallback += len(batch)


# --- drain ---------------------------------------------------------------------------------


@dataclass(slots=True)
class DrainReport:
    """What one drain did: segments moved to `drained/`, events written, lines skipped.

    `errors` says why the drain did not get through every segment; `events` counts every
    event written, including those of a segment that was interrupted and will be re-shipped.
    """

    segments: int = 0
    events: int = 0
    problems: list[ReadProblem] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.errors


@dataclass(slots=True)
class _Chunk:
    events: list[JobEvent]
    problems: list[ReadProblem]


async def drain(
    folder: Path | str,
    primary: Sink,
    *,
    batch_size: int = DEFAULT_DRAIN_BATCH_SIZE,
    live: NdjsonSink | None = None,
) -> DrainReport:
    """Re-ship the rotated segments of `folder` to `primary`, oldest first.

    With `live` (the sink writing `folder`), its live segment is rotated first so that its
    events are drained too. Stops at the first primary failure; see the module docstring.
    """
    folder = Path(folder)
    report = DrainReport()
    if live is not None:
        await _rotate_live(live, report)

    for segment in await asyncio.to_thread(_rotated_segments, folder):
        try:
            await _ship_segment(segment, primary, batch_size, report)
            await asyncio.to_thread(_mark_drained, segment)
        except (SinkUnavailable, OSError) as exc:
            report.errors.append(f"{segment.name}: {exc}")
            log.warning(
                "drain_interrupted",
                segment=str(segment),
                error=str(exc),
                next="the segment stays and the next drain re-ships it whole",
            )
            break
        report.segments += 1

    log.info("drain_finished", folder=str(folder), segments=report.segments, events=report.events)
    return report


async def _rotate_live(live: NdjsonSink, report: DrainReport) -> None:
    try:
        await live.rotate()
    except SinkUnavailable as exc:
        report.errors.append(str(exc))
        log.warning(
            "drain_live_not_rotated",
            folder=str(live.folder),
            error=str(exc),
            next="draining the segments rotated already; the live one waits for the next drain",
        )


async def _ship_segment(segment: Path, primary: Sink, batch_size: int, report: DrainReport) -> None:
    with contextlib.closing(read_segment(segment)) as results:
        chunks = _chunks(results, batch_size)
        while (chunk := await asyncio.to_thread(_next_chunk, chunks)) is not None:
            for problem in chunk.problems:
                log.warning("drain_line_skipped", problem=str(problem), next="drain goes on")
            report.problems.extend(chunk.problems)

            if chunk.events:
                write = primary.write(chunk.events)
                await bounded(primary.name, write, primary.write_timeout_s)
                report.events += len(chunk.events)


def _rotated_segments(folder: Path) -> list[Path]:
    return [path for path in iter_segments(folder) if path.name.endswith(".gz")]


def _chunks(results: Iterator[JobEvent | ReadProblem], size: int) -> Iterator[_Chunk]:
    chunk = _Chunk([], [])
    for result in results:
        if isinstance(result, ReadProblem):
            chunk.problems.append(result)
            continue
        chunk.events.append(result)
        if len(chunk.events) >= size:
            yield chunk
            chunk = _Chunk([], [])
    if chunk.events or chunk.problems:
        yield chunk


def _next_chunk(chunks: Iterator[_Chunk]) -> _Chunk | None:
    return next(chunks, None)


def _mark_drained(segment: Path) -> None:
    target = segment.parent / DRAINED_DIR
    target.mkdir(mode=0o700, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):  # retention deleted it meanwhile
        os.replace(segment, target / segment.name)
        fsync_dir(target)
        fsync_dir(segment.parent)
