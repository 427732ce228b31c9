from __future__ import annotations

import pytest

from ledger.errors import LedgerError, SchemaViolation
from ledger.event import JobEvent


def test_from_stream_reads_str_entries_like_bytes_entries() -> None:
    """redis-py returns bytes or str depending on decode_responses; both give one event."""
    fields = {k.decode(): v.decode() for k, v in _raw_entry().items()}

    assert JobEvent.from_stream("emails", "1764780000000-3", fields) == JobEvent.from_stream(
        "emails", b"1764780000000-3", _raw_entry()
    )


def test_attribute_values_that_are_not_strings_become_json_text() -> None:
    """A list in attrs (heartbeat's jobs) stays readable JSON, not a Python repr."""
    entry = {**_raw_entry(), b"attrs": b'{"jobs":["j1","j2"],"n":3,"ok":true}'}

    event = JobEvent.from_stream("emails", b"1-1", entry)

    assert event.attributes == {"jobs": '["j1","j2"]', "n": "3", "ok": "true"}


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({b"type": None}, "'type'"),
        ({b"ts": None}, "'ts'"),
        ({b"seq": b"one"}, "invalid literal"),
        ({b"attrs": b"[1]"}, "expected an object"),
        ({b"attrs": b"{oops"}, "Expecting property name"),
    ],
)
def test_malformed_outbox_entries_raise_schema_violation_naming_the_entry(
    change: dict[bytes, bytes | None], words: str
) -> None:
    """The error names queue and stream id, and is a LedgerError and a ValueError."""
    entry = {k: v for k, v in {**_raw_entry(), **change}.items() if v is not None}

    with pytest.raises(SchemaViolation, match=words) as caught:
        JobEvent.from_stream("emails", b"1-7", entry)

    assert "emails/1-7" in str(caught.value)
    assert isinstance(caught.value, LedgerError)
    assert isinstance(caught.value, ValueError)


def test_from_record_refuses_unknown_keys_naming_them(enqueued: JobEvent) -> None:
    """Nothing is silently lost between a record and an event."""
    record = {**enqueued.to_record(), "tenant": "t1"}

    with pytest.raises(SchemaViolation, match="tenant") as caught:
        JobEvent.from_record(record)

    assert caught.value.fields == ("tenant",)


def test_from_record_refuses_an_event_id_that_does_not_match(enqueued: JobEvent) -> None:
    """event_id must be queue/stream_id; a mismatch means the record was altered."""
    record = {**enqueued.to_record(), "event_id": "emails/1-1"}

    with pytest.raises(SchemaViolation, match="does not match"):
        JobEvent.from_record(record)


def test_to_record_and_from_record_are_inverse(enqueued: JobEvent) -> None:
    """The record has the event id first and every field; it rebuilds an equal event."""
    record = enqueued.to_record()

    assert next(iter(record)) == "event_id"
    assert JobEvent.from_record(record) == enqueued


def test_order_key_compares_stream_ids_numerically() -> None:
    """9-11 comes before 10-2, which a string sort would get wrong."""
    ids = ["10-2", "9-11", "10-10", "9-2"]
    events = [JobEvent(queue="q", stream_id=i, type="acked", ts_ms=1) for i in ids]

    ordered = [event.stream_id for event in sorted(events, key=lambda e: e.order_key)]

    assert ordered == ["9-2", "9-11", "10-2", "10-10"]


def _raw_entry() -> dict[bytes, bytes]:
    return {b"type": b"claimed", b"ts": b"1764780000123", b"job": b"job-42", b"token": b"5"}
