"""`jobqueue top`, driven headless with textual's pilot against a real Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
from redis.asyncio import Redis
from rich.text import Text
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from engine.errors import Backpressure
from engine.queue import JobQueue, JobSpec
from engine.settings import Settings
from engine.tui import ConfirmScreen, JobScreen, TopApp
from tests.admin.helpers import dead_letter, live_worker
from tests.engine.helpers import events

Q = "top"
SIZE = (160, 50)


async def until(pilot: Pilot[None], holds: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Let the app run until `holds()` is true; fail the test after `timeout_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not holds():
        if loop.time() > deadline:
            pytest.fail(f"the dashboard did not get there within {timeout_s}s")
        await pilot.pause(0.02)


def cell(table: DataTable[Text], row: str, column: str) -> str:
    return str(table.get_cell(row, column))


async def scene(jq: JobQueue, redis: Redis, settings: Settings) -> str:
    """Worker w1 holds one job; lanes hold default=3, low=1; one dead letter. Its id."""
    ops = await live_worker(redis, settings, Q, "w1")
    dead_id = await dead_letter(jq, ops)
    await jq.enqueue_many(Q, [JobSpec("send", {"n": n}) for n in range(4)])
    await ops.claim(1)
    await jq.enqueue(Q, "send", lane="low")
    return dead_id


def top(jq: JobQueue) -> TopApp:
    # A long interval: the tests refresh with the r key, so every step is deterministic.
    return TopApp(jq, interval_s=60, by="tester")


async def test_the_tables_show_lanes_workers_and_dead_letters_from_redis(
    jq: JobQueue, redis: Redis, settings: Settings
) -> None:
    dead_id = await scene(jq, redis, settings)
    app = top(jq)

    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.table("dead").row_count == 1)
        queues, workers, dead = app.table("queues"), app.table("workers"), app.table("dead")

        assert [cell(queues, Q, c) for c in ("state", "lane:high", "lane:default", "lane:low")] == [
            "running", "0", "3", "1",
        ]  # fmt: skip
        assert (cell(queues, Q, "in_flight"), cell(queues, Q, "dead")) == ("1", "1")
        assert (cell(workers, f"{Q}/w1", "state"), cell(workers, f"{Q}/w1", "in_flight")) == (
            "alive", "1",
        )  # fmt: skip
        assert [cell(dead, f"{Q}/{dead_id}", c) for c in ("task", "reason", "error")] == [
            "report", "non_retryable", "boom",
        ]  # fmt: skip


async def test_a_refresh_updates_cells_and_sparklines_in_place(
    jq: JobQueue, redis: Redis, settings: Settings
) -> None:
    """The same tables and rows stay; changed cells change; each lane gains a point."""
    await scene(jq, redis, settings)
    app = top(jq)

    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.trend(Q, "default") is not None)
        queues = app.table("queues")
        trend = app.trend(Q, "default")
        assert trend is not None

        await jq.enqueue(Q, "send")
        await pilot.press("r")
        await until(pilot, lambda: len(trend.points) == 2)

        assert app.table("queues") is queues
        assert queues.row_count == 1
        assert cell(queues, Q, "lane:default") == "4"
        assert list(trend.points) == [3, 4]
        assert trend.sparkline.data == [3, 4]


async def test_requeue_asks_first_and_then_moves_the_dead_letter_back(
    jq: JobQueue, redis: Redis, settings: Settings
) -> None:
    """Tab reaches the dead letters; 'u' asks; 'n' changes nothing; 'y' requeues."""
    dead_id = await scene(jq, redis, settings)
    app = top(jq)

    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.table("dead").row_count == 1)
        await pilot.press("tab", "tab", "tab")
        assert app.focused is app.table("dead")

        await pilot.press("u")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        assert not isinstance(app.screen, ConfirmScreen)
        assert await redis.llen(jq.keys(Q).dead) == 1

        await pilot.press("u", "y")
        await until(pilot, lambda: app.table("dead").row_count == 0)

    assert await redis.llen(jq.keys(Q).dead) == 0
    assert (await jq.job(Q, dead_id))["state"] == "ready"
    last = [e for e in await events(redis, Q) if e.get("job") == dead_id][-1]
    assert (last["type"], json.loads(last["attrs"])) == ("requeued", {"by": "tester"})


async def test_enter_on_a_dead_letter_shows_its_stored_record(
    jq: JobQueue, redis: Redis, settings: Settings
) -> None:
    dead_id = await scene(jq, redis, settings)
    app = top(jq)

    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.table("dead").row_count == 1)
        app.table("dead").focus()

        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, JobScreen))
        shown = json.loads(str(app.screen.query_one("#record", Static).content))
        await pilot.press("escape")

        assert (shown["id"], shown["state"], shown["last_error"]) == (dead_id, "dead", "boom")
        assert not isinstance(app.screen, JobScreen)


async def test_pause_asks_first_then_pauses_the_queue_with_its_event(
    jq: JobQueue, redis: Redis, settings: Settings
) -> None:
    await scene(jq, redis, settings)
    app = top(jq)

    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.table("queues").row_count == 1)

        await pilot.press("p")
        assert isinstance(app.screen, ConfirmScreen)
        assert "Pause queue top?" in app.screen.question
        await pilot.press("y")
        await until(pilot, lambda: cell(app.table("queues"), Q, "state") == "paused")

    assert await redis.hget(jq.keys(Q).meta, "paused") == "1"
    paused = [e for e in await events(redis, Q) if e["type"] == "paused"]
    assert [json.loads(e["attrs"]) for e in paused] == [{"by": "tester"}]


async def test_a_backpressure_banner_appears_once_the_backlog_passes_its_bound(
    redis: Redis, settings: Settings
) -> None:
    """The banner follows the bound the engine applies: it shows when enqueues fail."""
    bounded = JobQueue(redis, settings.model_copy(update={"ledger_max_backlog": 5}))
    await bounded.enqueue_many(Q, [JobSpec("t") for _ in range(3)])
    app = top(bounded)

    async with app.run_test(size=SIZE) as pilot:
        banner = app.query_one("#banner", Static)
        await until(pilot, lambda: app.table("queues").row_count == 1)
        assert not banner.display

        await bounded.enqueue_many(Q, [JobSpec("t") for _ in range(2)])
        await pilot.press("r")
        await until(pilot, lambda: banner.display)

        assert "BACKPRESSURE" in str(banner.content)
        assert f"{Q} (5 events" in str(banner.content)
        with pytest.raises(Backpressure):
            await bounded.enqueue(Q, "t")
