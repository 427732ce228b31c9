"""Reads a Kafka topic of Avro single-object records, from the earliest offset (or the first
record at a time) to the end offsets seen at the start.

This reader, unlike `sinks.kafka.read_topic`, counts what it cannot decode, by kind and
with partition and offset: a record written with a schema no version in `schemas/` knows is
an `unknown_schema` problem, a damaged one a `corrupt_record` problem. Only PLAINTEXT
brokers are supported from the command line so far: TLS and SASL need options here before
replay can read a secured cluster.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, Final, TypeAlias, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from ledger.codec import decode_event
from ledger.errors import CorruptRecord, UnknownSchema
from replay.errors import SourceUnavailable
from replay.events import Event, from_job_event
from replay.sources.base import Problem, Progress, ReadOptions, Source

T = TypeVar("T")

POLL_MS: Final = 200
RETRY_BACKOFF_MS: Final = 100

Record: TypeAlias = "ConsumerRecord[bytes, bytes]"


class KafkaSource(Source):
    """Every record of one topic, across its partitions."""

    kind = "kafka"

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(f"kafka://{bootstrap}/{topic}")
        self.bootstrap = bootstrap
        self.topic = topic

    def read(self, options: ReadOptions, progress: Progress) -> Iterator[list[Event]]:
        progress.start(f"reading {self.address}", None)
        records = run_sync(self._fetch(options))
        events = [event for event in map(self._decode, records) if event is not None]
        since_ms = options.since_ms
        yield events if since_ms is None else [e for e in events if e.ts_ms >= since_ms]
        progress.advance(len(records))

    async def _fetch(self, options: ReadOptions) -> list[Record]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            request_timeout_ms=int(options.kafka_timeout_s * 1000),
            retry_backoff_ms=RETRY_BACKOFF_MS,
        )
        try:
            return await asyncio.wait_for(
                self._fetch_all(consumer, options), options.kafka_timeout_s
            )
        except TimeoutError:
            msg = f"{self.address} was not read to its end within {options.kafka_timeout_s:g}s"
            raise SourceUnavailable(msg) from None
        except (KafkaError, OSError) as exc:
            msg = f"cannot read {self.address}: {exc!r}"
            raise SourceUnavailable(msg) from exc
        finally:
            await consumer.stop()

    async def _fetch_all(self, consumer: AIOKafkaConsumer, options: ReadOptions) -> list[Record]:
        await consumer.start()
        if self.topic not in await consumer.topics():
            msg = f"{self.address}: the topic does not exist"
            raise SourceUnavailable(msg)

        ids = consumer.partitions_for_topic(self.topic) or set()
        partitions = [TopicPartition(self.topic, partition) for partition in sorted(ids)]
        consumer.assign(partitions)
        end = await consumer.end_offsets(partitions)
        start = await _start_offsets(consumer, partitions, end, options.since_ms)
        for partition in partitions:
            consumer.seek(partition, start[partition])
        return await _drain(consumer, partitions, start, end)

    def _decode(self, record: Record) -> Event | None:
        where = f"{self.address} partition {record.partition} offset {record.offset}"
        try:
            return from_job_event(decode_event(record.value or b""))
        except UnknownSchema as exc:
            self.report.add(Problem("unknown_schema", where, str(exc)))
        except (CorruptRecord, ValueError) as exc:
            self.report.add(Problem("corrupt_record", where, str(exc)))
        return None


async def _start_offsets(
    consumer: AIOKafkaConsumer,
    partitions: list[TopicPartition],
    end: dict[TopicPartition, int],
    since_ms: int | None,
) -> dict[TopicPartition, int]:
    if since_ms is None:
        first: dict[TopicPartition, int] = await consumer.beginning_offsets(partitions)
        return first

    # Some brokers answer a time lookup with the first offset whatever the time: the read
    # filters by event time as well, so the seek only saves work.
    found = await consumer.offsets_for_times({tp: since_ms for tp in partitions})
    return {tp: end[tp] if found[tp] is None else found[tp].offset for tp in partitions}


async def _drain(
    consumer: AIOKafkaConsumer,
    partitions: list[TopicPartition],
    start: dict[TopicPartition, int],
    end: dict[TopicPartition, int],
) -> list[Record]:
    fetched: dict[TopicPartition, list[Record]] = {tp: [] for tp in partitions}
    pending = {tp for tp in partitions if start[tp] < end[tp]}
    while pending:
        batches = await consumer.getmany(*pending, timeout_ms=POLL_MS)
        for tp, records in batches.items():
            fetched[tp].extend(records)
        pending = {tp for tp in pending if await consumer.position(tp) < end[tp]}
    return [record for tp in partitions for record in fetched[tp]]


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to its end from synchronous code, even inside a running loop (then
    on a fresh loop in a helper thread, which blocks the caller meanwhile)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)

    result: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coroutine))
        except BaseException as exc:  # handed back to the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=target, name="replay-kafka")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]
