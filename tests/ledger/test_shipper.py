"""The shipper against a real Redis and real sinks: what it ships, keeps, and takes over.

Sinks fail the way disks fail: a folder whose parent is a regular file (ENOTDIR) and a live
segment that is a symlink to /dev/full (ENOSPC), both refused even to root. The Kafka
primary is a real broker (tansu) frozen with SIGSTOP.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import cast

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from structlog.testing import capture_logs

from engine.cli import main as jobqueue
from engine.errors import Backpressure
from engine.keys import QueueKeys
from engine.ops import AckItem
from engine.queue import JobQueue
from engine.settings import Settings
from ledger.event import JobEvent
from ledger.shipper import GROUP, Shipper
from sinks.base import Sink, SinkUnavailable
from sinks.breaker import CircuitBreaker
from sinks.fallback import FallbackSink, drain
from sinks.kafka import KafkaSink, KafkaSinkSettings, read_topic
from sinks.ndjson import NdjsonSink, iter_segments, read_events
from sinks.scrub import Scrubber
from tests.engine.helpers import registered_ops
from tests.redis_server import RedisServer
from tests.servers import KafkaBroker
from tests.sinks import conftest as sink_fixtures

Q = "mail"
REPO = Path(__file__).resolve().parents[2]
TODAY_S = float(calendar.timegm((2025, 1, 31, 12, 0, 0)))
FULL_DISK_SEGMENT = "ledger-20250131T000000-000001.ndjson"

kafka_broker = sink_fixtures.kafka_broker  # the sink tests' broker fixture, shared here


# --- helpers ----------------------------------------------------------------------------


def stream(queue: str = Q) -> str:
    return QueueKeys(queue).events


async def outbox_ids(redis: Redis, queue: str = Q) -> list[str]:
    """The event ids of every entry still in the queue's outbox, oldest first."""
    entries = cast(list[tuple[str, dict[str, str]]], await redis.xrange(stream(queue)))
    return [f"{queue}/{entry_id}" for entry_id, _ in entries]


async def pending(redis: Redis, queue: str = Q) -> dict[str, int]:
    """Entries read but not acknowledged, per consumer of the shipper group."""
    summary = await redis.xpending(stream(queue), GROUP)
    return {c["name"]: int(c["pending"]) for c in summary["consumers"] or []}


def shipped(folder: Path) -> list[JobEvent]:
    found = list(read_events(folder, include_drained=True))
    assert all(isinstance(event, JobEvent) for event in found), found
    return [event for event in found if isinstance(event, JobEvent)]


def shipped_ids(folder: Path) -> list[str]:
    return [event.event_id for event in shipped(folder)]


async def ship_all(shipper: Shipper, queue: str = Q) -> int:
    total = 0
    while n := await shipper.ship_once(queue):
        total += n
    return total


async def until(predicate: Callable[[], Awaitable[bool]], timeout_s: float = 15.0) -> None:
    """Poll until `predicate` holds; fail the test, saying so, once `timeout_s` passed."""
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout_s}s")
        await asyncio.sleep(0.05)


def blocked_folder(tmp_path: Path, name: str) -> Path:
    """A folder that cannot be made (ENOTDIR) until its parent file is removed."""
    blocker = tmp_path / f"{name}-blocker"
    blocker.write_text("a file where the sink's parent folder should be")
    return blocker / name


def full_disk_folder(tmp_path: Path, name: str) -> Path:
    """A folder whose live segment, for a sink clocked at TODAY_S, is /dev/full."""
    folder = tmp_path / name
    folder.mkdir()
    (folder / FULL_DISK_SEGMENT).symlink_to("/dev/full")
    return folder


@pytest.fixture
def jq(redis: Redis, settings: Settings) -> JobQueue:
    return JobQueue(redis, settings)


@pytest.fixture
async def sinks() -> AsyncIterator[list[Sink]]:
    """Sinks a test made; each is closed at the end, so folder locks are released."""
    made: list[Sink] = []
    yield made
    for sink in made:
        await sink.close()


async def enqueue(jq: JobQueue, count: int, queue: str = Q) -> list[str]:
    return [await jq.enqueue(queue, "send_welcome", {"n": n}) for n in range(count)]


# --- shipping -----------------------------------------------------------------------------


async def test_shipped_events_reach_the_sink_once_in_stream_order_and_scrubbed(
    jq: JobQueue, redis: Redis, settings: Settings, tmp_path: Path, sinks: list[Sink]
) -> None:
    """Enqueues, claims and acks land in NDJSON in stream order; the outbox ends empty."""
    await jq.enqueue(Q, "send_welcome", {"contact": "ada@example.org", "plan": "pro"})
    await enqueue(jq, 4)
    ops = await registered_ops(redis, settings, Q, "worker-1")
    claim = await ops.claim(3)
    await ops.ack([AckItem(job.id, job.token, 5) for job in claim.jobs])
    expected = await outbox_ids(redis)

    folder = tmp_path / "ledger"
    sink = NdjsonSink(folder)
    sinks.append(sink)
    shipper = Shipper(redis, settings, sink, Scrubber(), [Q], consumer="shipper-1", batch_size=4)
    assert await ship_all(shipper) == len(expected)

    assert await redis.xlen(stream()) == 0
    assert await pending(redis) == {}
    assert shipped_ids(folder) == expected
    assert shipper.shipped == {"ndjson": len(expected)}

    first = shipped(folder)[0]
    assert first.type == "enqueued"
    assert first.payload == '{"contact":"[REDACTED:email]","plan":"pro"}'
    on_disk = b"".join(path.read_bytes() for path in iter_segments(folder))
    assert b"ada@example.org" not in on_disk


async def test_a_restarted_shipper_sends_again_what_it_held_under_its_name(
    jq: JobQueue, redis: Redis, settings: Settings, tmp_path: Path, sinks: list[Sink]
) -> None:
    """Entries read but never confirmed are re-read first by the next shipper of that name."""
    await enqueue(jq, 6)
    expected = await outbox_ids(redis)
    broken = NdjsonSink(blocked_folder(tmp_path, "ledger"))
    sinks.append(broken)
    first = Shipper(redis, settings, broken, Scrubber(), [Q], consumer="same-name", batch_size=4)
    with capture_logs():
        assert await first.ship_once(Q) == 0
    assert await pending(redis) == {"same-name": 4}

    working = NdjsonSink(tmp_path / "working")
    sinks.append(working)
    second = Shipper(redis, settings, working, Scrubber(), [Q], consumer="same-name")
    assert await second.ship_once(Q) == 4
    assert await ship_all(second) == 2

    assert shipped_ids(tmp_path / "working") == expected
    assert second.reclaimed == 0


# --- a failing sink and backpressure --------------------------------------------------------


async def test_events_stay_in_redis_while_every_sink_fails_and_backpressure_holds_new_work(
    redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    """Nothing is acked while primary and fallback fail; past the bound, enqueues and
    claims are refused; once the primary is back everything ships and work resumes."""
    bounded = settings.model_copy(update={"ledger_max_backlog": 4})
    jq = JobQueue(redis, bounded)
    await enqueue(jq, 3)
    ops = await registered_ops(redis, bounded, Q, "worker-1")  # the 4th event
    expected = await outbox_ids(redis)

    primary_folder = blocked_folder(tmp_path, "primary")
    primary = NdjsonSink(primary_folder, name="primary")
    fallback = NdjsonSink(full_disk_folder(tmp_path, "fallback"), clock=lambda: TODAY_S)
    breaker = CircuitBreaker("primary", failure_threshold=1, reset_timeout_s=0.0)
    sink = FallbackSink(primary, fallback, breaker=breaker)
    shipper = Shipper(redis, bounded, sink, Scrubber(), [Q], consumer="shipper-1")

    with capture_logs() as logs:
        assert await shipper.ship_once(Q) == 0
        assert await shipper.check_backpressure(Q) is True
    assert await outbox_ids(redis) == expected
    assert await pending(redis) == {"shipper-1": 4}
    assert shipper.errors["sink_unavailable"] == 1
    assert shipper.backpressure == {Q: True}
    failure = next(e for e in logs if e["event"] == "sink_unavailable_events_stay_in_redis")
    assert (failure["log_level"], failure["queue"], failure["backlog"]) == ("error", Q, 4)
    engaged = next(e for e in logs if e["event"] == "ledger_backpressure_engaged")
    assert (engaged["log_level"], engaged["backlog"], engaged["max_backlog"]) == ("error", 4, 4)

    with pytest.raises(Backpressure) as refused:
        await jq.enqueue(Q, "send_welcome", {})
    assert (refused.value.queue, refused.value.backlog) == (Q, 4)
    assert "max backlog 4" in str(refused.value)
    claim = await ops.claim(1)
    assert (claim.status, claim.backlog) == ("bp", 4)

    primary_folder.parent.unlink()  # the primary is back
    with capture_logs() as logs:
        assert await ship_all(shipper) == 4
        assert await shipper.check_backpressure(Q) is False
    assert await redis.xlen(stream()) == 0
    assert shipped_ids(primary_folder) == expected
    assert "ledger_backpressure_released" in [e["event"] for e in logs]

    await jq.enqueue(Q, "send_welcome", {})
    assert (await ops.claim(1)).status == "ok"
    await primary.close()
    with contextlib.suppress(SinkUnavailable):  # fsync of /dev/full fails with EINVAL
        await fallback.close()


async def test_a_running_shipper_retries_a_failed_sink_and_shows_backpressure_until_it_recovers(
    redis: Redis, settings: Settings, tmp_path: Path, sinks: list[Sink]
) -> None:
    """`run()` retries after a pause while the sink fails, marks the queue as held past
    its bound, and once the sink is back ships everything and clears the mark."""
    bounded = settings.model_copy(update={"ledger_max_backlog": 3})
    await enqueue(JobQueue(redis, bounded), 3)
    expected = await outbox_ids(redis)
    folder = blocked_folder(tmp_path, "ledger")
    sink = NdjsonSink(folder)
    sinks.append(sink)
    shipper = Shipper(redis, bounded, sink, Scrubber(), [Q], consumer="shipper-1", block_ms=100)

    async def held_and_retried() -> bool:
        return shipper.errors["sink_unavailable"] >= 2 and shipper.backpressure.get(Q) is True

    async def shipped_and_freed() -> bool:
        return await redis.xlen(stream()) == 0 and shipper.backpressure.get(Q) is False

    with capture_logs() as logs:
        running = asyncio.create_task(shipper.run())
        await until(held_and_retried)
        assert await outbox_ids(redis) == expected
        folder.parent.unlink()
        await until(shipped_and_freed)
        shipper.stop()
        await running

    assert shipped_ids(folder) == expected
    names = [e["event"] for e in logs]
    assert {"ledger_backpressure_engaged", "shipping_resumed", "ledger_backpressure_released"} <= (
        set(names)
    )


@pytest.mark.timeout(40)
async def test_a_frozen_kafka_primary_sends_events_to_the_fallback_and_drain_restores_them(
    jq: JobQueue, redis: Redis, tmp_path: Path, kafka_broker: KafkaBroker, sinks: list[Sink]
) -> None:
    """Kafka stops answering mid-stream: no event is lost, the fallback holds the rest,
    and after the drain every event id is in the topic (once, after dedupe by id)."""
    topic = sink_fixtures.TOPIC
    kafka_broker.create_topic(topic, sink_fixtures.TOPIC_PARTITIONS)
    kafka_settings = KafkaSinkSettings(
        kafka_broker.bootstrap_servers, topic, write_timeout_s=2.0, close_timeout_s=1.0
    )
    kafka = KafkaSink(kafka_settings)
    fallback = NdjsonSink(tmp_path / "fallback")
    breaker = CircuitBreaker("kafka", failure_threshold=1, reset_timeout_s=3600)
    sink = FallbackSink(kafka, fallback, breaker=breaker)
    sinks.append(sink)
    shipper = Shipper(redis, jq.settings, sink, Scrubber(), [Q], consumer="shipper-1", batch_size=5)

    await enqueue(jq, 10)
    expected = await outbox_ids(redis)
    assert await ship_all(shipper) == 10
    assert sink.events_to_primary == 10

    kafka_broker.pause()
    await enqueue(jq, 10)
    expected += await outbox_ids(redis)
    with capture_logs():
        assert await ship_all(shipper) == 10
    assert await redis.xlen(stream()) == 0
    assert sink.events_to_fallback == 10

    kafka_broker.resume()
    report = await drain(tmp_path / "fallback", kafka, live=fallback)
    assert report.complete, report.errors
    assert report.events == 10

    in_kafka = await read_topic(kafka_settings.bootstrap_servers, topic)
    deduped = {event.event_id: event for event in in_kafka}
    assert sorted(deduped) == sorted(expected)
    # The batch that timed out may have reached the broker as well: at least once.
    assert len(in_kafka) >= len(expected)
    assert all(event.type == "enqueued" and event.payload for event in deduped.values())


async def test_ledger_drain_command_reships_a_fallback_folder(
    redis: Redis, settings: Settings, redis_server: RedisServer, tmp_path: Path
) -> None:
    """`ledger drain` re-ships rotated and live segments, then files them under drained/."""
    events = [
        JobEvent(queue=Q, stream_id=f"1764780000000-{n}", type="enqueued", ts_ms=1764780000000)
        for n in range(7)
    ]
    source = NdjsonSink(tmp_path / "fallback")
    await source.write(events[:4])
    await source.rotate()
    await source.write(events[4:])
    await source.close()

    argv = ["ledger", "drain", "--folder", str(tmp_path / "fallback"), "--sink", "ndjson",
            "--to-folder", str(tmp_path / "primary"), "--redis-url", redis_server.url]  # fmt: skip
    assert await asyncio.to_thread(jobqueue, argv) == 0

    assert shipped_ids(tmp_path / "primary") == [event.event_id for event in events]
    assert iter_segments(tmp_path / "fallback") == []
    assert len(iter_segments(tmp_path / "fallback", include_drained=True)) == 2


# --- crashes and cooperation ----------------------------------------------------------------


@pytest.mark.timeout(40)
async def test_entries_held_by_a_killed_shipper_are_claimed_again_and_shipped(
    jq: JobQueue, redis: Redis, settings: Settings, redis_server: RedisServer, tmp_path: Path
) -> None:
    """A `ship` process SIGKILLed while holding a batch: another shipper takes the batch
    over once it is idle (XAUTOCLAIM) and ships it with the rest; none is lost."""
    await enqueue(jq, 25)
    expected = await outbox_ids(redis)
    command = [
        sys.executable, "-m", "engine.cli", "ship", Q, "--sink", "ndjson",
        "--folder", str(blocked_folder(tmp_path, "doomed")), "--consumer", "doomed",
        "--batch-size", "10", "--redis-url", redis_server.url, "--log-level", "WARNING",
    ]  # fmt: skip
    with (tmp_path / "doomed.log").open("wb") as output:
        doomed = subprocess.Popen(command, cwd=REPO, stdout=output, stderr=subprocess.STDOUT)
    try:

        async def holds_a_batch() -> bool:
            with contextlib.suppress(ResponseError):  # no group before the process made it
                return await pending(redis) == {"doomed": 10}
            return False

        await until(holds_a_batch)
    finally:
        doomed.kill()
        doomed.wait()

    folder = tmp_path / "rescue"
    sink = NdjsonSink(folder)
    rescuer = Shipper(redis, settings, sink, Scrubber(), [Q], consumer="rescuer", claim_idle_ms=200)

    async def outbox_empty() -> bool:
        await rescuer.ship_once(Q)
        return await redis.xlen(stream()) == 0

    with capture_logs() as logs:
        await until(outbox_empty)
    await sink.close()

    copies = Counter(shipped_ids(folder))
    assert set(copies) == set(expected)
    # The killed process never had a write confirmed, so nothing can have been sent twice.
    assert sum(copies.values()) - len(copies) == 0
    assert rescuer.reclaimed == 10
    assert await pending(redis) == {}
    assert "pending_events_reclaimed" in [e["event"] for e in logs]


@pytest.mark.timeout(30)
async def test_several_shippers_share_the_queues_and_ship_every_event_once(
    jq: JobQueue, redis: Redis, settings: Settings, tmp_path: Path, sinks: list[Sink]
) -> None:
    """Three running shippers over every known queue: each event is shipped by exactly one
    of them, and nothing stays pending."""
    jobs = {Q: await enqueue(jq, 20), "sms": await enqueue(jq, 20, "sms")}
    shippers = []
    for n in range(3):
        sink = NdjsonSink(tmp_path / f"ledger-{n}")
        sinks.append(sink)
        shippers.append(
            Shipper(redis, settings, sink, Scrubber(), None, consumer=f"s{n}", batch_size=7,
                    block_ms=100)
        )  # fmt: skip
    runs = [asyncio.create_task(shipper.run()) for shipper in shippers]

    for queue in jobs:
        jobs[queue] += await enqueue(jq, 20, queue)

    async def both_empty() -> bool:
        return all([await redis.xlen(stream(queue)) == 0 for queue in jobs])

    await until(both_empty)
    for shipper in shippers:
        shipper.stop()
    await asyncio.gather(*runs)

    found: list[JobEvent] = []
    for n in range(3):
        found += shipped(tmp_path / f"ledger-{n}")
    by_id = Counter(event.event_id for event in found)
    assert max(by_id.values()) == 1
    assert {(e.queue, e.job_id) for e in found} == {(q, j) for q, ids in jobs.items() for j in ids}
    assert len(by_id) == 80
    assert [await pending(redis, queue) for queue in jobs] == [{}, {}]
    assert sum(sum(shipper.shipped.values()) for shipper in shippers) == 80


async def test_flush_after_run_ships_the_last_events_of_every_queue(
    jq: JobQueue, redis: Redis, settings: Settings, tmp_path: Path, sinks: list[Sink]
) -> None:
    """Events written after the shipper stopped (a worker leaving) go out with `flush`."""
    sink = NdjsonSink(tmp_path / "ledger")
    sinks.append(sink)
    shipper = Shipper(redis, settings, sink, Scrubber(), [Q, "sms"], consumer="s1", batch_size=3)
    shipper.stop()
    await shipper.run()

    await enqueue(jq, 5)
    await enqueue(jq, 2, "sms")
    expected = await outbox_ids(redis) + await outbox_ids(redis, "sms")
    assert await shipper.flush(timeout_s=10) == 7

    assert shipped_ids(tmp_path / "ledger") == expected
