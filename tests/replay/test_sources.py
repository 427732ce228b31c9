"""Reading every kind of source: merged, deduplicated and ordered; damage reported with
where it was and how much was kept, never a crash."""

from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from engine.queue import JobQueue, JobSpec
from engine.settings import Settings
from ledger.codec import SINGLE_OBJECT_MARKER, encode_event, to_avro_record, write_container
from ledger.event import JobEvent
from replay.bench import synthetic_events
from replay.events import FIELDS
from replay.merge import load
from replay.sources import NdjsonSource, NoProgress, ReadOptions
from replay.sources import ndjson as ndjson_source
from replay.sources.s3 import may_hold
from sinks.kafka import KafkaSink, KafkaSinkSettings
from sinks.ndjson import iter_segments, read_events
from sinks.s3 import S3Sink, S3SinkSettings
from tests.engine.helpers import registered_ops
from tests.redis_server import RedisServer
from tests.replay.conftest import Replay
from tests.replay.helpers import (
    Q,
    ack,
    killed_worker_job,
    retried_job,
    ship_to_ndjson,
    write_ndjson,
)
from tests.servers import TEST_ACCESS_KEY, TEST_REGION, TEST_SECRET_KEY, KafkaBroker, MotoS3

BUCKET = "ledger"


def _types(result_json: dict[str, Any], job_id: str) -> list[str]:
    [job] = result_json["jobs"]
    return [e["type"] for e in job["events"] if e["job_id"] == job_id]


async def test_the_same_events_in_ndjson_and_redis_give_one_history_and_a_duplicate_count(
    redis: Redis, settings: Settings, redis_server: RedisServer, tmp_path: Path, replay: Replay
) -> None:
    """The shipper wrote the events to the folder but has not deleted them from the stream
    yet: each event shows once, marked as coming from both sources."""
    job_id = await killed_worker_job(redis, settings)
    await ship_to_ndjson(redis, tmp_path)

    result = replay(
        "job", job_id, "--source", str(tmp_path), "--source", redis_server.url, "--json"
    )

    assert result.code == 0
    document = result.json()
    [job] = document["jobs"]
    assert document["duplicates"] == len(job["events"]) == 6  # with the worker's reap
    assert _types(document, job_id) == ["enqueued", "claimed", "reaped", "claimed", "acked"]
    assert {tuple(e["sources"]) for e in job["events"]} == {("ndjson", "redis")}


async def test_a_shipped_head_and_an_unshipped_tail_join_into_one_history(
    redis: Redis, settings: Settings, redis_server: RedisServer, tmp_path: Path, replay: Replay
) -> None:
    """Events the shipper deleted from the stream come from the folder, newer ones from
    Redis; the timeline is whole and in stream order."""
    jq = JobQueue(redis, settings)
    job_id = await jq.enqueue(Q, "send", {}, job_id="job-split")
    await ship_to_ndjson(redis, tmp_path, delete=True)
    ops = await registered_ops(redis, settings, Q, "w1")
    [job] = (await ops.claim(1)).jobs
    assert await ack(ops, job) == "ok"

    result = replay(
        "job", job_id, "--source", str(tmp_path), "--source", redis_server.url, "--json"
    )

    [found] = result.json()["jobs"]
    assert [(e["type"], e["sources"]) for e in found["events"]] == [
        ("enqueued", ["ndjson"]), ("claimed", ["redis"]), ("acked", ["redis"]),
    ]  # fmt: skip
    assert found["anomalies"] == []


@pytest.fixture
def aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto's throwaway credentials where boto3 looks for them by default."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", TEST_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", TEST_REGION)


@pytest.mark.usefixtures("aws_environment")
async def test_ndjson_and_s3_holding_the_same_events_merge_without_duplicates(
    redis: Redis, settings: Settings, s3_server: MotoS3, tmp_path: Path, replay: Replay
) -> None:
    """The fallback folder and S3 both hold the batch (a drain re-shipped it): one history.
    S3 credentials come from boto3's usual environment variables."""
    job_id = await retried_job(redis, settings)
    events = await ship_to_ndjson(redis, tmp_path)
    await _write_s3(s3_server, events)

    result = replay(
        "job", job_id, "--source", str(tmp_path), "--source", f"s3://{BUCKET}/ledger",
        "--s3-endpoint-url", s3_server.endpoint_url, "--json",
    )  # fmt: skip

    assert result.code == 0, result.err
    document = result.json()
    [job] = document["jobs"]
    assert document["duplicates"] == len(job["events"])
    assert [s["events"] for s in document["sources"]] == [len(job["events"])] * 2
    assert _types(document, job_id) == [
        "enqueued",
        "claimed",
        "failed",
        "retried",
        "claimed",
        "acked",
    ]


async def _write_s3(server: MotoS3, events: list[JobEvent]) -> None:
    server.client().create_bucket(Bucket=BUCKET)
    sink = S3Sink(S3SinkSettings(
        bucket=BUCKET, prefix="ledger", endpoint_url=server.endpoint_url, region_name=TEST_REGION,
        aws_access_key_id=TEST_ACCESS_KEY, aws_secret_access_key=TEST_SECRET_KEY,
    ))  # fmt: skip
    await sink.write(events)
    await sink.close()


@pytest.mark.usefixtures("aws_environment")
async def test_a_truncated_avro_object_keeps_its_first_events_and_is_counted(
    s3_server: MotoS3, replay: Replay
) -> None:
    """An object cut short: the events of its complete blocks are read, the rest reported
    with the key and the number of events read before the damage."""
    events = synthetic_events(3000)
    client = s3_server.client()
    client.create_bucket(Bucket=BUCKET)
    body = write_container([to_avro_record(e) for e in events], block_size_bytes=2000)
    key = "ledger/queue=q0/date=2025-12-03/hour=12/cut.avro"
    client.put_object(Bucket=BUCKET, Key=key, Body=body[: len(body) // 2])

    result = replay(
        "query", "--source", f"s3://{BUCKET}/ledger", "--s3-endpoint-url", s3_server.endpoint_url,
        "--json", "--strict",
    )  # fmt: skip

    assert result.code == 1  # --strict: unreadable data
    read = [json.loads(line) for line in result.out.splitlines()]
    assert 0 < len(read) < len(events)
    assert f"s3://{BUCKET}/{key}: damaged after {len(read)} events" in result.err


async def test_a_kafka_record_with_an_unknown_schema_is_counted_and_the_rest_is_read(
    kafka_broker: KafkaBroker, kafka_topic: str, replay: Replay
) -> None:
    """One record names a schema fingerprint no version in schemas/ has; another is cut
    short. Both are counted with partition and offset; every other event is read."""
    events = synthetic_events(40)
    sink = KafkaSink(KafkaSinkSettings(kafka_broker.bootstrap_servers, kafka_topic))
    await sink.write(events)
    await sink.close()
    good = encode_event(events[0])
    await _produce(kafka_broker, kafka_topic, [
        SINGLE_OBJECT_MARKER + b"\x01" * 8 + good[10:],  # unknown fingerprint
        good[:-3],  # truncated body
    ])  # fmt: skip

    result = replay(
        "query", "--source", f"kafka://{kafka_broker.bootstrap_servers}/{kafka_topic}", "--json"
    )

    assert result.code == 0
    assert len(result.out.splitlines()) == len(events)
    assert "unknown_schema" in result.err
    assert "matches no JobEvent schema version" in result.err
    assert "corrupt_record" in result.err or "damaged" in result.err
    assert "partition" in result.err
    assert "offset" in result.err


async def _produce(broker: KafkaBroker, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=b"bad")
    finally:
        await producer.stop()


async def test_a_kafka_source_read_since_a_time_skips_older_events(
    kafka_broker: KafkaBroker, kafka_topic: str, replay: Replay
) -> None:
    events = synthetic_events(60)
    sink = KafkaSink(KafkaSinkSettings(kafka_broker.bootstrap_servers, kafka_topic))
    await sink.write(events)
    await sink.close()
    middle = sorted(e.ts_ms for e in events)[30]
    since = f"{middle}"

    from replay.times import format_ts

    result = replay(
        "query", "--source", f"kafka://{kafka_broker.bootstrap_servers}/{kafka_topic}",
        "--since", format_ts(int(since)), "--json",
    )  # fmt: skip

    read = [json.loads(line) for line in result.out.splitlines()]
    assert read
    assert all(r["ts_ms"] >= middle for r in read)
    assert len(read) == sum(e.ts_ms >= middle for e in events)


async def test_a_corrupt_gzip_segment_keeps_the_lines_before_the_damage_and_says_how_many(
    tmp_path: Path, replay: Replay
) -> None:
    events = synthetic_events(20_000)
    await write_ndjson(tmp_path, events, rotate=True)
    [segment] = iter_segments(tmp_path)
    data = bytearray(segment.read_bytes())
    data[len(data) * 3 // 4 : len(data) * 3 // 4 + 64] = b"\x00" * 64
    segment.write_bytes(bytes(data))

    result = replay("query", "--source", str(tmp_path), "--json")

    assert result.code == 0
    read = len(result.out.splitlines())
    assert 0 < read < len(events)
    assert f"{segment}:{read + 1}: unreadable after {read} lines: corrupt gzip data" in result.err


async def test_a_gzip_segment_cut_short_keeps_every_complete_line(
    tmp_path: Path, replay: Replay
) -> None:
    events = synthetic_events(5000)
    await write_ndjson(tmp_path, events, rotate=True)
    [segment] = iter_segments(tmp_path)
    data = segment.read_bytes()
    segment.write_bytes(data[: len(data) // 2])
    expected = gzip.decompress(data).count(b"\n")

    result = replay("query", "--source", str(tmp_path), "--json", "--strict")

    assert result.code == 1
    read = len(result.out.splitlines())
    assert 0 < read < expected
    assert f"unreadable after {read} lines: the gzip stream is cut short" in result.err


async def test_torn_and_corrupt_lines_are_reported_with_file_and_line_and_skipped(
    tmp_path: Path, replay: Replay
) -> None:
    events = synthetic_events(50)
    await write_ndjson(tmp_path, events)
    [segment] = iter_segments(tmp_path)
    lines = segment.read_bytes().splitlines(keepends=True)
    lines[9] = b'{"type": "acked", "queue": \n'  # line 10: not JSON
    lines[19] = b'{"not": "an event"}\n'  # line 20: JSON, not an event
    segment.write_bytes(b"".join(lines) + b'{"attempt":1,"attri')  # line 51: torn

    result = replay("query", "--source", str(tmp_path), "--json")

    assert result.code == 0
    assert len(result.out.splitlines()) == len(events) - 2
    assert f"{segment}:10: corrupt line" in result.err
    assert f"{segment}:20: not an event" in result.err
    assert f"{segment}:51: torn line (no trailing newline)" in result.err


async def test_the_fast_reader_reads_what_the_sinks_reader_reads(tmp_path: Path) -> None:
    """Rotated gzip and live segments, a bad line among them: the same events, the same
    bad line, whichever reader."""
    events = synthetic_events(3000)
    await write_ndjson(tmp_path, events[:2000], rotate=True)
    await write_ndjson(tmp_path, events[2000:])
    with iter_segments(tmp_path)[-1].open("ab") as live:
        live.write(b"garbage\n")  # after the sink closed: a restart would cut it off

    expected = [r for r in read_events(tmp_path)]
    ledger = load([NdjsonSource(tmp_path)], ReadOptions(), NoProgress)

    wanted = sorted((e for e in expected if isinstance(e, JobEvent)), key=lambda e: e.order_key)
    assert [e.to_record() for e in ledger.events] == [e.to_record() for e in wanted]
    [report] = ledger.reports
    assert report.counts == {"corrupt_line": 1}
    assert len(expected) - len(wanted) == 1


async def test_without_orjson_the_reader_reads_the_same_events_and_bad_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """orjson only makes reading faster: with the standard library's parser in its place,
    the same events and the same bad line, reported in the same words."""
    events = synthetic_events(3000)
    await write_ndjson(tmp_path, events[:2000], rotate=True)
    await write_ndjson(tmp_path, events[2000:])
    with iter_segments(tmp_path)[-1].open("ab") as live:
        live.write(b"garbage\n")

    fast = load([NdjsonSource(tmp_path)], ReadOptions(), NoProgress)
    monkeypatch.setattr(ndjson_source, "parse_json", json.loads)
    plain = load([NdjsonSource(tmp_path)], ReadOptions(), NoProgress)

    assert fast.events == plain.events
    assert [r.problems for r in fast.reports] == [r.problems for r in plain.reports]
    assert [r.counts for r in plain.reports] == [{"corrupt_line": 1}]


async def test_a_job_lookup_finds_the_job_in_every_segment(tmp_path: Path) -> None:
    events = synthetic_events(4000)
    await write_ndjson(tmp_path, events[:2500], rotate=True)
    await write_ndjson(tmp_path, events[2500:])
    named = {
        job
        for e in events[:2500]
        if e.type == "heartbeat"
        for job in e.attributes["jobs"].split(",")
    }
    job_id = next(e.job_id for e in events[2500:] if e.type == "acked" and e.job_id in named)
    assert job_id is not None

    full = load([NdjsonSource(tmp_path)], ReadOptions(), NoProgress)
    found = load([NdjsonSource(tmp_path)], ReadOptions(job_id=job_id), NoProgress)

    assert found.events == [e for e in full.events if e.mentions(job_id)]
    assert any(e.type == "heartbeat" for e in found.events)
    assert {e.type for e in found.events if e.job_id == job_id} >= {"enqueued", "claimed", "acked"}


async def test_the_redis_source_reads_every_queue_in_pages_without_walking_the_keyspace(
    redis: Redis, settings: Settings, redis_server: RedisServer, replay: Replay
) -> None:
    jq = JobQueue(redis, settings)
    for queue in ("a", "b"):
        await jq.enqueue_many(queue, [JobSpec("send", {"n": n}) for n in range(1200)])
    await redis.config_resetstat()

    result = replay("query", "--source", redis_server.url, "--type", "enqueued", "--json")

    assert len(result.out.splitlines()) == 2400
    stats = await redis.info("commandstats")
    assert not {"cmdstat_keys", "cmdstat_scan"} & set(stats)
    assert stats["cmdstat_xrange"]["calls"] == 4  # a page of 1000 and one of 200, per queue


async def test_a_missing_folder_and_an_unknown_scheme_exit_2_with_one_line(
    tmp_path: Path, replay: Replay
) -> None:
    missing = replay("query", "--source", str(tmp_path / "nowhere"))
    unknown = replay("query", "--source", "ftp://host/ledger")

    assert missing.code == unknown.code == 2
    assert (
        missing.err.strip()
        == f"replay: ledger folder {tmp_path / 'nowhere'} does not exist or is not a folder"
    )
    assert len(unknown.err.strip().splitlines()) == 1
    assert "unknown source" in unknown.err


async def test_an_unreachable_redis_source_exits_2(replay: Replay) -> None:
    from engine.embedded import free_port

    result = replay("query", "--source", f"redis://:secret@127.0.0.1:{free_port()}/0")

    assert result.code == 2
    assert result.err.startswith("replay: cannot read redis://127.0.0.1:")
    assert "secret" not in result.err


def test_replays_event_has_the_fields_of_the_ledgers_event_in_order() -> None:
    """Records become events by position: a field added to JobEvent must be added here."""
    assert tuple(field.name for field in dataclasses.fields(JobEvent)) == FIELDS


@pytest.mark.parametrize(
    ("key", "wanted"),
    [
        ("ledger/queue=emails/date=2025-12-03/hour=12/1-0_2-0.avro", True),
        ("ledger/queue=emails/date=2025-12-03/hour=10/1-0_2-0.avro", False),
        ("ledger/queue=emails/date=2025-12-03/hour=15/1-0_2-0.avro", False),
        ("ledger/queue=other/date=2025-12-03/hour=12/1-0_2-0.avro", False),
        ("ledger/elsewhere/1-0_2-0.avro", True),
    ],
)
def test_s3_objects_outside_the_queue_or_the_hours_asked_for_are_not_read(
    key: str, wanted: bool
) -> None:
    noon = 1_764_763_200_000  # 2025-12-03T12:00:00Z
    options = ReadOptions(queue="emails", since_ms=noon - 30 * 60_000, until_ms=noon + 90 * 60_000)

    assert may_hold(key, options) is wanted
