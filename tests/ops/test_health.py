"""/metrics, /healthz and /readyz over real HTTP, from a worker and from a shipper."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from redis.asyncio import Redis
from structlog.testing import capture_logs

from engine import metrics
from engine.embedded import free_port
from engine.health import METRICS_CONTENT_TYPE, Endpoint, serve_shipper
from engine.queue import JobQueue, JobSpec
from engine.settings import Settings
from engine.worker import Worker
from ledger.shipper import Shipper
from sinks.fallback import FallbackSink
from sinks.ndjson import NdjsonSink
from sinks.scrub import Scrubber
from tests.apps.sample import app
from tests.engine.conftest import Running, wait_for
from tests.ops.helpers import fetch
from tests.ops.test_metrics import DownSink, probe_of

pytestmark = pytest.mark.usefixtures("sample_app")


async def wait_for_status(port: int, path: str, status: int) -> str:
    """Poll `path` until it answers `status`; return that answer's body."""
    body = ""

    async def answered() -> bool:
        nonlocal body
        try:
            reply = await fetch(port, path)
        except ConnectionRefusedError:  # the worker has not started its endpoint yet
            return False
        body = reply.body
        return reply.status == status

    await wait_for(answered)
    return body


async def test_a_worker_serves_metrics_health_and_readiness_over_http(
    jq: JobQueue, served: Settings, running: Running, queue: str
) -> None:
    await jq.enqueue(queue, "noop", {}, lane="high", delay_s=60)
    worker = running.start(Worker(app, [queue], served))
    port = served.metrics_port
    assert port is not None

    assert await wait_for_status(port, "/readyz", 200) == "ready\n"
    health = await fetch(port, "/healthz")
    assert (health.status, health.body) == (200, "ok\n")

    scrape = await fetch(port, "/metrics")
    assert (scrape.status, scrape.content_type) == (200, METRICS_CONTENT_TYPE)
    assert f'jobqueue_scheduled_jobs{{queue="{queue}"}} 1.0' in scrape.body
    assert f'jobqueue_queue_length{{lane="high",queue="{queue}"}} 0.0' in scrape.body
    in_flight = f'jobqueue_jobs_in_flight{{queue="{queue}",worker="{worker.worker_id}"}} 0.0'
    assert in_flight in scrape.body
    assert "jobqueue_event_loop_lag_seconds " in scrape.body

    await running.stop(worker)
    with pytest.raises(ConnectionRefusedError):
        await fetch(port, "/healthz")


async def test_the_endpoint_refuses_unknown_paths_other_methods_and_garbage(
    redis: Redis, settings: Settings, queue: str
) -> None:
    endpoint = await Endpoint(probe_of(redis, settings, queue), "127.0.0.1", 0).start()
    try:
        missing = await fetch(endpoint.port, "/nope")
        posted = await fetch(endpoint.port, "/metrics", method="POST")
        head = await fetch(endpoint.port, "/healthz", method="HEAD")
        reader, writer = await asyncio.open_connection("127.0.0.1", endpoint.port)
        writer.write(b"hello\r\n\r\n")
        garbage = await reader.read()
        writer.close()
    finally:
        await endpoint.close()

    assert missing.status == 404
    assert "/metrics, /healthz or /readyz" in missing.body
    assert posted.status == 405
    assert (head.status, head.body) == (200, "")
    assert garbage.startswith(b"HTTP/1.1 400 Bad Request\r\n")


async def test_readyz_turns_503_while_the_ledger_is_in_backpressure(
    jq: JobQueue, redis: Redis, served: Settings, running: Running, queue: str
) -> None:
    """With shipping off and a tiny bound, two jobs' events fill the outbox."""
    bounded = served.model_copy(update={"ledger_max_backlog": 5, "ledger_ship_in_worker": False})
    await jq.enqueue_many(queue, [JobSpec("noop"), JobSpec("noop")])
    running.start(Worker(app, [queue], bounded))
    port = bounded.metrics_port
    assert port is not None

    with capture_logs() as logs:
        reason = await wait_for_status(port, "/readyz", 503)
    assert reason.startswith(f"ledger backpressure on queue {queue}: ")
    assert reason.count("\n") == 1
    assert metrics.value("jobqueue_ledger_backpressure", queue=queue) == 1
    changes = [e for e in logs if e["event"] == "readiness_changed"]
    assert [e["ready"] for e in changes][-1] is False

    await redis.delete(jq.keys(queue).events)  # as if a shipper had caught up
    await wait_for_status(port, "/readyz", 200)
    assert metrics.value("jobqueue_ledger_backpressure", queue=queue) == 0


async def test_readyz_needs_a_fresh_heartbeat_from_the_worker(
    redis: Redis, settings: Settings, queue: str
) -> None:
    probe = probe_of(redis, settings, queue, worker="w1")
    heartbeat = f"{settings.namespace}:{{{queue}}}:hb:w1"

    missing = await probe.check()
    await redis.set(heartbeat, "1", px=settings.heartbeat_interval_ms // 2)
    expiring = await probe.check()
    await redis.set(heartbeat, "1", px=settings.heartbeat_ttl_ms)
    fresh = await probe.check()

    assert missing == f"no heartbeat on queue {queue}: not registered yet, or reaped"
    assert expiring is not None
    assert expiring.startswith(f"heartbeat on queue {queue} expires in ")
    assert fresh is None


async def test_readyz_says_so_when_redis_is_unreachable(settings: Settings, queue: str) -> None:
    nowhere = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    endpoint = await Endpoint(probe_of(nowhere, settings, queue), "127.0.0.1", 0).start()
    try:
        ready = await fetch(endpoint.port, "/readyz")
        scrape = await fetch(endpoint.port, "/metrics")
    finally:
        await endpoint.close()
        await nowhere.aclose()

    assert ready.status == 503
    assert ready.body.startswith("redis unreachable: ")
    assert scrape.status == 200, "metrics are served even without Redis"
    assert "jobqueue_redis_up 0.0" in scrape.body


async def test_a_shipper_serves_its_sink_and_fallback_gauges(
    jq: JobQueue, redis: Redis, served: Settings, queue: str, tmp_path: Path
) -> None:
    await jq.enqueue(queue, "noop", {})
    primary = DownSink(f"down-{queue}")
    sink = FallbackSink(primary, NdjsonSink(tmp_path, name="fallback"))
    shipper = Shipper(redis, served, sink, Scrubber(), [queue], consumer="test")
    port = served.metrics_port
    assert port is not None

    try:
        async with serve_shipper(shipper) as endpoint:
            assert endpoint is not None
            assert await shipper.ship_once(queue) == 1
            scrape = await fetch(port, "/metrics")
            ready = await fetch(port, "/readyz")
    finally:
        await sink.close()

    assert f'jobqueue_ledger_fallback_active{{sink="{primary.name}"}} 1.0' in scrape.body
    assert f'jobqueue_sink_up{{sink="{primary.name}"}} 0.0' in scrape.body
    assert f'jobqueue_ledger_events_shipped_total{{sink="{sink.name}"}} 1.0' in scrape.body
    assert (ready.status, ready.body) == (200, "ready\n")


async def test_without_a_metrics_port_nothing_is_served(
    redis: Redis, settings: Settings, queue: str, tmp_path: Path
) -> None:
    sink = NdjsonSink(tmp_path)
    shipper = Shipper(redis, settings, sink, Scrubber(), [queue], consumer="test")
    try:
        async with serve_shipper(shipper) as endpoint:
            assert endpoint is None
    finally:
        await sink.close()
