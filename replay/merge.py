"""Reads every source and merges their events into one ledger: deduplicated by event id,
ordered by queue and stream id, each event remembering the sources it came from.

Redis sources are read first. An event is deleted from its stream only after a sink holds
it, so reading the streams before the sinks can miss nothing that was shipped meanwhile.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import operator
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from replay.events import Event
from replay.sources import Problem, Progress, ReadOptions, Source, SourceReport

EventKey = tuple[str, str]
Labels = frozenset[str]

event_key: Callable[[Event], EventKey] = operator.itemgetter(0, 1)
"""Queue and stream id: the event id without building its string."""

_stream_id: Callable[[Event], str] = operator.itemgetter(1)
_SEPARATOR = "\x00"  # below every character a queue name may hold, so order is kept


def order_key(event: Event) -> tuple[str, int, int]:
    ms, _, n = event[1].partition("-")
    return (event[0], int(ms), int(n or 0))


@dataclass(slots=True)
class Ledger:
    """The merged history: events in (queue, stream id) order, and how it was read."""

    events: list[Event] = field(default_factory=list)
    labels: list[Labels] = field(default_factory=list)  # each event's sources, in step
    duplicates: int = 0
    reports: list[SourceReport] = field(default_factory=list)
    from_start: bool = True  # read from the start of every source (no --since pushed down)
    _origins: dict[EventKey, Labels] | None = None

    def sources_of(self, event: Event) -> Labels:
        if self._origins is None:
            self._origins = dict(zip(map(event_key, self.events), self.labels, strict=True))
        return self._origins.get(event_key(event), frozenset())

    @property
    def problem_count(self) -> int:
        return sum(report.problem_count for report in self.reports)


class Merger:
    """Collects every source's events, then orders them and drops the duplicates.

    Ordering first makes duplicates neighbours, so deduplication is one comparison of each
    key with the next; both steps run in C-level loops (`sorted` with a list's item getter,
    `map` over `operator.eq`), which is what keeps a million events within seconds. Sort
    keys are made batch by batch as the events arrive, while a batch is still in the CPU's
    cache: keying a million events in one pass at the end takes twice as long.
    """

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.labels: list[Labels] = []
        self.reports: list[SourceReport] = []
        self.keys: list[str] | None = []  # None once a stream id is not well formed

    def add_source(self, report: SourceReport, batches: Iterable[list[Event]]) -> None:
        label = frozenset((report.name,))
        for batch in batches:
            report.events += len(batch)
            self.events += batch
            self.labels += [label] * len(batch)
            self._add_text_keys(batch)
        self.reports.append(report)

    def _add_text_keys(self, batch: list[Event]) -> None:
        if self.keys is None or not batch:
            return
        keys = text_keys(batch)
        if keys is None:
            self.keys = None
        else:
            self.keys += keys

    def finish(self) -> Ledger:
        keys = self._keys()
        order = sorted(range(len(keys)), key=keys.__getitem__)
        events = list(map(self.events.__getitem__, order))
        labels = list(map(self.labels.__getitem__, order))
        ordered_keys = list(map(keys.__getitem__, order))
        repeats = list(
            itertools.compress(
                range(1, len(order)), map(operator.eq, ordered_keys[1:], ordered_keys)
            )
        )
        if repeats:
            events, labels = _without_repeats(events, labels, repeats)
        return Ledger(events, labels, len(repeats), self.reports)

    def _keys(self) -> list[Any]:
        """One sort key per event: text keys in C-level loops when every stream id is
        well formed (see `text_keys`), else (queue, ms, n) tuples."""
        if self.keys is not None:
            return self.keys
        self._drop_unorderable()
        return list(map(order_key, self.events))

    def _drop_unorderable(self) -> None:
        kept_events, kept_labels = [], []
        for event, label in zip(self.events, self.labels, strict=True):
            try:
                order_key(event)
            except ValueError:
                problem = Problem("bad_stream_id", event.event_id, "stream id is not <ms>-<n>")
                for report in self.reports:
                    if report.name in label:
                        report.add(problem)
                continue
            kept_events.append(event)
            kept_labels.append(label)
        self.events, self.labels = kept_events, kept_labels


def text_keys(events: list[Event]) -> list[str] | None:
    """Keys whose text order is (queue, ms, n) order, or None if a stream id is not
    `<13 digits>-<1 to 9 digits>`.

    A key is `queue NUL stream id`. An n of L > 1 digits gets a mark in front, the
    character L - 1 places above "9", so that n compares as a number: `7` < `:12` <
    `;100`. Ids with a one-digit n, nearly all of them, are keyed without a Python call per
    event; the others are fixed one by one.
    """
    ids = list(map(_stream_id, events))
    lengths = list(map(len, ids))
    joined = "".join(ids)
    well_formed = (
        joined.count("-") == len(ids)
        and joined.replace("-", "").isdigit()
        and min(lengths, default=_SHORT_ID) >= _SHORT_ID
        and max(lengths, default=_SHORT_ID) <= _SHORT_ID + 8
        and set(map(_dash_of, ids)) <= {"-"}
    )
    if not well_formed:
        return None

    keys = list(map(_SEPARATOR.join, zip(map(_queue, events), ids, strict=True)))
    longer = itertools.compress(
        range(len(ids)), map(operator.ne, lengths, itertools.repeat(_SHORT_ID))
    )
    for i in longer:
        ms, _, n = ids[i].partition("-")
        keys[i] = f"{events[i][0]}{_SEPARATOR}{ms}-{chr(_NINE + len(n) - 1)}{n}"
    return keys


_MS_DIGITS = 13
_SHORT_ID = _MS_DIGITS + 2  # 13 digits, "-", one digit
_NINE = ord("9")
_queue: Callable[[Event], str] = operator.itemgetter(0)
_dash_of: Callable[[str], str] = operator.itemgetter(_MS_DIGITS)


def _without_repeats(
    events: list[Event], labels: list[Labels], repeats: list[int]
) -> tuple[list[Event], list[Labels]]:
    """Drop each event equal to the one before it, adding its sources to the one kept."""
    merged = list(labels)
    repeated = set(repeats)
    kept = bytearray(b"\x01") * len(events)
    anchor = 0
    for i in repeats:  # ascending: a run of repeats follows the event they repeat
        if i - 1 not in repeated:
            anchor = i - 1
        merged[anchor] = merged[anchor] | labels[i]
        kept[i] = 0
    return list(itertools.compress(events, kept)), list(itertools.compress(merged, kept))


def _filtered(batches: Iterable[list[Event]], options: ReadOptions) -> Iterator[list[Event]]:
    job_id, queue = options.job_id, options.queue
    for batch in batches:
        kept = batch if queue is None else [event for event in batch if event.queue == queue]
        yield kept if job_id is None else [event for event in kept if event.mentions(job_id)]


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while millions of events are built, nor right after.

    Events hold no reference cycles, but each collection walks every container allocated
    so far, and a read allocates millions: with collections on, reading takes about half
    again as long, and more the larger the ledger. Left in the youngest generation, what
    was built would be walked by the first collection after the pause (most of a second
    for a million events), so it is moved to the oldest one, which a full collection walks
    only once enough other objects have joined it. That move is skipped while a caller
    keeps objects frozen (`gc.freeze`): it would thaw them.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            if gc.get_freeze_count() == 0:
                gc.freeze()  # every tracked object to the permanent generation,
                gc.unfreeze()  # then all of them to the oldest, without a collection
            gc.enable()


def load(
    sources: list[Source],
    options: ReadOptions,
    progress: Callable[[], Progress],
) -> Ledger:
    """Read every source (Redis first) and merge them; `SourceUnavailable` propagates."""
    with gc_paused():
        return _load(sources, options, progress)


def _load(
    sources: list[Source],
    options: ReadOptions,
    progress: Callable[[], Progress],
) -> Ledger:
    merger = Merger()
    ordered = sorted(sources, key=lambda source: source.kind != "redis")
    for source in ordered:
        batches = source.read(options, progress())
        if options.job_id is not None or options.queue is not None:
            batches = _filtered(batches, options)
        merger.add_source(source.report, batches)

    ledger = merger.finish()
    ledger.from_start = options.since_ms is None
    return ledger
