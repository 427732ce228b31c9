"""`replay incident` and `replay query` on ledgers the engine wrote, one of them by real
workers running real handlers."""

from __future__ import annotations

import csv
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from redis.asyncio import Redis

from engine.queue import JobQueue
from engine.settings import Settings
from engine.worker import Worker
from tests.apps.sample import app
from tests.engine.conftest import Running, wait_for
from tests.redis_server import RedisServer
from tests.replay.conftest import Replay
from tests.replay.helpers import (
    Q,
    dead_job,
    killed_worker_job,
    retried_job,
    running_job,
    stream_events,
)


async def _incident_ledger(redis: Redis, settings: Settings) -> None:
    await killed_worker_job(redis, settings)
    await retried_job(redis, settings)
    await dead_job(redis, settings)
    jq = JobQueue(redis, settings)
    await jq.pause(Q, by="oncall")
    await jq.resume(Q, by="oncall")
    await running_job(redis, settings)


async def test_an_incident_lists_deaths_reaps_retries_dead_letters_and_anomalies(
    redis: Redis, settings: Settings, redis_server: RedisServer, replay: Replay
) -> None:
    await _incident_ledger(redis, settings)

    result = replay("incident", "--since", "-1h", "--until", "now",
                    "--source", redis_server.url, "--json")  # fmt: skip

    assert result.code == 0, result.err
    report = result.json()
    [death] = report["worker_deaths"]
    assert (death["worker"], death["reaper"]) == ("doomed", "survivor")
    assert death["jobs"] == [
        {"job_id": "job-killed", "after": "claimed again by survivor; now done"}
    ]
    assert [r["job_id"] for r in report["reaps"]] == ["job-killed"]
    errors = {group["example"]: group["count"] for group in report["retries_by_error"]}
    assert errors == {"ConnectionError: smtp down": 1, "ValueError: card declined (1)": 1}
    [dead] = report["dead_letters_by_reason"]
    assert (dead["key"], dead["count"], dead["jobs"]) == ("retries_exhausted", 1, ["job-dead"])
    assert report["failing_tasks"][0] == {"task": "charge", "failures": 2, "dead_letters": 1}
    assert report["fallback"] == report["backpressure"] == "not recorded in the ledger"
    [paused] = report["paused"]
    assert paused["by"] == "oncall"
    assert paused["to_ms"] is not None
    assert {s["job_id"] for s in report["slowest"]} == {"job-killed", "job-retried"}
    assert [(a["job_id"], a["code"]) for a in report["anomalies"]] == [
        ("job-running", "in_flight_at_end")
    ]


async def test_an_incident_window_leaves_out_what_happened_before_it(
    redis: Redis, settings: Settings, redis_server: RedisServer, replay: Replay
) -> None:
    await killed_worker_job(redis, settings)
    events = await stream_events(redis)
    after = events[-1].ts_ms + 1
    from replay.times import format_ts

    result = replay("incident", "--since", format_ts(after), "--until", "now",
                    "--source", redis_server.url)  # fmt: skip

    assert result.code == 0
    assert "0 events in the window" in result.out
    assert "Fallback periods: not recorded in the ledger." in result.out


async def test_an_incident_page_marks_worker_deaths_and_dead_letters(
    redis: Redis, settings: Settings, redis_server: RedisServer, replay: Replay, tmp_path: Path
) -> None:
    await _incident_ledger(redis, settings)
    page_path = tmp_path / "incident.html"

    result = replay(
        "incident", "--since", "-1h", "--source", redis_server.url, "--html", str(page_path)
    )

    assert result.code == 0
    text = page_path.read_text()
    tags: list[str] = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            tags.append(tag)
            assert not any(name in ("src", "href") for name, _ in attrs)

    Collect().feed(text)
    assert tags.count("svg") == 1
    assert "script" not in tags
    assert 'class="mark-death"' in text
    assert 'class="mark-dead"' in text
    assert "Worker deaths" in text
    assert "not recorded in the ledger" in text


@pytest.mark.usefixtures("sample_app")
async def test_an_incident_from_real_workers_groups_the_retries_of_a_failing_task(
    redis: Redis, settings: Settings, redis_server: RedisServer, running: Running, replay: Replay
) -> None:
    """Real handlers on a real worker: three noops succeed, one job fails all its attempts;
    heartbeats name the jobs as they run."""
    jq = JobQueue(redis, settings)
    for _ in range(3):
        await jq.enqueue(Q, "noop", {})
    failing = await jq.enqueue(Q, "always_fails", {})
    slow = await jq.enqueue(Q, "sleep", {"s": 0.8})
    running.start(Worker(app, [Q], settings))

    async def settled() -> bool:
        types = [e.type for e in await stream_events(redis) if e.job_id in (failing, slow)]
        return "dead_lettered" in types and "acked" in types

    await wait_for(settled)
    await running.stop()

    result = replay(
        "incident", "--since", "-1h", "--source", redis_server.url, "--json", "--strict"
    )

    assert result.code == 0, result.json()["anomalies"]
    report = result.json()
    [group] = report["retries_by_error"]
    assert (group["count"], group["tasks"]) == (2, {"always_fails": 2})
    assert group["example"].startswith("RuntimeError: attempt")
    assert report["failing_tasks"][0] == {"task": "always_fails", "failures": 3, "dead_letters": 1}
    job = replay("job", slow, "--source", redis_server.url, "--json").json()["jobs"][0]
    assert any(e["type"] == "heartbeat" for e in job["events"])
    assert job["heartbeat_ttl_ms"] == settings.heartbeat_ttl_ms


async def test_query_filters_by_type_task_worker_and_payload(
    redis: Redis, settings: Settings, redis_server: RedisServer, replay: Replay
) -> None:
    await _incident_ledger(redis, settings)
    source = ("--source", redis_server.url)

    failed = replay("query", *source, "--type", "failed", "--task", "charge", "--json")
    by_payload = replay("query", *source, "--where", "payload.to=b", "--json")
    by_attr = replay("query", *source, "--where", "attrs.failures=2", "--json")
    by_field = replay("query", *source, "--where", "reason=retries_exhausted", "--json")
    by_worker = replay("query", *source, "--worker", "survivor", "--type", "acked", "--json")

    def ids(result: object) -> list[tuple[str, str]]:
        rows = [json.loads(line) for line in result.out.splitlines()]  # type: ignore[attr-defined]
        return [(row["job_id"], row["type"]) for row in rows]

    assert ids(failed) == [("job-dead", "failed"), ("job-dead", "failed")]
    assert {job for job, _ in ids(by_payload)} == {"job-retried"}
    assert ("job-retried", "enqueued") in ids(by_payload)
    assert ("job-retried", "acked") in ids(by_payload)
    assert ids(by_attr) == [("job-dead", "failed")]
    assert ids(by_field) == [("job-dead", "dead_lettered")]
    assert ids(by_worker) == [("job-killed", "acked")]


async def test_query_writes_csv_and_a_plain_table(
    redis: Redis, settings: Settings, redis_server: RedisServer, replay: Replay
) -> None:
    job_id = await retried_job(redis, settings)

    as_csv = replay("query", "--source", redis_server.url, "--job", job_id, "--csv")
    as_table = replay("query", "--source", redis_server.url, "--job", job_id, "--limit", "2")

    rows = list(csv.DictReader(io.StringIO(as_csv.out)))
    assert [row["type"] for row in rows if row["job_id"] == job_id] == [
        "enqueued", "claimed", "failed", "retried", "claimed", "acked",
    ]  # fmt: skip
    assert {row["sources"] for row in rows} == {"redis"}
    assert json.loads(rows[0]["attributes"]) == {"max_attempts": "3", "max_crashes": "3"}
    assert "2 events match." in as_table.out
    assert as_table.out.splitlines()[1].split()[:3] == ["server", "time", "event"]


async def test_a_bad_where_exits_2_with_one_line(redis_server: RedisServer, replay: Replay) -> None:
    result = replay("query", "--source", redis_server.url, "--where", "payload")

    assert result.code == 2
    assert result.err.strip().splitlines() == [
        "replay: cannot read --where 'payload': give PATH=VALUE, e.g. payload.customer=42"
    ]
