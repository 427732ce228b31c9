"""The S3 sink against a real S3 endpoint (moto's server over HTTP)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import pytest
from structlog.testing import capture_logs

from ledger.codec import to_avro_record, write_container
from ledger.event import JobEvent
from sinks.base import SinkUnavailable
from sinks.s3 import InvalidS3Settings, S3Reader, S3Sink, S3SinkSettings
from tests.servers import TEST_ACCESS_KEY, TEST_REGION, TEST_SECRET_KEY, MotoS3
from tests.sinks.conftest import BASE_TS_MS, EventFactory

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

pytestmark = pytest.mark.timeout(20)

BUCKET = "ledger-test"
LOCKED_BUCKET = "ledger-locked"
PREFIX = "ledger"

SinkFactory = Callable[..., S3Sink]


@pytest.fixture
def s3(s3_server: MotoS3) -> S3Client:
    """A client of the test endpoint, with a versioned bucket to write to."""
    client = s3_server.client()
    client.create_bucket(Bucket=BUCKET)
    client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    return client


@pytest.fixture
async def s3_sink_factory(s3_server: MotoS3) -> AsyncIterator[SinkFactory]:
    """Build sinks on the test endpoint; every sink built is closed after the test."""
    sinks: list[S3Sink] = []

    def build(**overrides: object) -> S3Sink:
        options: dict[str, object] = {
            "bucket": BUCKET,
            "prefix": PREFIX,
            "endpoint_url": s3_server.endpoint_url,
            "region_name": TEST_REGION,
            "aws_access_key_id": TEST_ACCESS_KEY,
            "aws_secret_access_key": TEST_SECRET_KEY,
            "write_timeout_s": 2.0,
        }
        options.update(overrides)
        sink = S3Sink(S3SinkSettings(**options))  # type: ignore[arg-type]
        sinks.append(sink)
        return sink

    yield build
    for sink in sinks:
        await sink.close()


def ordered(events: list[JobEvent]) -> list[JobEvent]:
    return sorted(events, key=lambda event: event.order_key)


async def test_a_batch_lands_under_deterministic_keys_split_by_queue_and_hour(
    s3: S3Client, s3_sink_factory: SinkFactory, make_events: EventFactory
) -> None:
    """One object per queue and UTC hour, named by its first and last stream ids."""
    across_the_hour = make_events(start_ms=BASE_TS_MS - 2)
    other_queue = make_events(queue="sms")

    await s3_sink_factory().write(across_the_hour + other_queue)

    reader = S3Reader(s3)
    assert reader.list_objects(BUCKET, PREFIX) == [
        "ledger/queue=emails/date=2025-12-03/hour=11/1764763199998-0_1764763199999-2.avro",
        "ledger/queue=emails/date=2025-12-03/hour=12/1764763200000-0_1764763200001-2.avro",
        "ledger/queue=sms/date=2025-12-03/hour=12/1764763200000-0_1764763200003-2.avro",
    ]
    result = reader.read_events(BUCKET, PREFIX)
    assert result.damaged == []
    assert ordered(result.events) == ordered(across_the_hour + other_queue)


async def test_objects_carry_a_sha256_checksum_of_their_body(
    s3: S3Client, s3_sink_factory: SinkFactory, make_events: EventFactory
) -> None:
    """The PUT sends a SHA-256 checksum, which S3 verifies and keeps with the object."""
    await s3_sink_factory().write(make_events())

    (key,) = S3Reader(s3).list_objects(BUCKET, PREFIX)
    body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    head = s3.head_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(body).digest()).decode()


async def test_writing_the_same_batch_again_succeeds_without_overwriting(
    s3: S3Client, s3_sink_factory: SinkFactory, make_events: EventFactory
) -> None:
    """A re-delivered batch finds its object in place and leaves it alone (one version)."""
    batch = make_events()
    await s3_sink_factory().write(batch)
    (key,) = S3Reader(s3).list_objects(BUCKET, PREFIX)
    first = s3.head_object(Bucket=BUCKET, Key=key)

    await s3_sink_factory().write(batch)

    versions = s3.list_object_versions(Bucket=BUCKET, Prefix=PREFIX)["Versions"]
    assert [version["Key"] for version in versions] == [key]
    assert s3.head_object(Bucket=BUCKET, Key=key)["ETag"] == first["ETag"]


async def test_a_different_batch_at_the_same_key_is_written_beside_it_with_a_warning(
    s3: S3Client, s3_sink_factory: SinkFactory, make_events: EventFactory
) -> None:
    """Two batches over the same stream ids but with other events both survive."""
    batch = make_events()
    other = make_events(payload='{"to": "someone-else@example.org"}')
    sink = s3_sink_factory()
    await sink.write(batch)

    with capture_logs() as logs:
        await sink.write(other)

    keys = S3Reader(s3).list_objects(BUCKET, PREFIX)
    original = "ledger/queue=emails/date=2025-12-03/hour=12/1764763200000-0_1764763200003-2.avro"
    assert original in keys
    (beside,) = set(keys) - {original}
    assert beside.startswith(original.removesuffix(".avro") + "-")
    assert S3Reader(s3).read_object(BUCKET, original) == (batch, None)
    assert S3Reader(s3).read_object(BUCKET, beside) == (other, None)
    assert [log["event"] for log in logs if log["log_level"] == "warning"] == ["s3_object_conflict"]


@pytest.mark.parametrize(
    ("sse", "kms_key_id"), [("AES256", None), ("aws:kms", "alias/ledger")], ids=["s3", "kms"]
)
async def test_the_encryption_setting_reaches_the_stored_object(
    s3: S3Client,
    s3_sink_factory: SinkFactory,
    make_events: EventFactory,
    sse: str,
    kms_key_id: str | None,
) -> None:
    """Server-side encryption (and the KMS key) is requested on every PUT."""
    await s3_sink_factory(sse=sse, kms_key_id=kms_key_id).write(make_events())

    (key,) = S3Reader(s3).list_objects(BUCKET, PREFIX)
    head = s3.head_object(Bucket=BUCKET, Key=key)
    assert head["ServerSideEncryption"] == sse
    assert head.get("SSEKMSKeyId") == kms_key_id


async def test_object_lock_retention_is_set_on_a_bucket_created_with_object_lock(
    s3: S3Client, s3_sink_factory: SinkFactory, make_events: EventFactory
) -> None:
    """Each object is retained in the configured mode until now plus the configured days."""
    s3.create_bucket(Bucket=LOCKED_BUCKET, ObjectLockEnabledForBucket=True)
    sink = s3_sink_factory(
        bucket=LOCKED_BUCKET, object_lock_mode="GOVERNANCE", object_lock_retain_days=7
    )
    before = dt.datetime.now(dt.UTC)

    await sink.write(make_events())

    (key,) = S3Reader(s3).list_objects(LOCKED_BUCKET, PREFIX)
    head = s3.head_object(Bucket=LOCKED_BUCKET, Key=key)
    assert head["ObjectLockMode"] == "GOVERNANCE"
    retained_days = (head["ObjectLockRetainUntilDate"] - before) / dt.timedelta(days=1)
    assert 6.9 < retained_days < 7.1


async def test_a_stopped_endpoint_makes_write_raise_sink_unavailable(
    s3: S3Client, s3_server: MotoS3, s3_sink_factory: SinkFactory, make_events: EventFactory
) -> None:
    """Once the endpoint is gone, a write raises instead of retrying without end."""
    sink = s3_sink_factory()
    await sink.write(make_events())

    s3_server.stop()

    with pytest.raises(SinkUnavailable, match="s3"):
        await sink.write(make_events(queue="later"))


async def test_a_frozen_endpoint_makes_write_raise_sink_unavailable(
    s3: S3Client, s3_server: MotoS3, s3_sink_factory: SinkFactory, make_events: EventFactory
) -> None:
    """An endpoint that accepts connections but never answers is cut off by the deadline."""
    sink = s3_sink_factory(write_timeout_s=1.0)

    s3_server.pause()
    try:
        with pytest.raises(SinkUnavailable, match="s3"):
            await sink.write(make_events())
    finally:
        s3_server.resume()


async def test_the_reader_reports_a_truncated_object_by_key_and_keeps_what_came_before(
    s3: S3Client, s3_sink_factory: SinkFactory, make_events: EventFactory
) -> None:
    """A damaged object is reported with its key and event count; other objects still read."""
    good = make_events(queue="good")
    await s3_sink_factory().write(good)
    damaged = make_events(queue="damaged", jobs=tuple(f"job-{n}" for n in range(40)))
    body = write_container((to_avro_record(e) for e in damaged), block_size_bytes=500)
    damaged_key = f"{PREFIX}/queue=damaged/cut.avro"
    s3.put_object(Bucket=BUCKET, Key=damaged_key, Body=body[: len(body) * 2 // 3])

    result = S3Reader(s3).read_events(BUCKET, PREFIX)

    (report,) = result.damaged
    assert report.key == damaged_key
    assert 0 < report.events_read < len(damaged)
    assert ordered(result.events) == ordered(damaged[: report.events_read] + good)


def test_settings_refuse_a_kms_key_without_kms_encryption() -> None:
    """A KMS key id with AES256 (or no) encryption is a configuration mistake."""
    with pytest.raises(InvalidS3Settings, match="kms_key_id"):
        S3SinkSettings(bucket=BUCKET, sse="AES256", kms_key_id="alias/ledger")


def test_settings_refuse_an_object_lock_mode_without_retention() -> None:
    """Object lock needs both a mode and a retention period."""
    with pytest.raises(InvalidS3Settings, match="together"):
        S3SinkSettings(bucket=BUCKET, object_lock_mode="COMPLIANCE")
