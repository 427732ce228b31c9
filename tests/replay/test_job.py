"""`replay job`: a job's timeline, derived facts and anomalies, on ledgers the engine wrote."""

from __future__ import annotations

from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import pytest
from redis.asyncio import Redis

from engine.settings import Settings
from tests.redis_server import RedisServer
from tests.replay.conftest import Replay
from tests.replay.helpers import (
    Record,
    dead_job,
    edit_ndjson,
    find,
    insert_after,
    killed_worker_job,
    record_after,
    retried_job,
    running_job,
    ship_to_ndjson,
    zombie_ack_job,
)


async def test_a_killed_workers_job_shows_claim_reap_claim_ack_and_no_anomaly(
    redis: Redis, settings: Settings, tmp_path: Path, replay: Replay
) -> None:
    """The worker died mid-job; the reaper returned the job, another worker finished it."""
    job_id = await killed_worker_job(redis, settings)
    await ship_to_ndjson(redis, tmp_path)

    result = replay("job", job_id, "--source", str(tmp_path), "--json", "--strict")

    assert result.code == 0, result.err
    [job] = result.json()["jobs"]
    own = [e["type"] for e in job["events"] if e["job_id"] == job_id]
    assert own == ["enqueued", "claimed", "reaped", "claimed", "acked"]
    assert job["anomalies"] == []
    assert job["outcome"] == "done"
    assert [a["ended_by"] for a in job["attempts"]] == ["reaped", "acked"]
    assert [a["worker"] for a in job["attempts"]] == ["doomed", "survivor"]


Edit = Callable[[list[Record]], tuple[list[Record], Record]]


def _delete(kind: str, nth: int = 0, *, then: str | None = None) -> Edit:
    """Delete a record; the anomaly shows at the next record of type `then` (or the record
    that takes its place)."""

    def edit(records: list[Record]) -> tuple[list[Record], Record]:
        i = find(records, None, kind, nth)
        rest = [*records[:i], *records[i + 1 :]]
        later = [j for j in range(i, len(rest)) if then is None or rest[j]["type"] == then]
        return rest, rest[later[0]]

    return edit


def _no_dead_letter(records: list[Record]) -> tuple[list[Record], Record]:
    """Delete the dead letter: the failure before it is left unfinished."""
    i = find(records, None, "dead_lettered")
    return [*records[:i], *records[i + 1 :]], records[i - 1]


def _second_claim(records: list[Record]) -> tuple[list[Record], Record]:
    i = find(records, None, "claimed")
    new = record_after(records[i], worker="intruder", token=9)
    return insert_after(records, i, new), new


def _zombie_acks(records: list[Record]) -> tuple[list[Record], Record]:
    i = find(records, None, "ack_rejected")
    records[i] |= {"type": "acked", "prev_state": "active", "next_state": "done", "reason": None}
    return records, records[i]


def _heartbeat(worker: str, *, before: str, flagged_at_next: bool = False) -> Edit:
    """Insert a heartbeat naming the job just before a record; the anomaly shows at the
    heartbeat, or at that record."""

    def edit(records: list[Record]) -> tuple[list[Record], Record]:
        i = find(records, None, before)
        beat = record_after(
            records[i], type="heartbeat", job_id=None, seq=None, worker=worker, lane=None,
            attempt=None, token=None, task=None, prev_state=None, next_state=None, error=None,
            attributes={"jobs": records[i]["job_id"], "ttl_ms": "60000"},
        )  # fmt: skip
        return [*records[:i], beat, *records[i:]], records[i] if flagged_at_next else beat

    return edit


def _more_attempts_allowed(records: list[Record]) -> tuple[list[Record], Record]:
    records[find(records, None, "enqueued")]["attributes"]["max_attempts"] = "5"
    dead = records[find(records, None, "dead_lettered")]
    dead["attributes"]["max_attempts"] = "5"
    return records, dead


def _unchanged(records: list[Record]) -> tuple[list[Record], Record]:
    return records, records[find(records, None, "claimed")]


CASES = {
    "seq_gap": (retried_job, _delete("retried", then="claimed")),
    "overlapping_claims": (retried_job, _second_claim),
    "ack_after_reap": (zombie_ack_job, _zombie_acks),
    "ack_without_claim": (retried_job, _delete("claimed", 1, then="acked")),
    "foreign_heartbeat": (retried_job, _heartbeat("intruder", before="failed")),
    "reap_while_fresh": (
        killed_worker_job,
        _heartbeat("doomed", before="reaped", flagged_at_next=True),
    ),
    "early_dead_letter": (dead_job, _more_attempts_allowed),
    "claim_without_enqueue": (retried_job, _delete("enqueued", then="claimed")),
    "in_flight_at_end": (running_job, _unchanged),
    "unfinished_transition": (dead_job, _no_dead_letter),
}


@pytest.mark.parametrize("code", sorted(CASES))
async def test_a_hand_corrupted_ledger_shows_each_anomaly_at_its_event(
    code: str, redis: Redis, settings: Settings, tmp_path: Path, replay: Replay
) -> None:
    """A ledger the engine wrote, edited to break one rule, flags that rule's anomaly
    with the id of the event where it shows."""
    scenario, edit = CASES[code]
    job_id = await scenario(redis, settings)
    await ship_to_ndjson(redis, tmp_path)
    at: list[Record] = []

    def change(records: list[Record]) -> list[Record]:
        changed, target = edit(records)
        at.append(target)
        return changed

    edit_ndjson(tmp_path, change)

    result = replay("job", job_id, "--source", str(tmp_path), "--json")

    assert result.code == 0, result.err
    [job] = result.json()["jobs"]
    found = {(a["code"], a["event_id"]) for a in job["anomalies"]}
    assert (code, at[0]["event_id"]) in found, job["anomalies"]
    assert all(a["message"] for a in job["anomalies"])


async def test_a_refused_zombie_ack_is_explained_not_flagged(
    redis: Redis, settings: Settings, replay: Replay, redis_server: RedisServer
) -> None:
    """The engine refused the late ack of a reaped worker: the timeline says so, and it is
    no anomaly. Read straight from the Redis streams."""
    job_id = await zombie_ack_job(redis, settings)

    result = replay("job", job_id, "--source", redis_server.url, "--json", "--strict")

    assert result.code == 0
    [job] = result.json()["jobs"]
    assert job["anomalies"] == []
    [rejected] = [e for e in job["events"] if e["type"] == "ack_rejected"]
    assert "claim was reaped" in rejected["detail"]


async def test_strict_exits_1_when_the_job_has_an_anomaly(
    redis: Redis, settings: Settings, replay: Replay, redis_server: RedisServer
) -> None:
    job_id = await running_job(redis, settings)

    assert replay("job", job_id, "--source", redis_server.url).code == 0
    assert replay("job", job_id, "--source", redis_server.url, "--strict").code == 1


async def test_the_timeline_lists_heartbeats_and_facts_in_plain_text_when_piped(
    redis: Redis, settings: Settings, replay: Replay, redis_server: RedisServer
) -> None:
    """Not a terminal: aligned text without colour codes; the facts give the time queued,
    each attempt's run and the heartbeat gap against the TTL."""
    job_id = await retried_job(redis, settings)

    result = replay("job", job_id, "--source", redis_server.url)

    assert result.code == 0
    assert "\x1b[" not in result.out
    lines = result.out.splitlines()
    header = next(line for line in lines if line.startswith("seq"))
    assert header.split() == [
        "seq", "server", "time", "+since", "event", "lane", "worker", "attempt", "detail", "source",
    ]  # fmt: skip
    assert sum(line.split()[2:3] == ["heartbeat"] for line in lines) == 2
    assert any("ConnectionError: smtp down" in line for line in lines)
    assert any(line.startswith("time queued") for line in lines)
    assert any(line.startswith("attempt 1") and "ended by failed" in line for line in lines)
    gap = next(line for line in lines if line.startswith("largest heartbeat gap"))
    assert "within the TTL of 1.5s" in gap


async def test_an_unknown_job_exits_2_with_one_line(
    redis: Redis, settings: Settings, replay: Replay, redis_server: RedisServer
) -> None:
    await retried_job(redis, settings)

    result = replay("job", "no-such-job", "--source", redis_server.url)

    assert result.code == 2
    assert result.err.strip().splitlines() == [
        "replay: no source holds an event of job no-such-job"
    ]


class _Page(HTMLParser):
    """Collects the tags of a page, and every attribute that could load something."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.open: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag not in VOID:
            self.open.append(tag)
        self.links += [f"{tag} {name}" for name, _ in attrs if name in ("src", "href")]

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)  # <line .../>: opens and closes at once

    def handle_endtag(self, tag: str) -> None:
        innermost = self.open.pop() if self.open else None
        assert innermost == tag, f"</{tag}> closes <{innermost}>"


VOID = frozenset({"meta", "br", "img", "link", "input", "hr"})


async def test_the_html_page_is_self_contained_with_a_bar_per_attempt(
    redis: Redis, settings: Settings, replay: Replay, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Checked with html.parser (no browser here): tags nest, nothing loads from outside,
    each attempt is a bar and the reap is marked."""
    job_id = await killed_worker_job(redis, settings)
    page_path = tmp_path / "job.html"

    result = replay("job", job_id, "--source", redis_server.url, "--html", str(page_path))

    assert result.code == 0
    text = page_path.read_text()
    assert text.startswith("<!DOCTYPE html>")
    page = _Page()
    page.feed(text)
    page.close()
    assert page.open == []
    assert page.links == []
    assert not {"script", "link", "img", "iframe", "object"} & set(page.tags)
    assert "url(" not in text
    assert "@import" not in text
    assert page.tags[:4] == ["html", "head", "meta", "title"]
    assert page.tags.count("svg") == 1
    assert page.tags.count("rect") == 2
    assert 'class="mark-reap"' in text
    assert 'class="reaped"' in text
    assert 'class="acked"' in text
