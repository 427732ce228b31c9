from __future__ import annotations

import dataclasses
import io
import itertools
import json
import pickle
import shutil
from pathlib import Path
from typing import Any

import fastavro
import pytest

from ledger import codec
from ledger.codec import (
    FINGERPRINT,
    SCHEMA_DIR,
    SCHEMAS,
    SINGLE_OBJECT_MARKER,
    SchemaSet,
    decode_event,
    decode_single,
    encode_event,
    encode_single,
    read_container,
    schema_fingerprint,
    to_avro_record,
    write_container,
)
from ledger.errors import CorruptRecord, SchemaViolation, UnknownSchema
from ledger.event import JobEvent

# --- helpers -------------------------------------------------------------------------


def _rabin_64(data: bytes) -> int:
    """CRC-64-AVRO written from the Avro specification, independent of fastavro."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)

    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def _events(n: int) -> list[JobEvent]:
    return [
        JobEvent(
            queue="emails",
            stream_id=f"1764780000000-{i}",
            type="acked",
            ts_ms=1764780000000 + i,
            job_id=f"job-{i}",
            attempt=1,
            attributes={"n": str(i)},
        )
        for i in range(n)
    ]


def _schema_files() -> list[Path]:
    return [path for _, path in codec.version_files(SCHEMA_DIR)]


# --- single-object encoding ----------------------------------------------------------


def test_single_object_round_trip_returns_the_record_written(enqueued: JobEvent) -> None:
    """decode_single(encode_single(r)) == r, with ts_ms back as integer milliseconds."""
    record = enqueued.to_record()

    decoded = decode_single(encode_single(record))

    assert decoded == record
    assert type(decoded["ts_ms"]) is int


def test_single_object_starts_with_the_marker_and_the_schema_fingerprint(
    enqueued: JobEvent,
) -> None:
    """Bytes 0-1 are C3 01 and bytes 2-9 are the current schema's fingerprint."""
    data = encode_event(enqueued)

    assert data[:2] == b"\xc3\x01" == SINGLE_OBJECT_MARKER
    assert data[2:10] == FINGERPRINT


def test_fingerprint_is_the_little_endian_rabin_value_of_the_canonical_form() -> None:
    """FINGERPRINT equals the specification's CRC-64-AVRO, written as 8 bytes LE."""
    raw = json.loads((SCHEMA_DIR / "job_event.avsc").read_text())
    canonical = fastavro.schema.to_parsing_canonical_form(raw).encode()

    assert _rabin_64(canonical).to_bytes(8, "little") == FINGERPRINT


def test_fingerprint_of_int_matches_the_value_published_with_the_avro_specification() -> None:
    """The Avro test vector for "int" is 8247732601305521295; its LE bytes start with 8f."""
    assert schema_fingerprint("int") == (8247732601305521295).to_bytes(8, "little")
    assert schema_fingerprint("int").hex() == "8f5c393f1ad57572"


def test_unknown_fields_fail_the_write_naming_them(enqueued: JobEvent) -> None:
    """fastavro would drop unknown keys; the codec refuses the record instead."""
    record = {**enqueued.to_record(), "customer_email": "x", "zone": "eu"}

    with pytest.raises(SchemaViolation, match="customer_email, zone") as caught:
        encode_single(record)

    assert caught.value.fields == ("customer_email", "zone")


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"seq": "one"}, "seq", "seq='one' is not null or long"),
        ({"attempt": 2**40}, "attempt", "is not null or int"),
        ({"type": "bogus"}, "type", "EventType"),
        ({"attributes": {"n": 1}}, "attributes", "attributes="),
        ({"queue": None}, "queue", "queue=None is not string"),
        ({"seq": True}, "seq", "seq=True"),
    ],
)
def test_ill_typed_values_fail_the_write_naming_the_field(
    enqueued: JobEvent, change: dict[str, Any], field: str, words: str
) -> None:
    """Validation runs before encoding and names the field and what it expected."""
    record = {**enqueued.to_record(), **change}

    with pytest.raises(SchemaViolation, match=words) as caught:
        encode_single(record)

    assert caught.value.fields == (field,)


def test_a_missing_required_field_fails_but_a_missing_optional_one_does_not(
    enqueued: JobEvent,
) -> None:
    """Fields without a default must be present; nullable ones default to null."""
    record = enqueued.to_record()
    del record["queue"]
    with pytest.raises(SchemaViolation, match="queue is missing"):
        encode_single(record)

    minimal = {k: record[k] for k in ("event_id", "stream_id", "type", "ts_ms")}
    decoded = decode_single(encode_single({**minimal, "queue": "emails"}))
    assert decoded["job_id"] is None
    assert decoded["attributes"] == {}


def test_unknown_fingerprint_raises_unknown_schema_naming_it_in_hex(enqueued: JobEvent) -> None:
    """Data from a schema not kept in schemas/ cannot be decoded."""
    data = bytearray(encode_event(enqueued))
    data[2:10] = bytes.fromhex("0011223344556677")

    with pytest.raises(UnknownSchema, match="0011223344556677") as caught:
        decode_single(bytes(data))

    assert caught.value.fingerprint == bytes.fromhex("0011223344556677")


@pytest.mark.parametrize("data", [b"", b"\xc3", b"\xc3\x01abc", b"\x00\x01" + FINGERPRINT])
def test_bad_marker_or_short_header_raises_corrupt_record(data: bytes) -> None:
    """Anything that is not marker plus 8 fingerprint bytes is refused before decoding."""
    with pytest.raises(CorruptRecord, match="not an Avro single-object record"):
        decode_single(data)


def test_every_truncation_of_a_single_object_raises_corrupt_record(enqueued: JobEvent) -> None:
    """Cutting the body anywhere is noticed, never decoded as a shorter record."""
    data = encode_event(enqueued)

    for cut in range(len(data)):
        with pytest.raises(CorruptRecord):
            decode_single(data[:cut])


def test_trailing_bytes_after_a_single_object_raise_corrupt_record(enqueued: JobEvent) -> None:
    """A body followed by extra bytes is two things glued together, not one record."""
    with pytest.raises(CorruptRecord, match="3 bytes after its body"):
        decode_single(encode_event(enqueued) + b"xyz")


# --- container files -----------------------------------------------------------------


@pytest.mark.parametrize("avro_codec", ["deflate", "null"])
def test_container_round_trip_returns_every_record_in_order(avro_codec: str) -> None:
    """Records come back in order across several blocks, for both codecs."""
    records = [to_avro_record(event) for event in _events(40)]

    data = write_container(records, avro_codec, block_size_bytes=200)

    assert list(read_container(data)) == records
    assert list(read_container(io.BytesIO(data))) == records


def test_container_writes_are_validated_like_single_objects(enqueued: JobEvent) -> None:
    """An unknown field anywhere in the batch fails the whole container."""
    records = [enqueued.to_record(), {**enqueued.to_record(), "extra": "x"}]

    with pytest.raises(SchemaViolation, match="extra"):
        write_container(records)


def _block_ends(data: bytes) -> list[int]:
    """Offsets just past each sync marker; the first one closes the header."""
    sync = data[-16:]
    ends, start = [], 0
    while (found := data.find(sync, start)) != -1:
        ends.append(found + 16)
        start = found + 16
    return ends


@pytest.mark.parametrize("complete_blocks", [0, 1, 7, 19])
def test_truncated_container_raises_corrupt_record_counting_records_read(
    complete_blocks: int,
) -> None:
    """Records before the cut are yielded; then CorruptRecord says how many there were."""
    records = [to_avro_record(event) for event in _events(20)]
    data = write_container(records, block_size_bytes=1)  # one record per block
    ends = _block_ends(data)
    assert len(ends) == 21

    cut = ends[complete_blocks] + 5
    yielded = []
    with pytest.raises(CorruptRecord) as caught:
        yielded.extend(read_container(data[:cut]))

    assert caught.value.records_read == complete_blocks
    assert yielded == records[:complete_blocks]


def test_container_with_a_damaged_sync_marker_raises_corrupt_record() -> None:
    """Damage in the middle of a file is reported with the records read before it."""
    data = bytearray(write_container([to_avro_record(e) for e in _events(5)], block_size_bytes=1))
    ends = _block_ends(bytes(data))
    data[ends[3] - 1] ^= 0xFF  # last byte of the third block's sync marker

    with pytest.raises(CorruptRecord, match="after 3 records") as caught:
        list(read_container(bytes(data)))

    assert caught.value.records_read == 3


def test_container_with_a_damaged_header_raises_corrupt_record_with_nothing_read() -> None:
    """A file that does not start as an Avro container yields nothing."""
    data = b"NOPE" + write_container([to_avro_record(e) for e in _events(2)])[4:]

    with pytest.raises(CorruptRecord, match="not an Avro container") as caught:
        list(read_container(data))

    assert caught.value.records_read == 0


# --- JobEvent helpers ----------------------------------------------------------------


def test_event_from_stream_bytes_round_trips_through_encode_and_decode(
    enqueued: JobEvent,
) -> None:
    """An outbox entry with bytes keys and values survives the Avro round trip unchanged."""
    decoded = decode_event(encode_event(enqueued))

    assert decoded == enqueued
    assert decoded.payload == '{"order":"ORD-7","note":"café"}'
    assert decoded.token == 9007199254740993


def test_event_type_unknown_to_the_schema_is_written_as_unknown_and_restored(
    enqueued: JobEvent,
) -> None:
    """The write succeeds; the original type travels in attributes and comes back."""
    newer = dataclasses.replace(enqueued, type="migrated")

    data = encode_event(newer)

    assert decode_single(data)["type"] == "unknown"
    assert decode_single(data)["attributes"]["original_type"] == "migrated"
    assert decode_event(data) == newer


def test_errors_survive_pickling_with_their_attributes() -> None:
    """Errors cross process boundaries (multiprocessing, executors) intact."""
    error = CorruptRecord("damaged", records_read=7)

    copy = pickle.loads(pickle.dumps(error))

    assert (str(copy), copy.records_read) == ("damaged", 7)


# --- schema versions -----------------------------------------------------------------


def _sample(schema: Any) -> Any:
    """A value of an Avro type (the non-null branch of a union)."""
    if isinstance(schema, list):
        return _sample(next(branch for branch in schema if branch != "null"))
    if isinstance(schema, dict):
        samples = {"enum": lambda: schema["symbols"][0], "map": lambda: {"k": "v"}}
        kind = schema["type"]
        return samples[kind]() if kind in samples else _sample(kind)
    return {"string": "text", "int": 7, "long": 1764780000000, "boolean": True}[schema]


def _expected(writer: dict[str, Any], reader: dict[str, Any], written: dict[str, Any]) -> Any:
    """What Avro resolution should give: written values, else the reader's defaults."""
    expected = {}
    for item in reader["fields"]:
        value = written.get(item["name"], item.get("default"))
        kind = item["type"]
        if isinstance(kind, dict) and kind["type"] == "enum" and value not in kind["symbols"]:
            value = kind["default"]
        expected[item["name"]] = value
    return expected


def _incompatibilities(schemas: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Write a full sample with each version, read it with each; list what fails."""
    problems = []
    for (w_name, writer), (r_name, reader) in itertools.product(schemas, repeat=2):
        sample = {item["name"]: _sample(item["type"]) for item in writer["fields"]}
        parsed_w, parsed_r = fastavro.parse_schema(writer), fastavro.parse_schema(reader)
        try:
            body = io.BytesIO()
            fastavro.schemaless_writer(body, parsed_w, sample)
            body.seek(0)
            single = codec._normalised(fastavro.schemaless_reader(body, parsed_w, parsed_r))
            box = io.BytesIO()
            fastavro.writer(box, parsed_w, [sample])
            box.seek(0)
            contained = [codec._normalised(r) for r in fastavro.reader(box, parsed_r)]
        except Exception as exc:  # every failure is a finding to report, not a crash
            problems.append(f"{w_name} -> {r_name}: {exc!r}")
            continue
        if [single] != contained or single != _expected(writer, reader, sample):
            problems.append(f"{w_name} -> {r_name}: read {single!r}")
    return problems


def test_schema_versions_are_fully_transitively_compatible() -> None:
    """Data written with any kept version reads with every other, in both directions."""
    versions = [(path.name, json.loads(path.read_text())) for path in _schema_files()]
    assert versions, "schemas/ keeps no job_event.v<N>.avsc"

    assert _incompatibilities(versions) == []


def test_compatibility_check_catches_a_field_added_without_default() -> None:
    """The check above can fail: a new field with no default breaks old-data reading."""
    v1 = json.loads((SCHEMA_DIR / "job_event.v1.avsc").read_text())
    v2 = json.loads(json.dumps(v1))
    v2["fields"].append({"name": "tenant", "type": "string", "doc": "no default"})

    problems = _incompatibilities([("v1", v1), ("v2", v2)])

    assert [p.split(":")[0] for p in problems] == ["v1 -> v2"]


def test_current_schema_is_identical_to_the_highest_version() -> None:
    """job_event.avsc is a copy of the newest job_event.v<N>.avsc, byte for byte."""
    highest = _schema_files()[-1]

    assert (SCHEMA_DIR / "job_event.avsc").read_bytes() == highest.read_bytes()


def test_every_schema_field_has_a_doc() -> None:
    """Auditors read the schema; every field explains itself."""
    for path in _schema_files():
        fields = json.loads(path.read_text())["fields"]
        assert [f["name"] for f in fields if not f.get("doc")] == [], path.name


@pytest.fixture
def v2_dir(tmp_path: Path) -> Path:
    """A schema directory whose next version adds a field with a default and a type."""
    versions = sorted(SCHEMA_DIR.glob("job_event.v*.avsc"))
    for version in versions:
        shutil.copy(version, tmp_path / version.name)
    following = json.loads((SCHEMA_DIR / "job_event.avsc").read_text())
    following["fields"].append(
        {"name": "tenant", "type": ["null", "string"], "default": None, "doc": "Tenant."}
    )
    following["fields"][3]["type"]["symbols"].insert(-1, "migrated")
    text = json.dumps(following, indent=2) + "\n"
    (tmp_path / f"job_event.v{len(versions) + 1}.avsc").write_text(text)
    (tmp_path / "job_event.avsc").write_text(text)
    return tmp_path


def test_data_written_with_an_older_version_decodes_to_the_current_fields(
    v2_dir: Path, enqueued: JobEvent
) -> None:
    """A v1 single object decodes under v2, the new field taking its default."""
    v2 = SchemaSet.load(v2_dir)
    assert v2.fingerprint != FINGERPRINT

    decoded = decode_single(encode_event(enqueued), schemas=v2)

    assert decoded == {**enqueued.to_record(), "tenant": None}


def test_single_object_from_a_newer_version_is_an_unknown_schema(
    v2_dir: Path, enqueued: JobEvent
) -> None:
    """Single objects carry only a fingerprint, so a newer writer cannot be read."""
    v2 = SchemaSet.load(v2_dir)
    data = encode_single({**enqueued.to_record(), "tenant": "t1"}, schemas=v2)

    with pytest.raises(UnknownSchema, match=v2.fingerprint.hex()):
        decode_single(data, schemas=SCHEMAS)


def test_container_from_a_newer_version_reads_with_new_types_as_unknown(
    v2_dir: Path, enqueued: JobEvent
) -> None:
    """A container carries its writer schema, so the current reader resolves it."""
    v2 = SchemaSet.load(v2_dir)
    record = {**to_avro_record(enqueued), "type": "migrated", "tenant": "t1"}

    [read] = read_container(write_container([record], schemas=v2))

    assert read == {**enqueued.to_record(), "type": "unknown"}


def test_missing_schema_directory_names_where_it_looked(tmp_path: Path) -> None:
    """A wheel install without schemas/ fails loudly, pointing at the editable install."""
    with pytest.raises(FileNotFoundError, match="editable mode"):
        SchemaSet.load(tmp_path)
