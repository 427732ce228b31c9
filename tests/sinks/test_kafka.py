"""The Kafka sink against a real Kafka-compatible broker (tansu, memory storage)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Callable

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from ledger.codec import FINGERPRINT, decode_event
from ledger.event import JobEvent
from sinks.base import SinkUnavailable
from sinks.kafka import KafkaSink, KafkaSinkSettings, TopicNotFound, read_topic
from tests.servers import KafkaBroker, free_port
from tests.sinks.conftest import TOPIC, TOPIC_PARTITIONS, EventFactory

pytestmark = pytest.mark.timeout(20)

SinkFactory = Callable[..., KafkaSink]


@pytest.fixture
async def kafka_sink_factory(kafka_broker: KafkaBroker) -> AsyncIterator[SinkFactory]:
    """Build sinks on the test broker; every sink built is closed after the test."""
    sinks: list[KafkaSink] = []

    def build(**overrides: object) -> KafkaSink:
        options: dict[str, object] = {
            "bootstrap_servers": kafka_broker.bootstrap_servers,
            "topic": TOPIC,
            "write_timeout_s": 2.0,
            "close_timeout_s": 1.0,
        }
        options.update(overrides)
        sink = KafkaSink(KafkaSinkSettings(**options))  # type: ignore[arg-type]
        sinks.append(sink)
        return sink

    yield build
    for sink in sinks:
        await sink.close()


async def raw_records(bootstrap: str, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of a topic as the broker stores it (key, partition, headers)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        end = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list[ConsumerRecord[bytes, bytes]] = []
        while len(records) < sum(end.values()):
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


def by_job(events: list[JobEvent]) -> dict[str | None, list[str]]:
    """Each job's stream ids, in the order given."""
    found: dict[str | None, list[str]] = defaultdict(list)
    for event in events:
        found[event.job_id].append(event.stream_id)
    return dict(found)


async def test_a_written_batch_reads_back_as_the_same_events_in_order_per_job(
    kafka_topic: str,
    kafka_broker: KafkaBroker,
    kafka_sink_factory: SinkFactory,
    make_events: EventFactory,
) -> None:
    """Every event comes back equal to what was written, and each job's events in order."""
    batch = make_events()
    sink = kafka_sink_factory()

    await sink.write(batch)
    read = await read_topic(kafka_broker.bootstrap_servers, kafka_topic, timeout_s=10)

    assert sorted(read, key=lambda e: e.order_key) == batch
    assert by_job(read) == by_job(batch)


async def test_one_jobs_records_share_a_partition_and_carry_fingerprint_type_and_id(
    kafka_topic: str,
    kafka_broker: KafkaBroker,
    kafka_sink_factory: SinkFactory,
    make_events: EventFactory,
) -> None:
    """Records are keyed by job id (queue for job-less events) and headed for routing."""
    batch = make_events(jobs=("job-1", "job-2", "job-3", "job-4", "job-5", "job-6"))

    await kafka_sink_factory().write(batch)
    records = await raw_records(kafka_broker.bootstrap_servers, kafka_topic)

    partitions_by_key: dict[bytes, set[int]] = defaultdict(set)
    for record in records:
        event = decode_event(record.value)
        headers = dict(record.headers)
        assert headers["schema-fingerprint"] == FINGERPRINT.hex().encode()
        assert headers["event-type"] == event.type.encode()
        assert headers["event-id"] == event.event_id.encode()
        assert record.key == (event.job_id or event.queue).encode()
        assert record.timestamp == event.ts_ms
        partitions_by_key[record.key].add(record.partition)

    assert len(records) == len(batch)
    assert all(len(partitions) == 1 for partitions in partitions_by_key.values())
    assert len(set().union(*partitions_by_key.values())) > 1, "keys should spread over partitions"


async def test_a_read_from_a_time_returns_only_events_at_or_after_it(
    kafka_topic: str,
    kafka_broker: KafkaBroker,
    kafka_sink_factory: SinkFactory,
    make_events: EventFactory,
) -> None:
    """`from_ts_ms` drops earlier events even where the broker's time lookup is coarse."""
    batch = make_events(step_ms=1000)
    cutoff_ms = batch[0].ts_ms + 2000

    await kafka_sink_factory().write(batch)
    read = await read_topic(
        kafka_broker.bootstrap_servers, kafka_topic, from_ts_ms=cutoff_ms, timeout_s=10
    )

    expected = [event for event in batch if event.ts_ms >= cutoff_ms]
    assert expected
    assert sorted(read, key=lambda e: e.order_key) == expected


async def test_reading_a_topic_that_does_not_exist_raises_topic_not_found(
    kafka_broker: KafkaBroker,
) -> None:
    """A misspelled topic is an error, not an empty ledger."""
    with pytest.raises(TopicNotFound, match="no-such-topic"):
        await read_topic(kafka_broker.bootstrap_servers, "no-such-topic", timeout_s=10)


async def test_the_first_write_to_an_absent_broker_raises_sink_unavailable(
    make_events: EventFactory,
) -> None:
    """The lazy start fails like any write when nothing listens at the bootstrap address."""
    settings = KafkaSinkSettings(
        bootstrap_servers=f"127.0.0.1:{free_port()}", topic=TOPIC, write_timeout_s=2.0
    )
    sink = KafkaSink(settings)
    try:
        with pytest.raises(SinkUnavailable, match="kafka"):
            await sink.write(make_events())
    finally:
        await sink.close()


async def test_a_broker_stopped_mid_stream_makes_write_raise_sink_unavailable(
    kafka_topic: str,
    kafka_broker: KafkaBroker,
    kafka_sink_factory: SinkFactory,
    make_events: EventFactory,
) -> None:
    """Once the broker is gone, a write raises instead of waiting for it."""
    sink = kafka_sink_factory()
    await sink.write(make_events())

    kafka_broker.kill()

    with pytest.raises(SinkUnavailable, match="kafka"):
        await sink.write(make_events(start_ms=make_events()[-1].ts_ms + 1))


async def test_a_frozen_broker_makes_write_raise_sink_unavailable(
    kafka_topic: str,
    kafka_broker: KafkaBroker,
    kafka_sink_factory: SinkFactory,
    make_events: EventFactory,
) -> None:
    """A broker that accepts connections but never answers is cut off by the write deadline."""
    sink = kafka_sink_factory(write_timeout_s=1.0)
    await sink.write(make_events())

    kafka_broker.pause()
    try:
        with pytest.raises(SinkUnavailable, match="did not confirm"):
            await sink.write(make_events(start_ms=make_events()[-1].ts_ms + 1))
    finally:
        kafka_broker.resume()


async def test_close_returns_after_the_broker_vanished_with_a_write_in_flight(
    kafka_topic: str,
    kafka_broker: KafkaBroker,
    kafka_sink_factory: SinkFactory,
    make_events: EventFactory,
) -> None:
    """close() does not wait for aiokafka to give up on batches it still holds.

    The write budget (and so aiokafka's request timeout) is longer than the test timeout: a
    close that waited for the producer to flush would fail the test.
    """
    sink = kafka_sink_factory(write_timeout_s=60.0, close_timeout_s=0.5)
    await sink.write(make_events())
    kafka_broker.kill()

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(sink.write(make_events(start_ms=make_events()[-1].ts_ms + 1)), 0.5)
    await sink.close()


async def test_the_sink_writes_again_after_the_broker_restarts(
    kafka_topic: str,
    kafka_broker: KafkaBroker,
    kafka_sink_factory: SinkFactory,
    make_events: EventFactory,
) -> None:
    """A failed producer is replaced on the next write, which then succeeds.

    The restarted broker starts empty (memory storage), so the topic is created again and
    the first batch is gone. The failed batch may still arrive: the old producer keeps
    retrying it until its request timeout, which at-least-once delivery allows.
    """
    sink = kafka_sink_factory()
    await sink.write(make_events(queue="before"))
    kafka_broker.kill()
    failed = make_events(queue="failed")
    with pytest.raises(SinkUnavailable):
        await sink.write(failed)

    kafka_broker.start()
    kafka_broker.create_topic(kafka_topic, TOPIC_PARTITIONS)
    after = make_events(queue="after")
    await sink.write(after)

    read = await read_topic(kafka_broker.bootstrap_servers, kafka_topic, timeout_s=10)
    assert sorted((e for e in read if e.queue == "after"), key=lambda e: e.order_key) == after
    assert all(event in failed for event in read if event.queue != "after")
