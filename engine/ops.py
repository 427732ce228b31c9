"""The transitions a worker makes on one queue, one Lua script call each."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.jobs import ClaimedJob
from engine.keys import QueueKeys
from engine.scripts import Scripts
from engine.settings import Settings

PROMOTE_BATCH = 100


def lane_schedule(weights: Sequence[int]) -> str:
    """Smooth weighted round robin over lanes: '1,2,1,...' (1-based lane indices).

    With weights 8:2:1 every 11 claims take 8, 2 and 1 from the lanes, interleaved, so a
    flooded high lane never starves low; a slot whose lane is empty goes to the others.
    """
    current = [0] * len(weights)
    total = sum(weights)
    order = []
    for _ in range(total):
        for i, weight in enumerate(weights):
            current[i] += weight
        best = max(range(len(weights)), key=lambda i: current[i])
        current[best] -= total
        order.append(str(best + 1))
    return ",".join(order)


@dataclass(frozen=True, slots=True)
class ClaimReply:
    """What one claim call returned."""

    status: str  # ok, lost, paused, bp
    jobs: list[ClaimedJob] = field(default_factory=list)
    next_due_ms: int = 0
    backlog: int = 0
    age_ms: int = 0


@dataclass(frozen=True, slots=True)
class AckItem:
    """One job to ack: with its idempotency key (marked done in the same call), the
    original job when this run was a duplicate, and the messages its handler published."""

    job_id: str
    token: str
    run_ms: int = 0
    idem_key: str = ""
    duplicate_of: str = ""
    messages: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ReapReply:
    """What one reaper pass did: (0, 0, 0) too when another reaper holds the lock."""

    workers: int
    returned: int
    dead: int
    locked: bool = False


class WorkerOps:
    """One worker's view of one queue: every call is one atomic script."""

    def __init__(self, scripts: Scripts, queue: str, worker_id: str, settings: Settings) -> None:
        self.scripts = scripts
        self.queue = queue
        self.worker_id = worker_id
        self.settings = settings
        self.keys = QueueKeys(queue, settings.namespace)
        self.lane_keys = [self.keys.lane(lane) for lane in settings.lanes]
        self.schedule = lane_schedule(settings.lane_weights)

    @property
    def _hb_keys(self) -> list[str]:
        k = self.keys
        return [k.heartbeat(self.worker_id), k.workers, k.events, k.processing(self.worker_id)]

    async def register(self, description: dict[str, str]) -> int:
        """Join the registry with a fresh heartbeat; returns the server time in ms."""
        reply = await self.scripts.heartbeat(
            keys=self._hb_keys,
            args=[self.worker_id, self.settings.heartbeat_ttl_ms, "register",
                  json.dumps(description)],
        )  # fmt: skip
        return int(reply)

    async def renew(self) -> bool:
        """Renew the heartbeat; False means it had expired and the worker was reaped."""
        reply = await self.scripts.heartbeat(
            keys=self._hb_keys, args=[self.worker_id, self.settings.heartbeat_ttl_ms, "renew", ""]
        )
        return bool(reply)

    async def claim(self, want: int) -> ClaimReply:
        k, s = self.keys, self.settings
        reply = await self.scripts.claim(
            keys=[k.heartbeat(self.worker_id), k.processing(self.worker_id), k.events, k.meta,
                  k.scheduled, k.wake, *self.lane_keys],
            args=[k.prefix, self.worker_id, want, self.schedule, s.ledger_max_backlog,
                  s.ledger_max_age_ms, PROMOTE_BATCH],
        )  # fmt: skip
        status = str(reply[0])
        if status == "bp":
            return ClaimReply(status, backlog=int(reply[1]), age_ms=int(reply[2]))
        body, width = reply[2:], ClaimedJob.FIELDS
        jobs = [
            ClaimedJob.from_reply(self.queue, body[i : i + width])
            for i in range(0, len(body), width)
        ]
        return ClaimReply(status, jobs, int(float(reply[1])))

    async def ack(self, items: Sequence[AckItem]) -> list[str]:
        """Ack jobs; one status per item: 'ok' or 'stale:<reason>'."""
        k = self.keys
        args: list[Any] = [k.prefix, self.worker_id, self.settings.job_retention_ms,
                           self.settings.idempotency_ttl_ms, len(items)]  # fmt: skip
        for item in items:
            args += [item.job_id, item.token, item.run_ms, item.idem_key, item.duplicate_of,
                     len(item.messages)]  # fmt: skip
        for item in items:
            for topic, message in item.messages:
                args += [topic, message]
        reply = await self.scripts.ack(keys=[k.processing(self.worker_id), k.events], args=args)
        return [str(status) for status in reply]

    async def fail(
        self,
        job: ClaimedJob,
        error: str,
        *,
        traceback: str = "",
        retryable: bool = True,
        reason: str = "non_retryable",
        delay_ms: int = 0,
        run_ms: int = 0,
        max_attempts: int = 0,
        counted: bool = True,
        idem_key: str = "",
    ) -> str:
        """Record a failure: 'retried:<due ms>', 'dead:<reason>' or 'stale:<reason>'."""
        k = self.keys
        reply = await self.scripts.fail(
            keys=[k.processing(self.worker_id), k.events, k.scheduled, k.dead, k.wake],
            args=[k.prefix, self.worker_id, job.id, job.token, error, traceback,
                  "1" if retryable else "0", delay_ms, reason, run_ms, max_attempts,
                  "1" if counted else "0", idem_key],
        )  # fmt: skip
        return str(reply)

    async def idem_begin(self, key: str, job: ClaimedJob) -> tuple[str, str | None]:
        """Claim the execution record of `key`: ('run' | 'done' | 'busy', other job id)."""
        reply = await self.scripts.idem_begin(
            keys=[self.keys.idempotency(f"run:{key}")],
            args=[self.keys.prefix, job.id, self.worker_id, job.token,
                  self.settings.idempotency_ttl_ms],
        )  # fmt: skip
        return str(reply[0]), (str(reply[1]) if len(reply) > 1 else None)

    async def idem_commit(
        self,
        key: str,
        job: ClaimedJob,
        commands: Sequence[Sequence[Any]],
        messages: Sequence[tuple[str, str]] = (),
    ) -> list[Any]:
        """Run Redis commands, mark `key` done and publish messages, atomically."""
        args: list[Any] = [self.keys.prefix, job.id, self.worker_id, job.token, key,
                           self.settings.idempotency_ttl_ms, len(commands)]  # fmt: skip
        for command in commands:
            args += [len(command), *command]
        args.append(len(messages))
        for topic, message in messages:
            args += [topic, message]
        reply = await self.scripts.idem_commit(
            keys=[self.keys.idempotency(f"run:{key}"), self.keys.events], args=args
        )
        return list(reply)

    async def give_back(
        self, jobs: Sequence[ClaimedJob], *, reason: str, leave: bool = False
    ) -> list[str]:
        """Return unfinished jobs to the head of their lanes; optionally leave the registry."""
        k = self.keys
        args: list[Any] = [k.prefix, self.worker_id, reason, "leave" if leave else "stay"]
        args.append(len(jobs))
        for job in jobs:
            args += [job.id, job.token]
        reply = await self.scripts.give_back(
            keys=[k.processing(self.worker_id), k.events, k.wake, k.heartbeat(self.worker_id),
                  k.workers],
            args=args,
        )  # fmt: skip
        return [str(status) for status in reply]

    async def reap(self, lock_ms: int) -> ReapReply:
        """Recover the jobs of every registered worker whose heartbeat expired."""
        k = self.keys
        reply = await self.scripts.reap(
            keys=[k.workers, k.events, k.dead, k.reaper_lock, k.wake],
            args=[k.prefix, lock_ms, self.worker_id],
        )
        if reply[0] != "ok":
            return ReapReply(0, 0, 0, locked=True)
        return ReapReply(int(reply[1]), int(reply[2]), int(reply[3]))
