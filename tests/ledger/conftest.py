from __future__ import annotations

import pytest

from ledger.event import JobEvent


@pytest.fixture
def enqueued() -> JobEvent:
    """An enqueued event with every field set, as the outbox would deliver it."""
    return JobEvent.from_stream(
        "emails",
        b"1764780000000-3",
        {
            b"type": b"enqueued",
            b"ts": b"1764780000123",
            b"job": b"job-42",
            b"seq": b"1",
            b"from": b"scheduled",
            b"to": b"ready",
            b"lane": b"high",
            b"task": b"send_welcome",
            b"attempt": b"1",
            b"worker": b"worker-a",
            b"token": b"9007199254740993",
            b"payload": '{"order":"ORD-7","note":"café"}'.encode(),
            b"error": b"none yet",
            b"due": b"1764780060000",
            b"reason": b"delay",
            b"trace": b"trace-1",
            b"attrs": b'{"source":"api"}',
        },
    )
