"""Output: rich tables on a terminal, plain aligned text when piped, and a progress bar on
stderr while sources are read (only when stderr is a terminal)."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TextIO

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table as RichTable

from replay.sources import NoProgress
from replay.sources import Progress as ProgressSink

PLAIN_GAP = "  "


@dataclass(slots=True)
class Table:
    """Rows of text under column names, with an optional title."""

    title: str | None
    columns: Sequence[str]
    rows: list[list[str]] = field(default_factory=list)


class Output:
    """Writes headings, lines and tables, as rich on a terminal or as plain text."""

    def __init__(self, stream: TextIO, *, rich: bool | None = None) -> None:
        self.stream = stream
        self.rich = stream.isatty() if rich is None else rich
        self.console = Console(file=stream, highlight=False, soft_wrap=True) if self.rich else None

    def heading(self, text: str) -> None:
        if self.console is not None:
            self.console.print(f"\n[bold]{escape(text)}[/bold]")
        else:
            self.stream.write(f"\n{text}\n{'=' * len(text)}\n")

    def line(self, text: str = "") -> None:
        if self.console is not None:
            self.console.print(escape(text))
        else:
            self.stream.write(text + "\n")

    def table(self, table: Table) -> None:
        if self.console is not None:
            self.console.print(_rich_table(table))
        else:
            self.stream.write(plain_table(table))

    def tables(self, tables: Sequence[Table]) -> None:
        for table in tables:
            self.table(table)


def _rich_table(table: Table) -> RichTable:
    out = RichTable(title=table.title, box=box.SIMPLE_HEAD, title_justify="left")
    for column in table.columns:
        out.add_column(column, overflow="fold")
    for row in table.rows:
        out.add_row(*(escape(cell) for cell in row))
    return out


def plain_table(table: Table) -> str:
    """Columns padded to their widest cell; the last column is never padded."""
    rows = [list(table.columns), *table.rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(table.columns))]
    lines = ["", table.title] if table.title else [""]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=False)]
        lines.append(PLAIN_GAP.join([*cells, row[-1]]).rstrip())
    if not table.rows:
        lines.append("(none)")
    return "\n".join(lines) + "\n"


class BarProgress:
    """One rich progress task per source, shown on stderr."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task: TaskID | None = None

    def start(self, description: str, total: int | None) -> None:
        self._task = self._progress.add_task(description, total=total)

    def advance(self, amount: int) -> None:
        if self._task is not None:
            self._progress.advance(self._task, amount)


@contextmanager
def progress_bars(stream: TextIO | None = None) -> Iterator[type[NoProgress] | _BarFactory]:
    """A factory of per-source progress sinks: bars when stderr is a terminal."""
    stream = stream or sys.stderr
    if not stream.isatty():
        yield NoProgress
        return
    columns = (
        TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
    )  # fmt: skip
    with Progress(*columns, console=Console(file=stream), transient=True) as progress:
        yield _BarFactory(progress)


class _BarFactory:
    def __init__(self, progress: Progress) -> None:
        self._progress = progress

    def __call__(self) -> ProgressSink:
        return BarProgress(self._progress)
