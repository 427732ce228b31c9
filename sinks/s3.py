"""S3 sink: each batch becomes Avro container files under time-partitioned, deterministic keys.

A batch is split by queue and by hour of the event time (UTC), and each part is written as
one deflate-compressed container file at

    <prefix>/queue=<queue>/date=YYYY-MM-DD/hour=HH/<first stream id>_<last stream id>.avro

Writes are conditional (`If-None-Match: *`), so nothing is ever overwritten. When a key
exists already, the events are compared, not the bytes (a container carries a random sync
marker, so the same events never encode to the same file twice): each object stores the
SHA-256 of its events' single-object encodings in its `ledger-digest` metadata. The same
events mean a shipper re-delivered a batch that was already written: success. Different
events at the same key mean two shippers cut different batches over the same range, which
is allowed (batches are not guaranteed to be deterministic), so the batch is written beside
it, under the key with its digest appended, and a warning is logged. Readers dedupe by
event id.

boto3 is synchronous: each call runs in a worker thread, with its connect and read timeouts
and its retries sized to the write deadline, and the whole write bounded by
`write_timeout_s`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import boto3
import structlog
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ledger.codec import (
    FINGERPRINT,
    encode_event,
    from_avro_record,
    read_container,
    to_avro_record,
    write_container,
)
from ledger.errors import LedgerError
from ledger.event import JobEvent
from sinks.base import (
    DEFAULT_CLOSE_TIMEOUT_S,
    DEFAULT_WRITE_TIMEOUT_S,
    Sink,
    SinkError,
    SinkUnavailable,
    bounded,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import PutObjectRequestTypeDef

log = structlog.get_logger(__name__)

DIGEST_METADATA = "ledger-digest"
COUNT_METADATA = "ledger-events"
FINGERPRINT_METADATA = "schema-fingerprint"
CONTENT_TYPE = "application/avro"
SUFFIX_DIGEST_CHARS = 16
MAX_ATTEMPTS = 2
HOUR_MS = 3_600_000

ObjectLockMode = Literal["GOVERNANCE", "COMPLIANCE"]
Encryption = Literal["AES256", "aws:kms"]


class InvalidS3Settings(SinkError):
    """Raised when S3 sink settings contradict each other."""


class ObjectConflict(SinkError):
    """Raised when a content-addressed key holds other events than the ones it names."""


@dataclass(frozen=True, slots=True)
class S3SinkSettings:
    """Where and how the S3 sink writes; unset credentials come from boto3's usual chain."""

    bucket: str
    prefix: str = "ledger"
    endpoint_url: str | None = None
    region_name: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = field(default=None, repr=False)
    aws_session_token: str | None = field(default=None, repr=False)
    sse: Encryption | None = None
    kms_key_id: str | None = None
    object_lock_mode: ObjectLockMode | None = None
    object_lock_retain_days: int | None = None
    write_timeout_s: float = DEFAULT_WRITE_TIMEOUT_S
    close_timeout_s: float = DEFAULT_CLOSE_TIMEOUT_S

    def __post_init__(self) -> None:
        if self.kms_key_id is not None and self.sse != "aws:kms":
            msg = f"kms_key_id is set but sse is {self.sse!r}; it needs sse='aws:kms'"
            raise InvalidS3Settings(msg)
        if (self.object_lock_mode is None) != (self.object_lock_retain_days is None):
            msg = "object_lock_mode and object_lock_retain_days must be set together"
            raise InvalidS3Settings(msg)
        if self.object_lock_retain_days is not None and self.object_lock_retain_days < 1:
            msg = f"object_lock_retain_days must be at least 1, not {self.object_lock_retain_days}"
            raise InvalidS3Settings(msg)


def make_client(settings: S3SinkSettings) -> S3Client:
    """A boto3 S3 client whose every call gives up within about the write deadline."""
    # Two attempts, each with half the budget to connect and half to read, keeps boto's own
    # retrying inside `write_timeout_s`; `bounded` cuts off whatever is left.
    step_s = settings.write_timeout_s / (2 * MAX_ATTEMPTS)
    config = Config(
        connect_timeout=step_s,
        read_timeout=step_s,
        retries={"total_max_attempts": MAX_ATTEMPTS, "mode": "standard"},
    )
    return boto3.client(
        "s3",
        endpoint_url=settings.endpoint_url,
        region_name=settings.region_name,
        aws_access_key_id=settings.aws_access_key_id,
        aws_secret_access_key=settings.aws_secret_access_key,
        aws_session_token=settings.aws_session_token,
        config=config,
    )


def events_digest(events: Iterable[JobEvent]) -> str:
    """SHA-256 (hex) of the events' single-object encodings, in order: what an object holds."""
    digest = hashlib.sha256()
    for event in events:
        digest.update(encode_event(event))
    return digest.hexdigest()


def object_key(prefix: str, events: Sequence[JobEvent]) -> str:
    """The deterministic key of one queue's events of one hour (time of the first event).

    The queue name is percent-encoded, so that a `/` or `=` in it cannot add a level.
    """
    first, last = events[0], events[-1]
    hour = dt.datetime.fromtimestamp(first.ts_ms / 1000, dt.UTC)
    queue = urllib.parse.quote(first.queue, safe="")
    path = (
        f"queue={queue}/date={hour:%Y-%m-%d}/hour={hour:%H}/{first.stream_id}_{last.stream_id}.avro"
    )
    return f"{prefix.strip('/')}/{path}" if prefix.strip("/") else path


def conflict_key(key: str, digest: str) -> str:
    """Where a batch goes when its deterministic key holds other events."""
    return f"{key.removesuffix('.avro')}-{digest[:SUFFIX_DIGEST_CHARS]}.avro"


def group_events(batch: Iterable[JobEvent]) -> list[list[JobEvent]]:
    """Split a batch by queue and hour of event time, each part in stream order."""
    groups: dict[tuple[str, int], list[JobEvent]] = {}
    for event in batch:
        groups.setdefault((event.queue, event.ts_ms // HOUR_MS), []).append(event)
    return [sorted(events, key=lambda event: event.order_key) for events in groups.values()]


@dataclass(frozen=True, slots=True)
class _Part:
    """One object to write: its key, its events and their digest."""

    key: str
    events: Sequence[JobEvent]
    digest: str


class S3Sink(Sink):
    """Writes each batch as Avro container files, never overwriting an object."""

    name = "s3"

    def __init__(self, settings: S3SinkSettings, client: S3Client | None = None) -> None:
        self.settings = settings
        self.write_timeout_s = settings.write_timeout_s
        self.close_timeout_s = settings.close_timeout_s
        self._client = client if client is not None else make_client(settings)

    async def write(self, batch: Sequence[JobEvent]) -> None:
        """Write every part of the batch durably, or raise `SinkUnavailable`."""
        if not batch:
            return
        writing = asyncio.to_thread(self._write_groups, group_events(batch))
        await bounded(self.name, writing, self.write_timeout_s)

    async def close(self) -> None:
        """Close the client's connection pool (a local operation: it cannot hang)."""
        self._client.close()

    def _part(self, events: Sequence[JobEvent]) -> _Part:
        key = object_key(self.settings.prefix, events)
        return _Part(key=key, events=events, digest=events_digest(events))

    def _write_groups(self, groups: Iterable[Sequence[JobEvent]]) -> None:
        for part in map(self._part, groups):
            try:
                self._write_part(part)
            except (BotoCoreError, ClientError) as exc:
                msg = f"s3 bucket {self.settings.bucket} refused {part.key}: {exc}"
                raise SinkUnavailable(msg) from exc

    def _write_part(self, part: _Part) -> None:
        body = write_container(to_avro_record(event) for event in part.events)
        if self._put_new(part.key, body, part) or self._holds(part.key, part.digest):
            return

        other_key = conflict_key(part.key, part.digest)
        log.warning(
            "s3_object_conflict",
            bucket=self.settings.bucket,
            key=part.key,
            events=len(part.events),
            next_step=f"writing the batch beside it as {other_key}",
        )
        if self._put_new(other_key, body, part) or self._holds(other_key, part.digest):
            return

        msg = f"s3 object {other_key} is named by a digest of events it does not hold"
        raise ObjectConflict(msg)

    def _put_new(self, key: str, body: bytes, part: _Part) -> bool:
        """Create the object; False if the key exists already (S3 answered 412)."""
        try:
            self._client.put_object(**self._put_request(key, body, part))
        except ClientError as exc:
            if _status(exc) == 412:
                return False
            raise

        log.debug("s3_object_written", bucket=self.settings.bucket, key=key)
        return True

    def _put_request(self, key: str, body: bytes, part: _Part) -> PutObjectRequestTypeDef:
        settings = self.settings
        request: PutObjectRequestTypeDef = {
            "Bucket": settings.bucket,
            "Key": key,
            "Body": body,
            "IfNoneMatch": "*",
            "ChecksumAlgorithm": "SHA256",
            "ContentType": CONTENT_TYPE,
            "Metadata": {
                DIGEST_METADATA: part.digest,
                COUNT_METADATA: str(len(part.events)),
                FINGERPRINT_METADATA: FINGERPRINT.hex(),
            },
        }
        if settings.sse is not None:
            request["ServerSideEncryption"] = settings.sse
        if settings.kms_key_id is not None:
            request["SSEKMSKeyId"] = settings.kms_key_id
        if settings.object_lock_mode is not None and settings.object_lock_retain_days:
            retain = dt.timedelta(days=settings.object_lock_retain_days)
            request["ObjectLockMode"] = settings.object_lock_mode
            request["ObjectLockRetainUntilDate"] = dt.datetime.now(dt.UTC) + retain
        return request

    def _holds(self, key: str, digest: str) -> bool:
        """Whether the stored object holds exactly the events whose digest is given."""
        head = self._client.head_object(Bucket=self.settings.bucket, Key=key)
        stored = head.get("Metadata", {}).get(DIGEST_METADATA)
        if stored is not None:
            return stored == digest

        # Written by something else than this sink: compare the events themselves.
        reader = S3Reader(self._client)
        events, damage = reader.read_object(self.settings.bucket, key)
        return damage is None and events_digest(events) == digest


def _status(exc: ClientError) -> int | None:
    status: int | None = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status


@dataclass(frozen=True, slots=True)
class DamagedObject:
    """An object that could not be read to its end, and how many events came before."""

    key: str
    events_read: int
    error: str


@dataclass(slots=True)
class S3ReadResult:
    """What a read found: the events in key order, and the objects that were damaged."""

    events: list[JobEvent] = field(default_factory=list)
    damaged: list[DamagedObject] = field(default_factory=list)


class S3Reader:
    """Reads back what the S3 sink wrote, for tests and the replay tool (synchronous)."""

    def __init__(self, client: S3Client) -> None:
        self._client = client

    @classmethod
    def from_settings(cls, settings: S3SinkSettings) -> S3Reader:
        return cls(make_client(settings))

    def list_objects(self, bucket: str, prefix: str) -> list[str]:
        """Every key that starts with `prefix` (a plain string prefix), in key order."""
        paginator = self._client.get_paginator("list_objects_v2")
        keys = [
            item["Key"]
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
            for item in page.get("Contents", [])
        ]
        return sorted(keys)

    def read_events(self, bucket: str, prefix: str) -> S3ReadResult:
        """The events of every `.avro` object under `prefix`; damage is reported, not raised."""
        result = S3ReadResult()
        for key in self.list_objects(bucket, prefix):
            if not key.endswith(".avro"):
                continue
            events, damage = self.read_object(bucket, key)
            result.events.extend(events)
            if damage is not None:
                result.damaged.append(damage)
        return result

    def read_object(self, bucket: str, key: str) -> tuple[list[JobEvent], DamagedObject | None]:
        """The events of one object, and what went wrong if it could not be read to its end."""
        body = self._client.get_object(Bucket=bucket, Key=key)["Body"].read()
        events: list[JobEvent] = []
        try:
            events.extend(from_avro_record(record) for record in read_container(body))
        except (LedgerError, ValueError, TypeError) as exc:
            return events, self._damaged(bucket, key, events, exc)
        return events, None

    def _damaged(
        self, bucket: str, key: str, events: list[JobEvent], exc: Exception
    ) -> DamagedObject:
        count = len(events)
        log.warning(
            "s3_object_damaged",
            bucket=bucket,
            key=key,
            events_read=count,
            error=repr(exc),
            next_step="keeping the events read before the damage",
        )
        return DamagedObject(key=key, events_read=count, error=repr(exc))
