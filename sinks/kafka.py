"""Kafka sink: one Avro record per event, keyed by job id, so a job's events share a partition.

A record's value is the event's Avro single-object encoding; its headers name the schema
fingerprint, the event type and the event id, so a consumer can route or dedupe without
decoding; its timestamp is the event's server time, which is what a read "from a time"
seeks by.

aiokafka can wait without end on `start`, `send` and `stop` when the broker is gone or
frozen. A write is therefore bounded from outside by `write_timeout_s`, and aiokafka's own
`request_timeout_ms` is set to the same budget so that what it left pending (queued batches,
in-flight requests) expires soon after. A producer that failed is never reused: it is
stopped in the background and a new one is started by the next write.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.helpers import create_ssl_context

from ledger.codec import FINGERPRINT, decode_event, encode_event
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

log = structlog.get_logger(__name__)

DEFAULT_READ_TIMEOUT_S = 30.0
COMPRESSION = "gzip"  # lz4 and zstd would need extra wheels; gzip is in the standard library
RETRY_BACKOFF_MS = 100
READ_POLL_MS = 200

HEADER_FINGERPRINT = "schema-fingerprint"
HEADER_EVENT_TYPE = "event-type"
HEADER_EVENT_ID = "event-id"


class TopicNotFound(SinkError):
    """Raised when a topic to read does not exist on the broker."""


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """How to authenticate to the brokers; passed through to aiokafka as given.

    Only PLAINTEXT is exercised by the tests so far: the SSL and SASL options are wired
    but untested until a broker with TLS and SASL users runs in the suite.
    """

    protocol: str = "PLAINTEXT"  # PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL
    sasl_mechanism: str | None = None  # PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    def client_options(self) -> dict[str, Any]:
        """The keyword arguments that carry these settings to an aiokafka client."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.sasl_mechanism is not None:
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = self.sasl_password

        context = self._ssl_context()
        if context is not None:
            options["ssl_context"] = context
        return options

    def _ssl_context(self) -> ssl.SSLContext | None:
        files = (self.ssl_cafile, self.ssl_certfile, self.ssl_keyfile)
        if not self.protocol.endswith("SSL") and not any(files):
            return None
        context: ssl.SSLContext = create_ssl_context(
            cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile
        )
        return context


@dataclass(frozen=True, slots=True)
class KafkaSinkSettings:
    """Where and how the Kafka sink writes."""

    bootstrap_servers: str
    topic: str
    client_id: str = "jobqueue-ledger"
    # Off by default: tansu 0.6, the broker of the test suite, answers InitProducerId with an
    # error, so an idempotent producer cannot start there. Turn it on against Apache Kafka.
    # Without it a retried send may be stored twice; consumers dedupe by event id.
    enable_idempotence: bool = False
    security: KafkaSecurity = field(default_factory=KafkaSecurity)
    write_timeout_s: float = DEFAULT_WRITE_TIMEOUT_S
    close_timeout_s: float = DEFAULT_CLOSE_TIMEOUT_S


def record_key(event: JobEvent) -> bytes:
    """The partitioning key: the job id, or the queue for events that concern no job."""
    return (event.job_id or event.queue).encode()


def record_headers(event: JobEvent) -> list[tuple[str, bytes]]:
    """The headers a consumer can route and dedupe by without decoding the value."""
    return [
        (HEADER_FINGERPRINT, FINGERPRINT.hex().encode()),
        (HEADER_EVENT_TYPE, event.type.encode()),
        (HEADER_EVENT_ID, event.event_id.encode()),
    ]


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    """One event as a Kafka record: key, Avro value, headers, and the event time."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    timestamp_ms: int

    @classmethod
    def of(cls, event: JobEvent) -> OutgoingRecord:
        return cls(
            key=record_key(event),
            value=encode_event(event),
            headers=record_headers(event),
            timestamp_ms=event.ts_ms,
        )


class KafkaSink(Sink):
    """Writes each batch to one topic and returns once the brokers acknowledged every event."""

    name = "kafka"

    def __init__(self, settings: KafkaSinkSettings) -> None:
        self.settings = settings
        self.write_timeout_s = settings.write_timeout_s
        self.close_timeout_s = settings.close_timeout_s
        self._producer: AIOKafkaProducer | None = None
        self._stopping: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()

    async def write(self, batch: Sequence[JobEvent]) -> None:
        """Send every event and wait for all acknowledgements, or raise `SinkUnavailable`."""
        if not batch:
            return

        # Encoded first: a malformed event raises the codec's error and is no sink failure.
        records = [OutgoingRecord.of(event) for event in batch]
        try:
            await bounded(self.name, self._write_locked(records), self.write_timeout_s)
        except BaseException:
            # A failed or cancelled write leaves the producer in an unknown state.
            self._discard_producer()
            raise

        log.debug("kafka_batch_written", topic=self.settings.topic, events=len(batch))

    async def close(self) -> None:
        """Stop the producer; returns within `close_timeout_s` even when the broker is gone."""
        self._discard_producer()
        if not self._stopping:
            return

        _, pending = await asyncio.wait(self._stopping, timeout=self.close_timeout_s)
        if pending:
            log.warning(
                "kafka_producer_stop_pending",
                topic=self.settings.topic,
                timeout_s=self.close_timeout_s,
                next_step="returning now; its requests expire after write_timeout_s",
            )

    async def _write_locked(self, records: list[OutgoingRecord]) -> None:
        async with self._lock:
            try:
                await self._send_all(records)
            except KafkaError as exc:
                msg = f"kafka topic {self.settings.topic} refused the batch: {exc!r}"
                raise SinkUnavailable(msg) from exc

    async def _send_all(self, records: list[OutgoingRecord]) -> None:
        producer = await self._started_producer()

        deliveries = [await self._send(producer, record) for record in records]

        await _wait_delivered(deliveries)

    async def _send(
        self, producer: AIOKafkaProducer, record: OutgoingRecord
    ) -> asyncio.Future[Any]:
        delivery: asyncio.Future[Any] = await producer.send(
            self.settings.topic,
            value=record.value,
            key=record.key,
            headers=record.headers,
            timestamp_ms=record.timestamp_ms,
        )
        delivery.add_done_callback(_observe)
        return delivery

    async def _started_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            # Kept before `start` so that a failed start is stopped like any failed producer.
            self._producer = self._new_producer()
            await self._producer.start()
            log.info("kafka_producer_started", topic=self.settings.topic)
        return self._producer

    def _new_producer(self) -> AIOKafkaProducer:
        settings = self.settings
        return AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap_servers,
            client_id=settings.client_id,
            acks="all",
            enable_idempotence=settings.enable_idempotence,
            compression_type=COMPRESSION,
            request_timeout_ms=int(settings.write_timeout_s * 1000),
            retry_backoff_ms=RETRY_BACKOFF_MS,
            **settings.security.client_options(),
        )

    def _discard_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is None:
            return

        # Not cancelled on a deadline: a cancelled aiokafka `stop` leaves its sender task and
        # connections behind. It ends by itself once its requests time out.
        task = asyncio.create_task(self._stop(producer))
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def _stop(self, producer: AIOKafkaProducer) -> None:
        try:
            await producer.stop()
        except (KafkaError, OSError) as exc:
            log.info("kafka_producer_stop_failed", topic=self.settings.topic, error=repr(exc))


async def _wait_delivered(deliveries: list[asyncio.Future[Any]]) -> None:
    # asyncio.wait, unlike gather, leaves the futures alone when this wait is cancelled.
    await asyncio.wait(deliveries)
    for delivery in deliveries:
        error = delivery.exception()
        if error is not None:
            raise error


def _observe(delivery: asyncio.Future[Any]) -> None:
    """Mark a delivery's error as seen: the write that awaited it may have given up already."""
    if not delivery.cancelled():
        delivery.exception()


async def read_topic(
    bootstrap: str,
    topic: str,
    *,
    from_ts_ms: int | None = None,
    timeout_s: float = DEFAULT_READ_TIMEOUT_S,
    security: KafkaSecurity | None = None,
) -> list[JobEvent]:
    """Read every event of a topic, across partitions, up to the end offsets seen at start.

    Events come partition by partition, each in offset order (so one job's events are in
    order). Reading stops once every partition's position has reached the end offset it had
    at the start; records fetched in the same batches past it are kept. That also reads
    tansu 0.6 to the end, which reports as end offset the last record batch's base offset
    plus one rather than its last offset plus one.

    With `from_ts_ms`, each partition starts at the first record at or after that time and
    earlier events are dropped: tansu 0.6 answers the time lookup with the first offset
    whatever the time, so the filter, not the seek, is what guarantees the result.

    Records that do not decode are logged and skipped. Raises `SinkUnavailable` if the read
    does not finish within `timeout_s`, and `TopicNotFound` for a missing topic.
    """
    options = (security or KafkaSecurity()).client_options()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        request_timeout_ms=int(timeout_s * 1000),
        retry_backoff_ms=RETRY_BACKOFF_MS,
        **options,
    )
    try:
        return await asyncio.wait_for(_read_all(consumer, topic, from_ts_ms), timeout_s)
    except TimeoutError as exc:
        msg = f"kafka topic {topic} was not read to its end within {timeout_s:g}s"
        raise SinkUnavailable(msg) from exc
    finally:
        await consumer.stop()


async def _read_all(
    consumer: AIOKafkaConsumer, topic: str, from_ts_ms: int | None
) -> list[JobEvent]:
    try:
        await consumer.start()
        partitions = await _partitions(consumer, topic)
        records = await _fetch_to_end(consumer, partitions, from_ts_ms)
    except (KafkaError, OSError) as exc:
        msg = f"kafka topic {topic} could not be read: {exc!r}"
        raise SinkUnavailable(msg) from exc

    events = (_decode(record) for record in records)
    return [
        event
        for event in events
        if event is not None and (from_ts_ms is None or event.ts_ms >= from_ts_ms)
    ]


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    if topic not in await consumer.topics():
        msg = f"kafka topic {topic} does not exist"
        raise TopicNotFound(msg)
    ids = consumer.partitions_for_topic(topic) or set()
    return [TopicPartition(topic, partition) for partition in sorted(ids)]


async def _fetch_to_end(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition], from_ts_ms: int | None
) -> list[ConsumerRecord[bytes, bytes]]:
    consumer.assign(partitions)
    end = await consumer.end_offsets(partitions)
    start = await _start_offsets(consumer, partitions, end, from_ts_ms)
    for partition in partitions:
        consumer.seek(partition, start[partition])

    fetched: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = defaultdict(list)
    pending = {tp for tp in partitions if start[tp] < end[tp]}
    while pending:
        batches = await consumer.getmany(*pending, timeout_ms=READ_POLL_MS)
        for tp, records in batches.items():
            fetched[tp].extend(records)
        pending = {tp for tp in pending if await consumer.position(tp) < end[tp]}

    return [record for tp in partitions for record in fetched[tp]]


async def _start_offsets(
    consumer: AIOKafkaConsumer,
    partitions: list[TopicPartition],
    end: dict[TopicPartition, int],
    from_ts_ms: int | None,
) -> dict[TopicPartition, int]:
    if from_ts_ms is None:
        beginning: dict[TopicPartition, int] = await consumer.beginning_offsets(partitions)
        return beginning

    found = await consumer.offsets_for_times({tp: from_ts_ms for tp in partitions})
    # No offset means no record at or after the time: that partition has nothing to read.
    return {tp: end[tp] if found[tp] is None else found[tp].offset for tp in partitions}


def _decode(record: ConsumerRecord[bytes, bytes]) -> JobEvent | None:
    try:
        return decode_event(record.value or b"")
    except LedgerError as exc:
        log.warning(
            "kafka_record_undecodable",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            error=repr(exc),
            next_step="skipping the record",
        )
        return None
