"""One self-contained HTML page per report: inline CSS and SVG, no scripts, no external
assets. The timeline has one row per worker; each attempt is a bar from its claim to what
ended it, coloured by that ending, and reaps, worker deaths and dead letters are marked."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Final

from replay.events import Event
from replay.history import JobHistory
from replay.render import Table
from replay.times import format_duration, format_ts

LABEL_WIDTH: Final = 200
PLOT_WIDTH: Final = 900
ROW_HEIGHT: Final = 22
AXIS_HEIGHT: Final = 28
TICKS: Final = 5
MAX_BARS: Final = 3000
QUEUE_ROW: Final = "(queue)"

CSS: Final = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border-bottom: 1px solid #ddd; padding: 2px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td { font-family: ui-monospace, monospace; font-size: 12px; }
svg text { font: 11px ui-monospace, monospace; fill: #333; }
.acked, .deduplicated { fill: #3a9a4a; } .failed, .retried { fill: #d08a1a; }
.reaped { fill: #c8322f; } .returned { fill: #6a7fb0; } .open { fill: #9aa; }
.other { fill: #888; } .mark-reap { stroke: #c8322f; stroke-width: 2; }
.mark-death { stroke: #000; stroke-width: 2; } .mark-dead { fill: #000; }
.mark-enqueue { fill: #3366cc; } .grid { stroke: #e4e4e4; }
.legend span { display: inline-block; margin-right: 1.2em; }
.swatch { display: inline-block; width: 12px; height: 12px; margin-right: 4px; }
"""

LEGEND: Final = (
    ("#3a9a4a", "acked"), ("#d08a1a", "failed"), ("#c8322f", "reaped"),
    ("#6a7fb0", "returned"), ("#9aa", "still open"), ("#000", "dead letter / worker death"),
    ("#3366cc", "enqueued"),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Bar:
    row: str
    start_ms: int
    end_ms: int
    css: str
    title: str


@dataclass(frozen=True, slots=True)
class Mark:
    row: str
    ts_ms: int
    css: str
    title: str


@dataclass(slots=True)
class Timeline:
    bars: list[Bar] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    dropped_bars: int = 0

    def rows(self) -> list[str]:
        workers = {bar.row for bar in self.bars} | {mark.row for mark in self.marks}
        return [QUEUE_ROW, *sorted(workers - {QUEUE_ROW})]

    def span(self) -> tuple[int, int]:
        times = [t for bar in self.bars for t in (bar.start_ms, bar.end_ms)]
        times += [mark.ts_ms for mark in self.marks]
        start, end = (min(times), max(times)) if times else (0, 1)
        return start, max(end, start + 1)


_BAR_CSS: Final = {"acked": "acked", "deduplicated": "acked", "failed": "failed",
                   "retried": "failed", "reaped": "reaped", "returned": "returned",
                   "in flight": "open"}  # fmt: skip


def timeline_of(histories: Iterable[JobHistory], extra: Iterable[Event] = ()) -> Timeline:
    """Bars for every attempt, marks for enqueues, reaps, dead letters and worker deaths."""
    timeline = Timeline()
    for history in histories:
        _add_history(timeline, history)
    for event in extra:
        if event.type == "worker_reaped":
            _mark(timeline, event, str(event.worker), "mark-death", f"worker {event.worker} reaped")
    if len(timeline.bars) > MAX_BARS:
        timeline.dropped_bars = len(timeline.bars) - MAX_BARS
        timeline.bars = sorted(timeline.bars, key=lambda bar: bar.start_ms)[:MAX_BARS]
    return timeline


def _add_history(timeline: Timeline, history: JobHistory) -> None:
    end = history.window_end_ms
    for attempt in history.attempts:
        outcome = attempt.outcome
        title = (
            f"{history.job_id} attempt {attempt.number} on {attempt.worker}: "
            f"{outcome} after {format_duration(attempt.run_ms(end))}"
        )
        bar = Bar(str(attempt.worker), attempt.claimed.ts_ms, attempt.end_ms(end),
                  _BAR_CSS.get(outcome, "other"), title)  # fmt: skip
        timeline.bars.append(bar)
    for row in history.rows:
        event = row.event
        if event.job_id != history.job_id:
            continue
        if event.type in ("enqueued", "scheduled"):
            _mark(timeline, event, QUEUE_ROW, "mark-enqueue", f"{history.job_id} {event.type}")
        elif event.type == "reaped":
            _mark(timeline, event, str(event.worker), "mark-reap", f"{history.job_id} reaped")
        elif event.type == "dead_lettered":
            title = f"{history.job_id} dead-lettered: {event.reason}"
            _mark(timeline, event, QUEUE_ROW, "mark-dead", title)


def _mark(timeline: Timeline, event: Event, row: str, css: str, title: str) -> None:
    timeline.marks.append(Mark(row, event.ts_ms, css, f"{format_ts(event.ts_ms)} {title}"))


# -- SVG -----------------------------------------------------------------------------------


def svg(timeline: Timeline) -> str:
    rows = timeline.rows()
    index = {row: i for i, row in enumerate(rows)}
    start, end = timeline.span()
    height = AXIS_HEIGHT + ROW_HEIGHT * len(rows)
    width = LABEL_WIDTH + PLOT_WIDTH + 10

    def x(ts_ms: int) -> float:
        return LABEL_WIDTH + (ts_ms - start) / (end - start) * PLOT_WIDTH

    def y(row: str) -> int:
        return AXIS_HEIGHT + index[row] * ROW_HEIGHT

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="timeline">']  # fmt: skip
    parts += _axis(start, end, height, x)
    for row in rows:
        parts.append(f'<text x="4" y="{y(row) + 15}">{escape(row[:28])}</text>')
    for bar in timeline.bars:
        left = x(bar.start_ms)
        bar_width = max(2.0, x(bar.end_ms) - left)
        parts.append(
            f'<rect class="{bar.css}" x="{left:.1f}" y="{y(bar.row) + 4}" width="{bar_width:.1f}" '
            f'height="{ROW_HEIGHT - 8}"><title>{escape(bar.title)}</title></rect>'
        )
    parts += [_mark_svg(mark, x(mark.ts_ms), y(mark.row)) for mark in timeline.marks]
    parts.append("</svg>")
    return "\n".join(parts)


def _axis(start: int, end: int, height: int, x: Callable[[int], float]) -> list[str]:
    parts = []
    for i in range(TICKS + 1):
        ts = start + (end - start) * i // TICKS
        left = x(ts)
        anchor = "start" if i == 0 else "end" if i == TICKS else "middle"
        top = AXIS_HEIGHT - 6
        parts.append(
            f'<line class="grid" x1="{left:.1f}" y1="{top}" x2="{left:.1f}" y2="{height}"/>'
        )
        label = format_ts(ts)[11:23]
        parts.append(f'<text x="{left:.1f}" y="12" text-anchor="{anchor}">{label}</text>')
    return parts


def _mark_svg(mark: Mark, left: float, top: int) -> str:
    title = f"<title>{escape(mark.title)}</title>"
    mid = top + ROW_HEIGHT // 2
    if mark.css in ("mark-reap", "mark-death"):
        left_x, right_x = f"{left - 5:.1f}", f"{left + 5:.1f}"
        down = f'<line x1="{left_x}" y1="{mid - 5}" x2="{right_x}" y2="{mid + 5}"/>'
        up = f'<line x1="{left_x}" y1="{mid + 5}" x2="{right_x}" y2="{mid - 5}"/>'
        return f'<g class="{mark.css}">{title}{down}{up}</g>'
    return f'<circle class="{mark.css}" cx="{left:.1f}" cy="{mid}" r="5">{title}</circle>'


# -- the page ------------------------------------------------------------------------------


def table_html(table: Table) -> str:
    head = "".join(f"<th>{escape(column)}</th>" for column in table.columns)
    body = (
        "".join(
            "<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>"
            for row in table.rows
        )
        or f'<tr><td colspan="{len(table.columns)}">none</td></tr>'
    )
    title = f"<h2>{escape(table.title)}</h2>" if table.title else ""
    return f"{title}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def page(title: str, lines: Sequence[str], timeline: Timeline, tables: Sequence[Table]) -> str:
    legend = "".join(
        f'<span><i class="swatch" style="background:{colour}"></i>{escape(name)}</span>'
        for colour, name in LEGEND
    )
    dropped = (
        f"<p>{timeline.dropped_bars} later attempts are left out of the timeline.</p>"
        if timeline.dropped_bars else ""
    )  # fmt: skip
    intro = "".join(f"<p>{escape(line)}</p>" for line in lines)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<h1>{escape(title)}</h1>\n{intro}\n<h2>Timeline</h2>\n{svg(timeline)}\n"
        f'<p class="legend">{legend}</p>{dropped}\n'
        + "\n".join(table_html(table) for table in tables)
        + "\n</body>\n</html>\n"
    )
