"""The one record the ledger keeps: a `JobEvent`, built from an outbox stream entry.

The stream entry format is documented in docs/events.md. Every sink writes the same
record; `to_record` gives the Avro/JSON form whose keys are the schema's field names.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ledger.errors import SchemaViolation

# Stream field name -> (record field name, is an integer).
_STREAM_FIELDS: dict[str, tuple[str, bool]] = {
    "job": ("job_id", False),
    "seq": ("seq", True),
    "from": ("prev_state", False),
    "to": ("next_state", False),
    "lane": ("lane", False),
    "task": ("task", False),
    "attempt": ("attempt", True),
    "worker": ("worker", False),
    "token": ("token", True),
    "payload": ("payload", False),
    "error": ("error", False),
    "due": ("due_at_ms", True),
    "reason": ("reason", False),
    "trace": ("trace_id", False),
}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _attribute_text(value: object) -> str:
    # docs/events.md promises string values, but a list (heartbeat's `jobs`) must stay
    # readable JSON rather than become a Python repr.
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _parse_attrs(text: str) -> dict[str, str]:
    attrs = json.loads(text)
    if not isinstance(attrs, dict):
        msg = f"attrs is a JSON {type(attrs).__name__}, expected an object"
        raise TypeError(msg)
    return {str(k): _attribute_text(v) for k, v in attrs.items()}


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One state change of one queue, as the ledger stores it."""

    queue: str
    stream_id: str
    type: str
    ts_ms: int
    job_id: str | None = None
    seq: int | None = None
    prev_state: str | None = None
    next_state: str | None = None
    lane: str | None = None
    task: str | None = None
    attempt: int | None = None
    worker: str | None = None
    token: int | None = None
    payload: str | None = None
    error: str | None = None
    due_at_ms: int | None = None
    reason: str | None = None
    trace_id: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)

    @property
    def event_id(self) -> str:
        return f"{self.queue}/{self.stream_id}"

    @property
    def order_key(self) -> tuple[str, int, int]:
        """Sort key: queue, then stream id (milliseconds, then sequence)."""
        ms, _, n = self.stream_id.partition("-")
        return (self.queue, int(ms), int(n or 0))

    @classmethod
    def from_stream(
        cls, queue: str, stream_id: bytes | str, fields: Mapping[bytes, bytes] | Mapping[str, str]
    ) -> JobEvent:
        """Build an event from one outbox entry (bytes or str keys and values).

        A malformed entry (no type or ts, a non-integer number, attrs that are not a JSON
        object) raises `SchemaViolation`, a `ValueError`, naming the queue and stream id.
        """
        entry_id = _text(stream_id)
        raw = {_text(k): _text(v) for k, v in fields.items()}
        try:
            return cls._from_raw(queue, entry_id, raw)
        except (KeyError, ValueError, TypeError) as exc:
            msg = f"malformed outbox entry {queue}/{entry_id}: {exc!r}"
            raise SchemaViolation(msg) from exc

    @classmethod
    def _from_raw(cls, queue: str, stream_id: str, raw: dict[str, str]) -> JobEvent:
        kwargs: dict[str, Any] = {}
        for stream_name, (name, is_int) in _STREAM_FIELDS.items():
            if stream_name in raw:
                kwargs[name] = int(raw[stream_name]) if is_int else raw[stream_name]

        return cls(
            queue=queue,
            stream_id=stream_id,
            type=raw["type"],
            ts_ms=int(raw["ts"]),
            attributes=_parse_attrs(raw["attrs"]) if "attrs" in raw else {},
            **kwargs,
        )

    def to_record(self) -> dict[str, Any]:
        """The record form shared by every sink (Avro field names, event id included)."""
        record: dict[str, Any] = {"event_id": self.event_id}
        for item in dataclasses.fields(self):
            record[item.name] = getattr(self, item.name)
        record["attributes"] = dict(self.attributes)
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> JobEvent:
        """Inverse of `to_record`; unknown keys are an error so nothing is silently lost.

        Raises `SchemaViolation` (a `ValueError`) for unknown keys or an event id that
        does not match the queue and stream id.
        """
        data = dict(record)
        event_id = data.pop("event_id", None)
        unknown = sorted(set(data) - _FIELD_NAMES)
        if unknown:
            msg = f"record {event_id!r} has fields JobEvent does not know: {', '.join(unknown)}"
            raise SchemaViolation(msg, fields=tuple(unknown))

        event = cls(**data)
        if event_id is not None and event_id != event.event_id:
            msg = f"event_id {event_id!r} does not match queue and stream id {event.event_id!r}"
            raise SchemaViolation(msg, fields=("event_id",))
        return event


_FIELD_NAMES = frozenset(item.name for item in dataclasses.fields(JobEvent))
