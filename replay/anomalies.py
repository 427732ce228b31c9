"""The anomalies replay flags in a job's history, each with a code, a message and the id of
the event where it shows.

    seq_gap                the job's sequence numbers skip, repeat or start above 1
    overlapping_claims     a claim while another claim of the job is still open
    ack_after_reap         an ack by a worker whose claim was reaped (a refused ack is not one)
    ack_without_claim      an ack with no open claim to finish
    foreign_heartbeat      a heartbeat naming the job from a worker that does not hold it
    reap_while_fresh       a reap less than the TTL after a heartbeat naming the job
    early_dead_letter      retries_exhausted before max_attempts failures
    claim_without_enqueue  a claim with no enqueue before it (ledger read from its start)
    in_flight_at_end       a claim still open at the end of the window
    unfinished_transition  a job left failed or lost, with no retry or dead letter after it
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

CODES: Final = (
    "seq_gap",
    "overlapping_claims",
    "ack_after_reap",
    "ack_without_claim",
    "foreign_heartbeat",
    "reap_while_fresh",
    "early_dead_letter",
    "claim_without_enqueue",
    "in_flight_at_end",
    "unfinished_transition",
)


@dataclass(frozen=True, slots=True)
class Anomaly:
    """Something in a job's history that the engine's rules say cannot happen, or that
    needs a look."""

    code: str
    message: str
    event_id: str
    queue: str
    job_id: str
    ts_ms: int

    def to_dict(self) -> dict[str, str | int]:
        return {
            "code": self.code,
            "message": self.message,
            "event_id": self.event_id,
            "queue": self.queue,
            "job_id": self.job_id,
            "ts_ms": self.ts_ms,
        }
