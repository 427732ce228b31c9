"""Avro codec of the ledger's `JobEvent`: single-object encoding and object container files.

Schemas are read from the repository's `schemas/` directory, found relative to this
package (`Path(__file__).resolve().parent.parent / "schemas"`). That works from a source
checkout and from an editable install (`pip install -e .`), where the package stays in the
tree; a wheel does not ship `schemas/`, so a non-editable install fails at import with a
`FileNotFoundError` naming the directory it looked in.

`schemas/job_event.avsc` is the current (writer and reader) schema. Every released version
is kept beside it as `schemas/job_event.v<N>.avsc`; data written with any of them decodes,
through Avro schema resolution, to the current schema's fields.

Writing is strict: fastavro silently drops keys a schema does not know, so every record is
checked for unknown keys and then validated before it is encoded. Fields with a schema
default (every nullable field, and `attributes`) may be left out.

Decoded records have `ts_ms` as integer milliseconds (fastavro returns the
`timestamp-millis` logical type as a datetime), so they equal what `JobEvent.to_record`
produced.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import fastavro
from fastavro.read import SchemaResolutionError
from fastavro.schema import SchemaParseException, fingerprint, to_parsing_canonical_form
from fastavro.types import Schema
from fastavro.validation import ValidationError, ValidationErrorData, validate

from ledger.errors import CorruptRecord, SchemaViolation, UnknownSchema
from ledger.event import JobEvent

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
CURRENT_SCHEMA_FILE = "job_event.avsc"
_VERSION_FILE = re.compile(r"job_event\.v(\d+)\.avsc")

# Avro single-object encoding: this marker, the writer schema's 8-byte little-endian
# CRC-64-AVRO fingerprint, then the binary body.
SINGLE_OBJECT_MARKER = b"\xc3\x01"
_HEADER_SIZE = len(SINGLE_OBJECT_MARKER) + 8

UNKNOWN_TYPE = "unknown"
ORIGINAL_TYPE_ATTRIBUTE = "original_type"

DEFAULT_BLOCK_SIZE_BYTES = 16_000
_CONTAINER_MAGIC = b"Obj\x01"

# What fastavro raises on truncated or damaged input (found by fuzzing fastavro 1.13).
# ValueError covers UnicodeDecodeError, JSONDecodeError and fastavro's UnknownType.
_DAMAGE_ERRORS = (
    EOFError,
    ValueError,
    IndexError,
    KeyError,
    OverflowError,
    zlib.error,
    SchemaParseException,
)

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_MS = dt.timedelta(milliseconds=1)


def schema_fingerprint(schema: Schema) -> bytes:
    """The 8-byte CRC-64-AVRO fingerprint of a schema's Parsing Canonical Form.

    fastavro returns the hex of the little-endian bytes, which is the order the single
    object encoding writes (tests check it against the Avro specification's algorithm).
    """
    canonical = to_parsing_canonical_form(schema)
    return bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))


def load_schema(path: Path) -> dict[str, Any]:
    """Read one `.avsc` file as JSON (unparsed)."""
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return schema


def version_files(directory: Path) -> list[tuple[int, Path]]:
    """The `job_event.v<N>.avsc` files of a directory, oldest version first."""
    found = []
    for path in directory.glob("job_event.v*.avsc"):
        match = _VERSION_FILE.fullmatch(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


@dataclass(frozen=True)
class SchemaSet:
    """The current JobEvent schema and every version data may have been written with."""

    directory: Path
    current: Schema
    fingerprint: bytes
    writers: Mapping[bytes, Schema]
    field_names: frozenset[str]
    event_types: frozenset[str]

    @classmethod
    def load(cls, directory: Path = SCHEMA_DIR) -> SchemaSet:
        """Load `job_event.avsc` and every `job_event.v<N>.avsc` from a directory."""
        current_path = directory / CURRENT_SCHEMA_FILE
        if not current_path.is_file():
            msg = (
                f"Avro schema {current_path} not found: the ledger reads schemas from the "
                "source tree, so install jobqueue in editable mode (pip install -e .)"
            )
            raise FileNotFoundError(msg)

        raw = load_schema(current_path)
        current_fingerprint = schema_fingerprint(raw)
        writers = {current_fingerprint: fastavro.parse_schema(raw)}
        for _, path in version_files(directory):
            old = load_schema(path)
            writers.setdefault(schema_fingerprint(old), fastavro.parse_schema(old))

        fields = raw["fields"]
        type_field = next(item for item in fields if item["name"] == "type")
        return cls(
            directory=directory,
            current=writers[current_fingerprint],
            fingerprint=current_fingerprint,
            writers=writers,
            field_names=frozenset(item["name"] for item in fields),
            event_types=frozenset(type_field["type"]["symbols"]),
        )


SCHEMAS = SchemaSet.load()
FINGERPRINT: bytes = SCHEMAS.fingerprint


def validate_record(record: Mapping[str, Any], *, schemas: SchemaSet = SCHEMAS) -> None:
    """Raise `SchemaViolation` naming every field the schema does not know or cannot take."""
    unknown = sorted(set(record) - schemas.field_names)
    if unknown:
        msg = f"record {_name(record)} has fields the schema does not know: {', '.join(unknown)}"
        raise SchemaViolation(msg, fields=tuple(unknown))

    try:
        validate(dict(record), schemas.current, raise_errors=True)
    except ValidationError as exc:
        problems = _problems(record, exc.errors)
        msg = f"record {_name(record)} does not match the schema: {'; '.join(problems.values())}"
        raise SchemaViolation(msg, fields=tuple(problems)) from exc


def _name(record: Mapping[str, Any]) -> str:
    return repr(record.get("event_id", "<no event_id>"))


def _problems(record: Mapping[str, Any], errors: Iterable[ValidationErrorData]) -> dict[str, str]:
    """One sentence per field, merging a union's several "expected" into one."""
    expected: dict[str, list[str]] = {}
    for error in errors:
        name = str(error.field).rsplit(".", 1)[-1]
        expected.setdefault(name, []).append(_describe(error.schema))

    problems = {}
    for name, types in expected.items():
        if name in record:
            problems[name] = f"{name}={record[name]!r} is not {' or '.join(types)}"
        else:
            problems[name] = f"{name} is missing"
    return problems


def _describe(schema: Any) -> str:
    if isinstance(schema, dict):
        return str(schema.get("name") or schema.get("logicalType") or schema.get("type"))
    return str(schema)


def encode_single(record: Mapping[str, Any], *, schemas: SchemaSet = SCHEMAS) -> bytes:
    """Avro single-object encoding of one record (marker, fingerprint, binary body)."""
    validate_record(record, schemas=schemas)

    out = io.BytesIO()
    out.write(SINGLE_OBJECT_MARKER)
    out.write(schemas.fingerprint)
    fastavro.schemaless_writer(out, schemas.current, dict(record))
    return out.getvalue()


def decode_single(data: bytes, *, schemas: SchemaSet = SCHEMAS) -> dict[str, Any]:
    """Decode one single-object encoded record, resolving older versions to the current one.

    Raises `CorruptRecord` for a bad marker, a truncated body or trailing bytes, and
    `UnknownSchema` for a fingerprint that matches no version in the schema directory.
    """
    writer = _writer_schema(data, schemas)

    body = io.BytesIO(data)
    body.seek(_HEADER_SIZE)
    try:
        record = fastavro.schemaless_reader(body, writer, schemas.current)
    except SchemaResolutionError as exc:
        raise _unresolvable(data[2:_HEADER_SIZE], exc) from exc
    except _DAMAGE_ERRORS as exc:
        msg = f"single-object record of {len(data)} bytes is damaged: {exc!r}"
        raise CorruptRecord(msg) from exc

    if body.tell() != len(data):
        msg = f"single-object record has {len(data) - body.tell()} bytes after its body"
        raise CorruptRecord(msg)
    return _normalised(cast("dict[str, Any]", record))  # a record schema reads as a dict


def _writer_schema(data: bytes, schemas: SchemaSet) -> Schema:
    if len(data) < _HEADER_SIZE or not data.startswith(SINGLE_OBJECT_MARKER):
        msg = f"not an Avro single-object record (starts {bytes(data[:2]).hex()!r})"
        raise CorruptRecord(msg)

    found = bytes(data[2:_HEADER_SIZE])
    writer = schemas.writers.get(found)
    if writer is None:
        msg = (
            f"schema fingerprint {found.hex()} matches no JobEvent schema version in "
            f"{schemas.directory}"
        )
        raise UnknownSchema(msg, fingerprint=found)
    return writer


def _unresolvable(found: bytes, exc: SchemaResolutionError) -> UnknownSchema:
    msg = f"schema {found.hex()} cannot be resolved to the current JobEvent schema: {exc}"
    return UnknownSchema(msg, fingerprint=found)


def write_container(
    records: Iterable[Mapping[str, Any]],
    codec: str = "deflate",
    *,
    block_size_bytes: int = DEFAULT_BLOCK_SIZE_BYTES,
    schemas: SchemaSet = SCHEMAS,
) -> bytes:
    """An Avro object container file of the records, each validated as `encode_single` does.

    A block is closed once it holds about `block_size_bytes`; damage is then confined to
    the blocks it touches.
    """
    out = io.BytesIO()
    fastavro.writer(
        out,
        schemas.current,
        _validated(records, schemas),
        codec=codec,
        sync_interval=block_size_bytes,
    )
    return out.getvalue()


def _validated(
    records: Iterable[Mapping[str, Any]], schemas: SchemaSet
) -> Iterator[dict[str, Any]]:
    for record in records:
        validate_record(record, schemas=schemas)
        yield dict(record)


def read_container(
    stream: IO[bytes] | bytes | bytearray, *, schemas: SchemaSet = SCHEMAS
) -> Iterator[dict[str, Any]]:
    """Yield the records of an Avro object container file, resolved to the current schema.

    The file's own header carries its writer schema, so files written by a newer version
    are readable too (a new event type reads as "unknown"). Damage raises `CorruptRecord`
    whose `records_read` counts the records already yielded, so a caller can report the
    partial result. A file cut exactly at a block boundary looks complete: the format has
    no record count to notice the missing blocks.
    """
    records = _open_container(stream, schemas)

    count = 0
    while True:
        record = _next_record(records, count)
        if record is None:
            return
        count += 1
        yield _normalised(record)


def _open_container(
    stream: IO[bytes] | bytes | bytearray, schemas: SchemaSet
) -> Iterator[dict[str, Any]]:
    source = io.BytesIO(stream) if isinstance(stream, bytes | bytearray) else stream
    try:
        avro = fastavro.reader(source, schemas.current)
    except _DAMAGE_ERRORS as exc:
        msg = f"Avro container header is damaged: {exc!r}"
        raise CorruptRecord(msg, records_read=0) from exc

    # fastavro 1.13 reads the magic bytes without checking them; it keeps the header.
    magic = avro._header.get("magic")
    if magic != _CONTAINER_MAGIC:
        msg = f"not an Avro container (starts {magic!r}, expected {_CONTAINER_MAGIC!r})"
        raise CorruptRecord(msg, records_read=0)
    return cast("Iterator[dict[str, Any]]", iter(avro))


def _next_record(records: Iterator[Any], count: int) -> dict[str, Any] | None:
    try:
        record: dict[str, Any] = next(records)
    except StopIteration:
        return None
    except SchemaResolutionError as exc:
        msg = f"container's writer schema cannot be resolved to the current schema: {exc}"
        raise UnknownSchema(msg) from exc
    except _DAMAGE_ERRORS as exc:
        msg = f"Avro container is damaged after {count} records: {exc!r}"
        raise CorruptRecord(msg, records_read=count) from exc
    return record


def _normalised(record: dict[str, Any]) -> dict[str, Any]:
    """Give `ts_ms` back as integer milliseconds, as it was written."""
    ts = record.get("ts_ms")
    if isinstance(ts, dt.datetime):
        record["ts_ms"] = (ts - _EPOCH) // _ONE_MS
    return record


def to_avro_record(event: JobEvent, *, schemas: SchemaSet = SCHEMAS) -> dict[str, Any]:
    """The event's record, with a type the schema does not know written as "unknown".

    An event type newer than the schema must not stop the ledger (that would stall the
    shipper and, through backpressure, the queue), so it is written as "unknown" and the
    real type is kept in `attributes["original_type"]`; `from_avro_record` restores it.
    """
    record = event.to_record()
    if record["type"] not in schemas.event_types:
        record["attributes"][ORIGINAL_TYPE_ATTRIBUTE] = record["type"]
        record["type"] = UNKNOWN_TYPE
    return record


def from_avro_record(record: Mapping[str, Any]) -> JobEvent:
    """Inverse of `to_avro_record`: restores an original type kept in the attributes."""
    data = dict(record)
    attributes = dict(data.get("attributes") or {})
    if data.get("type") == UNKNOWN_TYPE and ORIGINAL_TYPE_ATTRIBUTE in attributes:
        data["type"] = attributes.pop(ORIGINAL_TYPE_ATTRIBUTE)
        data["attributes"] = attributes
    return JobEvent.from_record(data)


def encode_event(event: JobEvent, *, schemas: SchemaSet = SCHEMAS) -> bytes:
    """Single-object encoding of an event (see `to_avro_record` for unknown types)."""
    return encode_single(to_avro_record(event, schemas=schemas), schemas=schemas)


def decode_event(data: bytes, *, schemas: SchemaSet = SCHEMAS) -> JobEvent:
    """Inverse of `encode_event`, for data written with any schema version in the set."""
    return from_avro_record(decode_single(data, schemas=schemas))
