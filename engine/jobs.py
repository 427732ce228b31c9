"""Job payloads and the values a claim hands to a worker."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from engine.errors import InvalidPayload


def encode_payload(payload: Any, *, queue: str, limit_bytes: int) -> str:
    """Serialise a payload to compact JSON, refusing non-JSON values and oversized ones."""
    try:
        text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        msg = f"payload for queue {queue!r} is not JSON-serialisable: {exc}"
        raise InvalidPayload(msg) from None
    size = len(text.encode())
    if size > limit_bytes:
        msg = (
            f"payload for queue {queue!r} is {size} bytes, larger than the limit of "
            f"{limit_bytes} bytes (max_payload_bytes)"
        )
        raise InvalidPayload(msg)
    return text


def parse_payload(text: str, *, what: str = "payload") -> Any:
    """Parse JSON text (a CLI argument, a stored payload); never anything else."""
    try:
        return json.loads(text)
    except ValueError as exc:
        msg = f"{what} is not valid JSON: {exc}"
        raise InvalidPayload(msg) from None


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """One job as a claim returned it."""

    queue: str
    id: str
    task: str
    lane: str
    payload: str
    attempt: int
    token: str
    max_attempts: int
    trace_id: str | None

    FIELDS = 8

    @classmethod
    def from_reply(cls, queue: str, values: list[Any]) -> ClaimedJob:
        job_id, task, lane, payload, attempt, token, max_attempts, trace = values
        return cls(
            queue,
            job_id,
            task,
            lane,
            payload,
            int(attempt),
            str(token),
            int(max_attempts),
            trace or None,
        )
