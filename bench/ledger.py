"""The ledger: how fast a shipper moves real outbox events to each sink, and what the PII
scrubber costs per event.

The Kafka broker (tansu) and the S3 endpoint (moto) are the test suite's servers from
tests/servers.py, started here in the benchmark's temporary folder and stopped after their
row. The ledger's cost to job throughput is measured by the e2e section (its c=32
subprocess rows with and without `ledger_ship_in_worker`).
"""

from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

from bench.harness import FILL_BATCH, KEYS, QUEUE, Bench, Row
from engine.ops import AckItem, WorkerOps
from engine.queue import JobSpec
from ledger.event import JobEvent
from ledger.shipper import Shipper
from sinks.base import Sink
from sinks.kafka import KafkaSink, KafkaSinkSettings
from sinks.ndjson import FsyncPolicy, NdjsonSink
from sinks.s3 import S3Sink, S3SinkSettings
from sinks.scrub import Scrubber
from tests.servers import TEST_ACCESS_KEY, TEST_REGION, TEST_SECRET_KEY, KafkaBroker, MotoS3

SHIP_BATCH = 500  # the shipper's batch_size
CLAIM_BATCH = 100  # jobs claimed and acked per call while making the events
EVENTS_PER_JOB = 3  # enqueued, claimed, acked
MAX_FAILED_STEPS = 3  # sink failures tolerated before a row is given up
SCRUB_RUNS = 5  # the best of these runs is reported
TOPIC = "jobqueue-ledger"
KAFKA_PARTITIONS = 3
BUCKET = "jobqueue-ledger"
WARMUP = JobEvent(queue="bench-warmup", stream_id="0-1", type="worker_registered", ts_ms=0)

# The scrubber's samples: an order confirmation whose payload holds personal data, and
# the text of a failed delivery.
ORDER_PAYLOAD = {
    "order_id": "ord_8f3a2c91",
    "customer_email": "jane.doe@example.com",
    "customer_name": "Jane Doe",
    "phone": "+1 415 555 0100",
    "shipping_address": "1 Market St, San Francisco, CA 94105",
    "card_number": "4111 1111 1111 1111",
    "client_ip": "203.0.113.7",
    "amount_cents": 4599,
    "currency": "USD",
    "items": ["sku-1042", "sku-2210"],
    "notes": "leave at the door",
    "created_at": "2025-06-01T12:00:00Z",
    "locale": "en-US",
}
FAILURE_TEXT = (
    "SMTPRecipientsRefused: {'jane.doe@example.com': (550, b'5.1.1 mailbox unavailable')} "
    "from relay 203.0.113.25 after 2.4 s; the receipt for order ord_8f3a2c91 was not sent"
)

SinkFactory = Callable[[Path], AbstractAsyncContextManager[Sink]]
Server = TypeVar("Server", KafkaBroker, MotoS3)


async def bench_ledger(b: Bench) -> list[Row]:
    rows = [
        await _shipping_row(b, "ndjson, fsync=batch", _ndjson("batch")),
        await _shipping_row(b, "ndjson, fsync=interval", _ndjson("interval")),
        await _shipping_row(b, f"kafka (tansu, {KAFKA_PARTITIONS} partitions)", _kafka),
        await _shipping_row(b, "s3 (moto server)", _s3),
    ]
    return rows + await _scrub_rows(b)


# -- shipping ------------------------------------------------------------------------


async def _shipping_row(b: Bench, label: str, sink_in: SinkFactory) -> Row:
    """Fill the outbox with real events, then time a shipper until the stream is empty."""
    await b.fresh()
    events = await _fill_outbox(b, b.sizes.ledger_events // EVENTS_PER_JOB)
    async with sink_in(b.folder) as sink:
        await sink.write([WARMUP])  # connections and files are opened outside the clock
        shipper = Shipper(b.admin, b.settings, sink, Scrubber(), [QUEUE],
                          consumer="bench-shipper", batch_size=SHIP_BATCH)  # fmt: skip
        elapsed = await _ship_all(b, shipper)

    left = await b.admin.xlen(KEYS.events)
    note = (f"n={events:,} events; batches of {SHIP_BATCH}, scrubbed; "
            f"{shipper.shipped.total():,} shipped, stream left {left}")  # fmt: skip
    return Row("ledger", f"shipped to {label}", f"{events / elapsed:,.0f} events/s", note=note)


async def _fill_outbox(b: Bench, jobs: int) -> int:
    """Enqueue `jobs` jobs, claim and ack them all; returns the events in the stream."""
    jq = b.job_queue()
    for start in range(0, jobs, FILL_BATCH):
        size = min(FILL_BATCH, jobs - start)
        specs = [JobSpec("noop", _small_payload(start + i)) for i in range(size)]
        await jq.enqueue_many(QUEUE, specs)

    ops = WorkerOps(jq.scripts, QUEUE, "bench-ledger", b.settings)
    await ops.register({"host": platform.node(), "pid": str(os.getpid())})
    while claimed := (await ops.claim(CLAIM_BATCH)).jobs:
        await ops.ack([AckItem(job.id, job.token) for job in claimed])
    await jq.close()
    return int(await b.admin.xlen(KEYS.events))


def _small_payload(n: int) -> dict[str, Any]:
    return {"n": n, "to": f"user{n}@example.com", "template": "welcome"}


async def _ship_all(b: Bench, shipper: Shipper) -> float:
    """`ship_once` until the stream is empty; the seconds that took."""
    started = time.perf_counter()
    while await shipper.ship_once(QUEUE) or await b.admin.xlen(KEYS.events):
        if shipper.errors.total() > MAX_FAILED_STEPS:
            msg = f"shipping to {shipper.sink.name} failed: {dict(shipper.errors)}"
            raise RuntimeError(msg)
    return time.perf_counter() - started


def _ndjson(fsync: FsyncPolicy) -> SinkFactory:
    @asynccontextmanager
    async def ndjson(folder: Path) -> AsyncIterator[Sink]:
        sink = NdjsonSink(folder / f"ndjson-{fsync}", fsync=fsync)
        try:
            yield sink
        finally:
            await sink.close()

    return ndjson


@asynccontextmanager
async def _kafka(folder: Path) -> AsyncIterator[Sink]:
    with _running(KafkaBroker(folder / "tansu")) as broker:
        broker.create_topic(TOPIC, KAFKA_PARTITIONS)
        sink = KafkaSink(KafkaSinkSettings(broker.bootstrap_servers, TOPIC))
        try:
            yield sink
        finally:
            await sink.close()


@asynccontextmanager
async def _s3(folder: Path) -> AsyncIterator[Sink]:
    with _running(MotoS3(folder / "moto")) as server:
        server.client().create_bucket(Bucket=BUCKET)
        settings = S3SinkSettings(
            bucket=BUCKET,
            endpoint_url=server.endpoint_url,
            region_name=TEST_REGION,
            aws_access_key_id=TEST_ACCESS_KEY,
            aws_secret_access_key=TEST_SECRET_KEY,
        )
        sink = S3Sink(settings)
        try:
            yield sink
        finally:
            await sink.close()


@contextmanager
def _running(server: Server) -> Iterator[Server]:
    """The server, started, and stopped on the way out whatever happened."""
    try:
        with _quiet("aiokafka"):  # the broker's readiness probes log each refused connection
            server.start()
        yield server
    finally:
        server.stop()


@contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


# -- scrubbing -----------------------------------------------------------------------


async def _scrub_rows(b: Bench) -> list[Row]:
    enqueued, failed, acked = await _sample_events(b)
    samples = [
        ("enqueued, 13-field payload with PII", enqueued),
        ("failed, error text with PII", failed),
        ("acked, nothing to scrub", acked),
    ]
    return [_scrub_row(label, event, b.sizes.scrub_events) for label, event in samples]


async def _sample_events(b: Bench) -> tuple[JobEvent, JobEvent, JobEvent]:
    """Real outbox events: one job enqueued, claimed and failed, another one acked."""
    await b.fresh()
    jq = b.job_queue()
    ops = WorkerOps(jq.scripts, QUEUE, "bench-scrub", b.settings)
    await ops.register({"host": platform.node()})
    await jq.enqueue(QUEUE, "send_receipt", ORDER_PAYLOAD)
    (job,) = (await ops.claim(1)).jobs
    await ops.fail(job, FAILURE_TEXT, retryable=False)
    await jq.enqueue(QUEUE, "noop", {"n": 1})
    (job,) = (await ops.claim(1)).jobs
    await ops.ack([AckItem(job.id, job.token)])
    await jq.close()

    entries: Any = await b.admin.xrange(KEYS.events)  # redis-py types it loosely
    events = [JobEvent.from_stream(QUEUE, entry_id, fields) for entry_id, fields in entries]
    first = {event.type: event for event in reversed(events)}
    return first["enqueued"], first["failed"], first["acked"]


def _scrub_row(label: str, event: JobEvent, n: int) -> Row:
    scrubber = Scrubber()
    best_s = min(_time_scrubs(scrubber, event, n) for _ in range(SCRUB_RUNS))
    scrubbed = scrubber.scrub(event)
    redacted = f"{scrubbed.payload}{scrubbed.error}".count("[REDACTED:")
    note = f"best of {SCRUB_RUNS} runs of {n:,} events; {redacted} values redacted"
    return Row("ledger", f"scrub: {label}", f"{best_s / n * 1e6:.1f} us/event", note=note)


def _time_scrubs(scrubber: Scrubber, event: JobEvent, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        scrubber.scrub(event)
    return time.perf_counter() - started
