"""Idempotency records: a job whose effect already happened is acked, never run twice.

A store keeps one record per idempotency key (the job id by default, or a key the
handler names, such as an order id). Before the handler runs, the worker calls `begin`:

- `run`: the record is this claim's now; run the handler;
- `done`: the effect already happened (a retry after a crash, a duplicate job): ack the
  job as `deduplicated`, naming the original job, without running the handler;
- `busy`: a live worker holds the record: retry later, do not run.

The effect and the record must change together. With the Redis store, a handler makes
its Redis effects through `ctx.commit(...)`, which runs them, marks the record done and
publishes the handler's outbox messages in one script; otherwise the ack marks it done.
A service whose effects live in its own database implements `IdempotencyStore` there and
marks the record done in the same transaction as the effect (see the README).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Literal

from engine.jobs import ClaimedJob
from engine.ops import WorkerOps

Outcome = Literal["run", "done", "busy"]


@dataclass(frozen=True, slots=True)
class Begin:
    """What `begin` found: the outcome and, for done or busy, the other job's id."""

    outcome: Outcome
    other_job: str | None = None


class IdempotencyStore(abc.ABC):
    """Where execution idempotency records live."""

    #: True when `complete` and `release` happen inside the engine's ack and fail scripts.
    in_engine: bool = False

    @abc.abstractmethod
    async def begin(self, ops: WorkerOps, key: str, job: ClaimedJob) -> Begin:
        """Claim the record of `key` for this claim of `job`."""

    async def complete(self, ops: WorkerOps, key: str, job: ClaimedJob) -> None:  # noqa: B027
        """Mark the record done (called after the handler succeeded, before the ack)."""

    async def release(self, ops: WorkerOps, key: str, job: ClaimedJob) -> None:  # noqa: B027
        """Give the record up after a failure, so that a retry may run."""


class RedisIdempotencyStore(IdempotencyStore):
    """The default: records in the queue's Redis, completed in the same call as the ack."""

    in_engine = True

    async def begin(self, ops: WorkerOps, key: str, job: ClaimedJob) -> Begin:
        outcome, other = await ops.idem_begin(key, job)
        if outcome not in ("run", "done", "busy"):
            msg = f"unexpected idempotency outcome {outcome!r} for key {key!r}"
            raise RuntimeError(msg)
        return Begin(outcome, other)  # type: ignore[arg-type]
