"""The producer and admin side: enqueue jobs, read queue state, operate dead letters."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from redis.asyncio import Redis

from engine.connection import check_server, create_redis
from engine.errors import Backpressure, EngineError, JobExists, JobNotFound, QueueFull
from engine.ids import new_job_id
from engine.jobs import encode_payload
from engine.keys import QueueKeys, queues_key
from engine.names import check_name
from engine.scripts import Scripts
from engine.settings import Settings

DLQ_BATCH = 1000


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One job to enqueue; `None` fields take the queue's defaults."""

    task: str
    payload: Any = None
    lane: str | None = None
    job_id: str | None = None
    max_attempts: int | None = None
    max_crashes: int | None = None
    delay_s: float | None = None
    due_at: datetime | None = None
    trace_id: str | None = None
    idempotency_key: str | None = None


@dataclass(slots=True)
class QueueStats:
    """A queue's state, read with O(1) commands per key."""

    queue: str
    lanes: dict[str, int]
    scheduled: int
    dead: int
    outbox: int
    paused: bool
    in_flight: dict[str, int] = field(default_factory=dict)

    @property
    def ready(self) -> int:
        return sum(self.lanes.values())


def _idem_key(key: str) -> str:
    return check_name("idempotency key", key)


class JobQueue:
    """Enqueue jobs and administer queues over one Redis client."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.scripts = Scripts(redis)
        self._known_queues: set[str] = set()

    @classmethod
    async def connect(cls, settings: Settings) -> JobQueue:
        """Create a client and check that the server is fit (version, eviction policy)."""
        redis = create_redis(settings)
        try:
            await check_server(redis, settings)
        except BaseException:
            await redis.aclose()
            raise
        return cls(redis, settings)

    async def close(self) -> None:
        await self.redis.aclose()

    def keys(self, queue: str) -> QueueKeys:
        return QueueKeys(check_name("queue", queue), self.settings.namespace)

    def lane_keys(self, keys: QueueKeys) -> list[str]:
        return [keys.lane(lane) for lane in self.settings.lanes]

    # -- enqueue ---------------------------------------------------------------------

    async def enqueue(
        self,
        queue: str,
        task: str,
        payload: Any = None,
        *,
        lane: str | None = None,
        job_id: str | None = None,
        max_attempts: int | None = None,
        max_crashes: int | None = None,
        delay_s: float | None = None,
        due_at: datetime | None = None,
        trace_id: str | None = None,
        idempotency_key: str | None = None,
        wait_s: float = 0.0,
    ) -> str:
        """Enqueue one job and return its id.

        With an `idempotency_key` seen within `idempotency_ttl_ms`, nothing is enqueued and
        the first job's id is returned (a `deduplicated` event records the refusal).
        Raises `QueueFull` past the configured lengths (after waiting up to `wait_s` for
        room), `Backpressure` while the ledger is behind, `JobExists` for a taken id.
        """
        spec = JobSpec(
            task, payload, lane, job_id, max_attempts, max_crashes, delay_s, due_at, trace_id,
            idempotency_key,
        )  # fmt: skip
        return (await self.enqueue_many(queue, [spec], wait_s=wait_s))[0]

    async def enqueue_many(
        self, queue: str, specs: Sequence[JobSpec], *, wait_s: float = 0.0
    ) -> list[str]:
        """Enqueue several jobs in one atomic call. On a full lane or queue, the jobs before
        the first refused one are enqueued; with `wait_s`, the rest are sent again as room
        appears until the deadline, then `QueueFull` is raised."""
        keys = self.keys(queue)
        ids = [new_job_id() if s.job_id is None else check_name("job id", s.job_id) for s in specs]
        argv = self._enqueue_args(queue, specs, ids)
        await self._register_queue(queue)
        deadline = time.monotonic() + wait_s
        done: list[str] = []
        while True:
            reply = await self.scripts.enqueue(
                keys=[keys.events, keys.scheduled, keys.wake, keys.meta, *self.lane_keys(keys)],
                args=argv,
            )
            accepted, full = self._enqueue_result(queue, ids, specs, reply)
            done += accepted
            if full is None:
                return done
            if time.monotonic() >= deadline:
                raise full
            rest = len(accepted)
            ids, specs = ids[rest:], specs[rest:]
            argv = self._enqueue_args(queue, specs, ids)
            await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def _enqueue_args(self, queue: str, specs: Sequence[JobSpec], ids: list[str]) -> list[Any]:
        s = self.settings
        keys = self.keys(queue)
        argv: list[Any] = [
            keys.prefix,
            s.ledger_max_backlog,
            s.ledger_max_age_ms,
            s.max_lane_length,
            s.max_queue_length,
            s.idempotency_ttl_ms,
            len(specs),
        ]
        for job_id, spec in zip(ids, specs, strict=True):
            argv += [
                job_id,
                check_name("task", spec.task),
                self._lane_index(spec.lane or s.default_lane),
                encode_payload(spec.payload, queue=queue, limit_bytes=s.max_payload_bytes),
                spec.max_attempts or s.max_attempts,
                s.max_crashes if spec.max_crashes is None else spec.max_crashes,
                int((spec.delay_s or 0) * 1000),
                int(spec.due_at.timestamp() * 1000) if spec.due_at else 0,
                spec.trace_id or "",
                "" if spec.idempotency_key is None else _idem_key(spec.idempotency_key),
            ]
        return argv

    def _lane_index(self, lane: str) -> int:
        try:
            return self.settings.lanes.index(check_name("lane", lane)) + 1
        except ValueError:
            msg = f"unknown lane {lane!r}: the lanes are {', '.join(self.settings.lanes)}"
            raise EngineError(msg) from None

    def _enqueue_result(
        self, queue: str, ids: list[str], specs: Sequence[JobSpec], reply: list[Any]
    ) -> tuple[list[str], QueueFull | None]:
        """The ids the script accepted (a duplicate's is the first job's), and the
        `QueueFull` that ended the batch early, if one did."""
        if reply and reply[0] == "bp":
            raise Backpressure(queue, int(reply[1]), int(reply[2]), self._bp_limit())
        accepted: list[str] = []
        for job_id, spec, status in zip(ids, specs, reply, strict=False):
            kind, _, detail = str(status).partition(":")
            if kind == "exists":
                msg = f"job {job_id!r} already exists in queue {queue!r}; nothing was enqueued"
                raise JobExists(msg)
            if kind == "lane_full":
                lane = spec.lane or self.settings.default_lane
                return accepted, QueueFull(queue, int(detail), self.settings.max_lane_length, lane)
            if kind == "queue_full":
                return accepted, QueueFull(queue, int(detail), self.settings.max_queue_length)
            accepted.append(detail if kind == "dup" else job_id)
        return accepted, None

    def _bp_limit(self) -> str:
        s = self.settings
        return f"max backlog {s.ledger_max_backlog or 'none'}, max age {s.ledger_max_age_ms} ms"

    async def _register_queue(self, queue: str) -> None:
        if queue not in self._known_queues:
            await self.redis.sadd(queues_key(self.settings.namespace), queue)
            self._known_queues.add(queue)

    # -- reading ---------------------------------------------------------------------

    async def queues(self) -> list[str]:
        """Names of every queue ever enqueued to (a registry, never a keyspace walk)."""
        members = await self.redis.smembers(queues_key(self.settings.namespace))
        return sorted(cast(set[str], members))

    async def stats(self, queue: str) -> QueueStats:
        keys = self.keys(queue)
        async with self.redis.pipeline(transaction=False) as pipe:
            for lane_key in self.lane_keys(keys):
                pipe.llen(lane_key)
            pipe.zcard(keys.scheduled)
            pipe.llen(keys.dead)
            pipe.xlen(keys.events)
            pipe.hget(keys.meta, "paused")
            pipe.smembers(keys.workers)
            *lanes, scheduled, dead, outbox, paused, workers = await pipe.execute()
        in_flight = await self._in_flight(keys, sorted(workers))
        return QueueStats(
            queue,
            dict(zip(self.settings.lanes, lanes, strict=True)),
            scheduled,
            dead,
            outbox,
            paused == "1",
            in_flight,
        )

    async def _in_flight(self, keys: QueueKeys, workers: list[str]) -> dict[str, int]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for worker in workers:
                pipe.llen(keys.processing(worker))
            counts = await pipe.execute()
        return dict(zip(workers, counts, strict=True))

    async def job(self, queue: str, job_id: str) -> dict[str, str]:
        """The stored record of one job."""
        record = cast(dict[str, str], await self.redis.hgetall(self.keys(queue).job(job_id)))
        if not record:
            msg = f"queue {queue!r} holds no job {job_id!r} (never enqueued, or expired)"
            raise JobNotFound(msg)
        return record

    async def events(self, queue: str, count: int = 1000) -> list[tuple[str, dict[str, str]]]:
        """The oldest un-shipped events of the queue's outbox."""
        entries = await self.redis.xrange(self.keys(queue).events, count=count)
        return cast(list[tuple[str, dict[str, str]]], entries)

    # -- operating -------------------------------------------------------------------

    async def pause(self, queue: str, *, by: str = "operator") -> bool:
        return await self._pause(queue, "pause", by)

    async def resume(self, queue: str, *, by: str = "operator") -> bool:
        return await self._pause(queue, "resume", by)

    async def _pause(self, queue: str, action: str, by: str) -> bool:
        keys = self.keys(queue)
        changed = await self.scripts.pause(
            keys=[keys.meta, keys.events, keys.wake, keys.workers], args=[action, by]
        )
        return bool(changed)

    async def dead_letters(
        self, queue: str, *, limit: int = 100, task: str | None = None
    ) -> list[dict[str, str]]:
        """Dead letters, oldest first, reading at most `limit` ids (bounded work)."""
        keys = self.keys(queue)
        ids = cast(list[str], await self.redis.lrange(keys.dead, 0, max(0, limit - 1)))
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hgetall(keys.job(job_id))
            records: list[dict[str, str]] = await pipe.execute()
        return [r for r in records if r and (task is None or r.get("task") == task)]

    async def requeue_dead(
        self, queue: str, job_ids: Sequence[str] = (), *, all_: bool = False, by: str = "operator"
    ) -> tuple[int, list[str]]:
        """Move dead letters back to their lanes (attempts reset); returns (done, missing)."""
        return await self._dead_letters(queue, "requeue", job_ids, all_, by)

    async def purge_dead(
        self, queue: str, job_ids: Sequence[str] = (), *, all_: bool = False, by: str = "operator"
    ) -> tuple[int, list[str]]:
        """Delete dead letters for good; returns (done, missing)."""
        return await self._dead_letters(queue, "purge", job_ids, all_, by)

    async def _dead_letters(
        self, queue: str, action: str, job_ids: Sequence[str], all_: bool, by: str
    ) -> tuple[int, list[str]]:
        keys = self.keys(queue)
        script_keys = [keys.dead, keys.events, keys.wake]
        if not all_:
            ids = [check_name("job id", job_id) for job_id in job_ids]
            reply = await self.scripts.dead_letters(
                keys=script_keys, args=[keys.prefix, action, by, "ids", len(ids), *ids]
            )
            return int(reply[0]), list(reply[1:])
        done, missing = 0, []
        while True:  # bounded batches until the list is empty
            reply = await self.scripts.dead_letters(
                keys=script_keys, args=[keys.prefix, action, by, "all", DLQ_BATCH]
            )
            done += int(reply[0])
            missing += reply[1:]
            if int(reply[0]) + len(reply) - 1 < DLQ_BATCH:
                return done, missing
