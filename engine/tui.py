"""`jobqueue top`: a keyboard-driven dashboard of queues, workers, dead letters and the ledger.

It reads the keys engine/admin.py reads, on a timer, and updates table cells and
sparklines in place rather than rebuilding the screen. Each change it makes (pause,
resume, requeue) is confirmed in a dialog first, then made by one JobQueue call, so its
event is written by the Lua script that makes the change.

Throughput is not shown: the shipper deletes shipped events from the outbox and acks are
not counted anywhere cheap to read, so the sparklines plot lane lengths over time. Sink
health lives in each shipper process (its metrics); here the ledger shows as the outbox
backlog, with a banner once it passes the backpressure bound.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from redis.exceptions import RedisError
from rich.text import Text
from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Button, DataTable, Footer, Header, Label, Sparkline, Static

from engine import admin
from engine.admin import LedgerBacklog, WorkerView
from engine.errors import EngineError
from engine.names import check_name
from engine.queue import JobQueue, QueueStats
from engine.settings import Settings

HISTORY_POINTS = 60
DEAD_LETTERS_SHOWN = 100
JOB_IDS_SHOWN = 3
ERROR_CHARS = 60

W = TypeVar("W", bound=Widget)


# -- what one refresh reads ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueRow:
    stats: QueueStats
    backlog: LedgerBacklog


@dataclass(frozen=True, slots=True)
class DeadLetter:
    queue: str
    record: dict[str, str]

    @property
    def job_id(self) -> str:
        return self.record.get("id", "?")

    @property
    def key(self) -> str:
        return f"{self.queue}/{self.job_id}"  # names never hold a slash


@dataclass(frozen=True, slots=True)
class Snapshot:
    now_ms: int
    queues: list[QueueRow]
    workers: list[WorkerView]
    dead: list[DeadLetter]


async def take_snapshot(
    jq: JobQueue, names: Sequence[str], dead_limit: int = DEAD_LETTERS_SHOWN
) -> Snapshot:
    """One read of every queue shown (all registered queues when `names` is empty)."""
    queues = list(names) or await jq.queues()
    rows = [QueueRow(await jq.stats(q), await admin.ledger_backlog(jq, q)) for q in queues]
    views = [view for q in queues for view in await admin.workers(jq, q)]
    dead = [DeadLetter(q, r) for q in queues for r in await jq.dead_letters(q, limit=dead_limit)]
    return Snapshot(await admin.server_ms(jq.redis), rows, views, dead)


# -- table rows ---------------------------------------------------------------------


def _num(value: int) -> Text:
    return Text(str(value), justify="right")


def _age(ms: int | None) -> Text:
    return Text(admin.format_ms(ms), justify="right")


def queue_columns(lanes: Sequence[str]) -> list[tuple[str, str]]:
    """(key, label) of each column of the queues table."""
    return [
        ("queue", "queue"),
        ("state", "state"),
        *((f"lane:{lane}", lane) for lane in lanes),
        ("scheduled", "scheduled"),
        ("in_flight", "in flight"),
        ("dead", "dead"),
        ("backlog", "ledger backlog"),
        ("oldest", "oldest event"),
    ]


def queue_cells(row: QueueRow, lanes: Sequence[str]) -> list[Text]:
    stats, backlog = row.stats, row.backlog
    state = Text("paused", style="bold yellow") if stats.paused else Text("running")
    return [
        Text(stats.queue),
        state,
        *(_num(stats.lanes.get(lane, 0)) for lane in lanes),
        _num(stats.scheduled),
        _num(sum(stats.in_flight.values())),
        _num(stats.dead),
        _num(backlog.events),
        _age(backlog.oldest_age_ms),
    ]


WORKER_COLUMNS = [
    ("queue", "queue"),
    ("worker", "worker"),
    ("state", "state"),
    ("heartbeat", "heartbeat age"),
    ("ttl", "ttl left"),
    ("in_flight", "in flight"),
    ("jobs", "jobs"),
]


def worker_cells(view: WorkerView) -> list[Text]:
    jobs = ", ".join(view.job_ids[:JOB_IDS_SHOWN])
    if view.in_flight > JOB_IDS_SHOWN:
        jobs += f" (+{view.in_flight - JOB_IDS_SHOWN})"
    return [
        Text(view.queue),
        Text(view.worker),
        Text(view.state, style="bold red" if view.state == "expired" else ""),
        _age(view.heartbeat_age_ms),
        _age(view.ttl_left_ms),
        _num(view.in_flight),
        Text(jobs),
    ]


DEAD_COLUMNS = [
    ("queue", "queue"),
    ("job", "job"),
    ("task", "task"),
    ("reason", "reason"),
    ("attempts", "attempts"),
    ("age", "dead for"),
    ("error", "last error"),
]


def dead_cells(letter: DeadLetter, now_ms: int) -> list[Text]:
    record = letter.record
    dead_ms = record.get("dead_ms", "")
    error = (record.get("last_error") or "").partition("\n")[0][:ERROR_CHARS]
    return [
        Text(letter.queue),
        Text(letter.job_id),
        Text(record.get("task", "")),
        Text(record.get("dead_reason", "")),
        Text(record.get("attempts", ""), justify="right"),
        _age(now_ms - int(dead_ms) if dead_ms.isdigit() else None),
        Text(error),
    ]


def sync_rows(table: DataTable[Text], rows: dict[str, list[Text]]) -> None:
    """Make `table` show `rows` (row key to cells), touching only what changed."""
    for gone in [key.value for key in table.rows if key.value not in rows]:
        if gone is not None:
            table.remove_row(gone)
    for key, cells in rows.items():
        if key in table.rows:
            _update_row(table, key, cells)
        else:
            table.add_row(*cells, key=key)


def _update_row(table: DataTable[Text], key: str, cells: list[Text]) -> None:
    for column, old, new in zip(table.columns, table.get_row(key), cells, strict=True):
        if old != new:
            table.update_cell(key, column, new, update_width=True)


# -- the ledger line and the backpressure banner ------------------------------------


def _bound_text(settings: Settings) -> str:
    parts = []
    if settings.ledger_max_backlog:
        parts.append(f"{settings.ledger_max_backlog} events")
    if settings.ledger_max_age_ms:
        parts.append(f"oldest {admin.format_ms(settings.ledger_max_age_ms)}")
    return " or ".join(parts) or "none"


def ledger_text(backlogs: Sequence[LedgerBacklog], settings: Settings) -> str:
    events = sum(b.events for b in backlogs)
    ages = [b.oldest_age_ms for b in backlogs if b.oldest_age_ms is not None]
    oldest = admin.format_ms(max(ages)) if ages else "-"
    return (
        f"ledger: {events} un-shipped events, oldest {oldest}; backpressure bound "
        f"{_bound_text(settings)}. Sink health is per shipper process: see its metrics."
    )


def backpressure_text(over: Sequence[LedgerBacklog], settings: Settings) -> str:
    where = ", ".join(
        f"{b.queue} ({b.events} events, oldest {admin.format_ms(b.oldest_age_ms)})" for b in over
    )
    return (
        f"BACKPRESSURE: the ledger backlog is past its bound ({_bound_text(settings)}) in "
        f"{where}. Enqueues and claims are refused until the shipper catches up."
    )


# -- widgets ------------------------------------------------------------------------


class LaneTrend(Horizontal):
    """One lane's length over the last refreshes, with its latest value."""

    def __init__(self, queue: str, lane: str) -> None:
        super().__init__(classes="trend")
        self.points: deque[int] = deque(maxlen=HISTORY_POINTS)
        self.name_label = Label(f"{queue} / {lane}", classes="trend-name", markup=False)
        self.sparkline = Sparkline([], summary_function=max)
        self.value_label = Label("", classes="trend-value")

    def compose(self) -> ComposeResult:
        yield self.name_label
        yield self.sparkline
        yield self.value_label

    def add_point(self, length: int) -> None:
        self.points.append(length)
        self.sparkline.data = list(self.points)
        self.value_label.update(str(length))


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question; No has the focus, so a stray Enter changes nothing."""

    AUTO_FOCUS = "#no"
    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question, classes="question", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Yes (y)", id="yes", variant="warning")
                yield Button("No (n)", id="no", variant="primary")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class JobScreen(ModalScreen[None]):
    """One job's stored record, as JSON."""

    BINDINGS = [Binding("escape,enter,q", "dismiss", "Close")]

    def __init__(self, queue: str, record: dict[str, str]) -> None:
        super().__init__()
        self.queue = queue
        self.record = record

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            title = f"job {self.record.get('id', '?')} of queue {self.queue}"
            yield Label(title, markup=False)
            text = json.dumps(self.record, indent=2, sort_keys=True)
            with VerticalScroll():
                yield Static(text, id="record", markup=False)
            yield Label("Esc closes", classes="hint")


# -- the app ------------------------------------------------------------------------


class TopApp(App[None]):
    """The dashboard: Tab moves between the tables; the footer lists the keys."""

    TITLE = "jobqueue top"
    CSS = """
    #banner { background: $error; color: $text; text-style: bold; padding: 0 1; }
    #status { color: $text-muted; padding: 0 1; }
    DataTable { height: auto; max-height: 14; border: round $panel; }
    DataTable:focus { border: round $accent; }
    #trends { height: auto; max-height: 10; border: round $panel; }
    .trend { height: 1; }
    .trend-name { width: 28; }
    .trend Sparkline { width: 1fr; height: 1; }
    .trend-value { width: 10; text-align: right; }
    ConfirmScreen, JobScreen { align: center middle; }
    .dialog { width: 80%; height: auto; max-height: 80%; border: thick $accent;
              background: $surface; padding: 1 2; }
    .question { width: 100%; }
    .buttons { height: auto; margin-top: 1; }
    .buttons Button { margin-right: 2; }
    .hint { color: $text-muted; }
    """
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("r", "refresh", "Refresh"),
        Binding("p", "toggle_pause", "Pause/resume queue"),
        Binding("u", "requeue", "Requeue dead letter"),
    ]

    def __init__(
        self,
        jq: JobQueue,
        *,
        queues: Sequence[str] = (),
        interval_s: float = 2.0,
        by: str | None = None,
    ) -> None:
        super().__init__()
        self.jq = jq
        self.queue_names = [check_name("queue", q) for q in queues]
        self.interval_s = interval_s
        self.by = by or admin.operator_name()
        self.snapshot: Snapshot | None = None
        self._lock = asyncio.Lock()
        self._trends: dict[tuple[str, str], LaneTrend] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="banner", markup=False)
        yield Static(id="status", markup=False)
        yield _titled(DataTable(id="queues", cursor_type="row"), "Queues (p pauses or resumes)")
        trends = VerticalScroll(id="trends")
        yield _titled(trends, "Ready jobs per lane over time: lane lengths, not throughput")
        yield _titled(DataTable(id="workers", cursor_type="row"), "Workers and jobs in flight")
        yield _titled(
            DataTable(id="dead", cursor_type="row"), "Dead letters (Enter shows, u requeues)"
        )
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#banner").display = False
        _add_columns(self.table("queues"), queue_columns(self.jq.settings.lanes))
        _add_columns(self.table("workers"), WORKER_COLUMNS)
        _add_columns(self.table("dead"), DEAD_COLUMNS)
        self.set_interval(self.interval_s, self.refresh_data)
        self.action_refresh()

    def table(self, name: str) -> DataTable[Text]:
        return self.query_one(f"#{name}", DataTable)

    def trend(self, queue: str, lane: str) -> LaneTrend | None:
        return self._trends.get((queue, lane))

    # -- refreshing -------------------------------------------------------------------

    async def refresh_data(self) -> None:
        """Read everything once and update the widgets in place."""
        async with self._lock:
            try:
                snapshot = await take_snapshot(self.jq, self.queue_names)
            except (RedisError, EngineError) as exc:
                self._status(f"cannot read Redis: {exc}; trying again in {self.interval_s:g}s")
                return
            if not self.is_running:
                return  # the app is closing: its widgets may already be gone
            try:
                await self._show(snapshot)
            except NoMatches:
                # A refresh that was in flight while the screen closed has nothing to draw.
                return

    async def _show(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        lanes = self.jq.settings.lanes
        rows = {row.stats.queue: queue_cells(row, lanes) for row in snapshot.queues}
        sync_rows(self.table("queues"), rows)
        workers = {f"{v.queue}/{v.worker}": worker_cells(v) for v in snapshot.workers}
        sync_rows(self.table("workers"), workers)
        dead = {d.key: dead_cells(d, snapshot.now_ms) for d in snapshot.dead}
        sync_rows(self.table("dead"), dead)

        await self._show_trends(snapshot)
        self._show_ledger(snapshot)

    async def _show_trends(self, snapshot: Snapshot) -> None:
        for row in snapshot.queues:
            for lane, length in row.stats.lanes.items():
                trend = self.trend(row.stats.queue, lane)
                if trend is None:
                    trend = LaneTrend(row.stats.queue, lane)
                    self._trends[(row.stats.queue, lane)] = trend
                    await self.query_one("#trends").mount(trend)
                trend.add_point(length)

    def _show_ledger(self, snapshot: Snapshot) -> None:
        backlogs = [row.backlog for row in snapshot.queues]
        over = [b for b in backlogs if b.past_bound]
        banner = self.query_one("#banner", Static)
        banner.display = bool(over)
        if over:
            banner.update(backpressure_text(over, self.jq.settings))
        self._status(ledger_text(backlogs, self.jq.settings))

    def _status(self, text: str) -> None:
        self.query_one("#status", Static).update(text)

    # -- keys -------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # While a dialog is open, only the dialog's own keys (and quitting) apply.
        if action in {"refresh", "toggle_pause", "requeue"}:
            return not isinstance(self.screen, ModalScreen)
        return True

    def action_refresh(self) -> None:
        self.run_worker(self.refresh_data(), group="refresh")

    def action_toggle_pause(self) -> None:
        queue = self._selected("queues")
        row = self._queue_row(queue)
        if queue is None or row is None:
            self.notify("no queue selected", severity="warning")
            return
        paused = row.stats.paused
        question = (
            f"Resume queue {queue}? Workers start claiming again."
            if paused
            else f"Pause queue {queue}? Workers stop claiming; enqueues still land."
        )
        change = self.jq.resume if paused else self.jq.pause
        done = f"{queue} {'resumed' if paused else 'paused'}"
        self._confirm(question, lambda: self._pause_change(change, queue, done))

    async def _pause_change(
        self, change: Callable[..., Awaitable[bool]], queue: str, done: str
    ) -> None:
        changed = await change(queue, by=self.by)
        self.notify(done if changed else f"{queue}: no change")

    def action_requeue(self) -> None:
        letter = self._dead_letter(self._selected("dead"))
        if letter is None:
            self.notify("no dead letter selected", severity="warning")
            return
        record = letter.record
        question = (
            f"Requeue dead letter {letter.job_id} ({record.get('task', '?')}, "
            f"{record.get('dead_reason', '?')}) of queue {letter.queue} to lane "
            f"{record.get('lane', '?')}? Its attempts start again from zero."
        )
        self._confirm(question, lambda: self._requeue(letter))

    async def _requeue(self, letter: DeadLetter) -> None:
        done, _ = await self.jq.requeue_dead(letter.queue, [letter.job_id], by=self.by)
        if done:
            self.notify(f"{letter.job_id} requeued to lane {letter.record.get('lane', '?')}")
        else:
            self.notify(f"{letter.job_id} is no longer a dead letter", severity="warning")

    def _confirm(self, question: str, change: Callable[[], Awaitable[None]]) -> None:
        async def answered(yes: bool | None) -> None:
            if not yes:
                return
            try:
                await change()
            except (RedisError, EngineError) as exc:
                self.notify(f"not done: {exc}", severity="error", markup=False)
            await self.refresh_data()

        self.push_screen(ConfirmScreen(question), answered)

    @on(DataTable.RowSelected, "#dead")
    async def show_dead_letter(self, event: DataTable.RowSelected) -> None:
        letter = self._dead_letter(event.row_key.value)
        if letter is None:
            return
        try:
            record = await self.jq.job(letter.queue, letter.job_id)
        except (RedisError, EngineError) as exc:
            self.notify(str(exc), severity="warning", markup=False)
            return
        self.push_screen(JobScreen(letter.queue, record))

    # -- selection --------------------------------------------------------------------

    def _selected(self, name: str) -> str | None:
        table = self.table(name)
        if table.row_count == 0:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def _queue_row(self, queue: str | None) -> QueueRow | None:
        rows = self.snapshot.queues if self.snapshot else []
        return next((row for row in rows if row.stats.queue == queue), None)

    def _dead_letter(self, key: str | None) -> DeadLetter | None:
        letters = self.snapshot.dead if self.snapshot else []
        return next((d for d in letters if d.key == key), None)


def _titled(widget: W, title: str) -> W:
    widget.border_title = title
    return widget


def _add_columns(table: DataTable[Text], columns: Sequence[tuple[str, str]]) -> None:
    for key, label in columns:
        table.add_column(label, key=key)


async def run_top(settings: Settings, queues: Sequence[str], *, interval_s: float) -> int:
    """Run the dashboard in the foreground until the operator quits."""
    names = [check_name("queue", q) for q in queues]
    jq = await JobQueue.connect(settings)
    try:
        await TopApp(jq, queues=names, interval_s=interval_s).run_async()
    finally:
        await jq.close()
    return 0
