"""Fixtures of the sink tests: a real Kafka-compatible broker, a real S3 endpoint, events."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ledger.event import JobEvent
from tests.servers import KafkaBroker, MotoS3, ServerBinaryMissing, ServerProcess

# Noon UTC on 3 December 2025: far from an hour boundary unless a test crosses one.
BASE_TS_MS = 1_764_763_200_000
TOPIC = "ledger-events"
TOPIC_PARTITIONS = 3

EventFactory = Callable[..., list[JobEvent]]


def start_or_fail(server: ServerProcess) -> None:
    """Start a test server; a missing binary fails the test with the package to install."""
    try:
        server.start()
    except ServerBinaryMissing as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def kafka_broker(tmp_path: Path) -> Iterator[KafkaBroker]:
    """A fresh tansu broker per test: it starts in milliseconds and tests stop it at will."""
    broker = KafkaBroker(tmp_path / "tansu")
    start_or_fail(broker)
    try:
        yield broker
    finally:
        broker.kill()  # memory storage has nothing to save, and SIGTERM takes half a second


@pytest.fixture
def kafka_topic(kafka_broker: KafkaBroker) -> str:
    """A topic with several partitions, so that keying by job id is visible."""
    kafka_broker.create_topic(TOPIC, TOPIC_PARTITIONS)
    return TOPIC


@pytest.fixture(scope="module")
def moto_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    """One moto process per test module (it takes most of a second to start)."""
    server = MotoS3(tmp_path_factory.mktemp("moto"))
    start_or_fail(server)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_server(moto_process: MotoS3) -> MotoS3:
    """A running S3 endpoint with no buckets, started again if a previous test stopped it."""
    if not moto_process.running:
        start_or_fail(moto_process)
    moto_process.reset()
    return moto_process


@pytest.fixture
def make_events() -> EventFactory:
    """Build a batch: for each job, enqueued, claimed and acked, in stream order."""
    return build_events


def build_events(
    queue: str = "emails",
    jobs: tuple[str, ...] = ("job-1", "job-2", "job-3"),
    *,
    start_ms: int = BASE_TS_MS,
    step_ms: int = 1,
    payload: str = '{"to": "someone@example.org"}',
) -> list[JobEvent]:
    """One worker registration, then enqueued/claimed/acked per job, interleaved by job."""
    events = [
        JobEvent(queue=queue, stream_id=f"{start_ms}-0", type="worker_registered", ts_ms=start_ms)
    ]
    steps: tuple[dict[str, object], ...] = (
        {"type": "enqueued", "payload": payload, "lane": "default", "task": "send_email"},
        {"type": "claimed", "worker": "w-1", "token": 1, "attempt": 1},
        {"type": "acked", "worker": "w-1", "attempt": 1, "attributes": {"duration_ms": "12"}},
    )
    for round_no, fields in enumerate(steps, start=1):
        for job_no, job_id in enumerate(jobs):
            ts_ms = start_ms + step_ms * round_no
            stream_id = f"{ts_ms}-{job_no}"
            events.append(
                _event(
                    queue, stream_id, ts_ms=ts_ms, job_id=job_id, seq=round_no, fields=dict(fields)
                )
            )
    return events


def _event(
    queue: str, stream_id: str, *, ts_ms: int, job_id: str, seq: int, fields: dict[str, object]
) -> JobEvent:
    attributes = fields.pop("attributes", {})
    assert isinstance(attributes, dict)
    return JobEvent(
        queue=queue,
        stream_id=stream_id,
        ts_ms=ts_ms,
        job_id=job_id,
        seq=seq,
        trace_id=f"trace-{job_id}",
        attributes={str(k): str(v) for k, v in attributes.items()},
        **fields,  # type: ignore[arg-type]
    )
