"""The worker: claims jobs, runs their handlers, heartbeats, reaps, and shuts down gently.

One asyncio process serves one or more queues with a shared concurrency limit. Per
queue it runs a claim loop that blocks on the server when idle; for the process as a
whole, one heartbeat task renews every queue's heartbeat and one reaper task recovers
the jobs of workers whose heartbeat expired.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import time
import traceback
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from engine import health, metrics
from engine.app import App, Handler, JobContext, Retry, backoff_ms
from engine.connection import check_server, create_redis
from engine.errors import LeaseLost
from engine.idempotency import IdempotencyStore, RedisIdempotencyStore
from engine.jobs import ClaimedJob, parse_payload
from engine.keys import queues_key
from engine.names import check_name
from engine.ops import AckItem, ClaimReply, ReapReply, WorkerOps
from engine.scripts import Scripts
from engine.settings import Settings
from sinks.breaker import BreakerState, CircuitBreaker

if TYPE_CHECKING:
    from ledger.shipper import Shipper
    from sinks.ndjson import NdjsonSink

log = structlog.get_logger("jobqueue.worker")

T = TypeVar("T")
R = TypeVar("R")

TRACEBACK_LIMIT = 4000
MAX_RETRY_PAUSE_S = 2.0
BREAKER_POLL_S = 0.1


class _Batcher(Generic[T, R]):
    """Group commit: calls made while a send is in flight go out together next time."""

    def __init__(self, send: Callable[[list[T]], Awaitable[list[R]]], max_batch: int) -> None:
        self._send = send
        self._max = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._task is None:
            self._task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self._max]
                del self._pending[: self._max]
                await self._send_batch(batch)
        finally:
            self._task = None

    async def _send_batch(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._send([item for item, _ in batch])
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)


@dataclass(slots=True)
class _Idem:
    """One run's idempotency: the store, the key ('' when the task is not idempotent),
    and whether the handler already committed its effect through `ctx.commit`."""

    store: IdempotencyStore
    key: str
    committed: bool


@dataclass(slots=True)
class _Running:
    job: ClaimedJob
    task: asyncio.Task[None] | None = None
    started: float = field(default_factory=time.monotonic)


@dataclass(slots=True)
class _Queue:
    name: str
    ops: WorkerOps
    running: dict[str, _Running] = field(default_factory=dict)
    acks: _Batcher[AckItem, str] | None = None
    recovering: asyncio.Lock = field(default_factory=asyncio.Lock)


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"


class Worker:
    """Runs the handlers of `app` for jobs claimed from `queues`."""

    def __init__(
        self,
        app: App,
        queues: list[str],
        settings: Settings,
        *,
        redis: Redis | None = None,
        worker_id: str | None = None,
    ) -> None:
        if not queues:
            msg = "a worker needs at least one queue"
            raise ValueError(msg)
        self.app = app
        self.settings = settings
        self.redis = redis or create_redis(settings)
        self._owns_redis = redis is None
        self.scripts = Scripts(self.redis)
        self.worker_id = check_name("worker id", worker_id or default_worker_id())
        self.log = log.bind(worker=self.worker_id)
        self._queues = [self._queue(name) for name in queues]
        self._in_flight = 0
        self._slot_free = asyncio.Event()
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._clock_offset_ms = 0.0
        self._threads = ThreadPoolExecutor(settings.concurrency, thread_name_prefix="jobqueue")
        self._loops: list[asyncio.Task[None]] = []
        self.stats = {"acked": 0, "failed": 0, "rejected": 0, "reaped_self": 0}
        self.breakers: dict[str, CircuitBreaker] = {}
        self._store: IdempotencyStore = app.idempotency_store or RedisIdempotencyStore()
        self._shipper: Shipper | None = None
        self._ledger: NdjsonSink | None = None
        self._shipper_task: asyncio.Task[None] | None = None
        self._endpoint: health.Endpoint | None = None

    def _queue(self, name: str) -> _Queue:
        ops = WorkerOps(self.scripts, check_name("queue", name), self.worker_id, self.settings)
        return _Queue(name, ops, acks=_Batcher(ops.ack, self.settings.claim_batch * 4))

    # -- life cycle ------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until `stop()` (or SIGTERM/SIGINT with `install_signal_handlers`)."""
        try:
            await check_server(self.redis, self.settings)
        except BaseException:
            if self._owns_redis:
                await self.redis.aclose()
            raise
        for queue in self._queues:
            await self._register(queue)
            await self.redis.sadd(queues_key(self.settings.namespace), queue.name)
        self.log.info(
            "worker_started",
            queues=[q.name for q in self._queues],
            concurrency=self.settings.concurrency,
        )
        self._start_shipper()
        self._loops = [asyncio.create_task(self._claim_loop(q)) for q in self._queues]
        self._loops += [
            asyncio.create_task(self._heartbeat_loop()),
            asyncio.create_task(self._reaper_loop()),
        ]
        try:
            self._endpoint = await health.serve_worker(self, [q.name for q in self._queues])
            await self._stopping.wait()
        finally:
            await self._shutdown()

    def stop(self) -> None:
        """Ask for a graceful stop: no new claims, in-flight jobs get the grace period."""
        self._stopping.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        self.log.info("shutdown_requested", signal=sig.name, grace_s=self.settings.shutdown_grace_s)
        self.stop()

    async def _shutdown(self) -> None:
        await cancel_all(self._loops[: len(self._queues)])
        await self._drain_in_flight()
        # Heartbeats and the reaper run until the in-flight jobs are done or given up.
        await cancel_all(self._loops[len(self._queues) :])
        for queue in self._queues:
            await self._leave(queue)
        await self._stop_shipper()
        if self._endpoint is not None:
            await self._endpoint.close()
        self._threads.shutdown(wait=False, cancel_futures=True)
        if self._owns_redis:
            await self.redis.aclose()
        self.log.info("worker_stopped", **self.stats)
        self._stopped.set()

    def _start_shipper(self) -> None:
        """Ship this worker's queues' outbox to NDJSON under ledger_folder/<worker id>."""
        if not self.settings.ledger_ship_in_worker:
            return
        from ledger.shipper import Shipper  # noqa: PLC0415 - only when the ledger is on
        from sinks.ndjson import NdjsonSink  # noqa: PLC0415
        from sinks.scrub import Scrubber  # noqa: PLC0415

        s = self.settings
        self._ledger = NdjsonSink(s.ledger_folder / self.worker_id)
        self._shipper = Shipper(
            self.redis, s, self._ledger, Scrubber(), [q.name for q in self._queues],
            consumer=self.worker_id, claim_idle_ms=s.ledger_claim_idle_ms,
        )  # fmt: skip
        self._shipper_task = asyncio.create_task(self._shipper.run())

    async def _stop_shipper(self) -> None:
        """Stop shipping after a last pass, so `returned` and `worker_left` ship too."""
        if self._shipper is None or self._ledger is None:
            return
        self._shipper.stop()
        if self._shipper_task is not None:
            await asyncio.gather(self._shipper_task, return_exceptions=True)
        try:
            await self._shipper.flush(timeout_s=5.0)
        except Exception as exc:
            self.log.warning("ledger_flush_failed", error=str(exc),
                             next="events stay in the outbox for the next shipper")  # fmt: skip
        await self._ledger.close()

    async def _drain_in_flight(self) -> None:
        tasks = [r.task for q in self._queues for r in q.running.values() if r.task]
        if tasks:
            self.log.info(
                "waiting_for_jobs", jobs=len(tasks), grace_s=self.settings.shutdown_grace_s
            )
            _, pending = await asyncio.wait(tasks, timeout=self.settings.shutdown_grace_s)
            await cancel_all(list(pending))

    async def _leave(self, queue: _Queue) -> None:
        """Give unfinished jobs back to their lanes and leave the registry."""
        jobs = [r.job for r in queue.running.values()]
        try:
            await queue.ops.give_back(jobs, reason="shutdown", leave=True)
        except RedisError as exc:
            self.log.error(
                "leave_failed", queue=queue.name, error=str(exc),
                next="the reaper returns these jobs once the heartbeat expires",
            )  # fmt: skip
            return
        if jobs:
            self.log.warning(
                "jobs_returned", queue=queue.name, jobs=[j.id for j in jobs],
                next="they wait at the head of their lanes",
            )  # fmt: skip

    # -- registration and heartbeats -------------------------------------------------

    def _describe(self) -> dict[str, str]:
        return {
            "host": socket.gethostname(),
            "pid": str(os.getpid()),
            "concurrency": str(self.settings.concurrency),
        }

    async def _register(self, queue: _Queue) -> None:
        server_ms = await queue.ops.register(self._describe())
        self._clock_offset_ms = server_ms - time.time() * 1000

    async def _heartbeat_loop(self) -> None:
        interval_s = self.settings.heartbeat_interval_ms / 1000
        while True:
            # Jitter spreads many workers' renewals; never later than the interval.
            await asyncio.sleep(interval_s * random.uniform(0.8, 1.0))
            for queue in self._queues:
                await self._beat(queue)

    async def _beat(self, queue: _Queue) -> None:
        try:
            alive = await queue.ops.renew()
        except RedisError as exc:
            self.stats.setdefault("heartbeat_failures", 0)
            self.stats["heartbeat_failures"] += 1
            metrics.HEARTBEAT_FAILURES.labels(queue.name).inc()
            self.log.warning(
                "heartbeat_failed",
                queue=queue.name,
                error=str(exc),
                next="retrying at the next interval",
            )
            return
        if not alive:
            await self._recover_lease(queue)

    async def _recover_lease(self, queue: _Queue) -> None:
        """Our heartbeat expired and we were reaped: abandon our jobs, register again."""
        async with queue.recovering:
            if not queue.running and await self._heartbeat_exists(queue):
                return
            abandoned = list(queue.running.values())
            self.stats["reaped_self"] += 1
            self.log.error(
                "worker_was_reaped",
                queue=queue.name,
                jobs=[r.job.id for r in abandoned],
                next="abandoning these jobs unacked (others run them again) and re-registering",
            )
            for running in abandoned:
                if running.task:
                    running.task.cancel()
            await self._register(queue)

    async def _heartbeat_exists(self, queue: _Queue) -> bool:
        key = queue.ops.keys.heartbeat(self.worker_id)
        return bool(await self.redis.exists(key))

    # -- the reaper ------------------------------------------------------------------

    async def _reaper_loop(self) -> None:
        interval_ms = self.settings.heartbeat_interval_ms
        while True:
            await asyncio.sleep(interval_ms / 1000 * random.uniform(0.5, 1.0))
            for queue in self._queues:
                await self._reap(queue, interval_ms)

    async def reap_once(self, queue_name: str) -> ReapReply:
        """One reaper pass over any queue, ignoring the lock's rate limit."""
        ops = WorkerOps(self.scripts, check_name("queue", queue_name), self.worker_id,
                        self.settings)  # fmt: skip
        await self.redis.delete(ops.keys.reaper_lock)
        return await ops.reap(self.settings.heartbeat_interval_ms)

    async def _reap(self, queue: _Queue, lock_ms: int) -> None:
        try:
            reply = await queue.ops.reap(lock_ms)
        except RedisError as exc:
            self.log.warning(
                "reap_failed", queue=queue.name, error=str(exc), next="retrying next interval"
            )
            return
        if reply.workers:
            metrics.reaped(queue.name, reply.workers, reply.returned, reply.dead)
            self.log.critical(
                "dead_workers_reaped", queue=queue.name, workers=reply.workers,
                jobs_returned=reply.returned, jobs_dead_lettered=reply.dead,
            )  # fmt: skip

    # -- claiming --------------------------------------------------------------------

    async def _claim_loop(self, queue: _Queue) -> None:
        errors = 0
        while not self._stopping.is_set():
            free = self.settings.concurrency - self._in_flight
            if free <= 0:
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            want = self._breaker_gate(min(free, self.settings.claim_batch))
            if want == 0:
                await asyncio.sleep(BREAKER_POLL_S)
                continue
            try:
                await self._claim_once(queue, want)
                errors = 0
            except RedisError as exc:
                errors += 1
                pause_s = min(MAX_RETRY_PAUSE_S, 0.05 * 2**errors)
                self.log.warning(
                    "claim_failed",
                    queue=queue.name,
                    error=str(exc),
                    next=f"retrying in {pause_s:.2f}s",
                )
                await asyncio.sleep(pause_s)

    def _breaker(self, task: str) -> CircuitBreaker | None:
        if not self.settings.breaker_enabled:
            return None
        breaker = self.breakers.get(task)
        if breaker is None:
            s = self.settings
            breaker = CircuitBreaker(
                f"task:{task}", failure_threshold=s.breaker_failure_threshold,
                failure_rate=s.breaker_failure_rate, window_s=s.breaker_window_s,
                min_calls=s.breaker_min_calls, reset_timeout_s=s.breaker_cooldown_s,
                probe_timeout_s=s.breaker_cooldown_s,
                on_change=metrics.breaker_listener(f"task:{task}"),
            )  # fmt: skip
            self.breakers[task] = breaker
        return breaker

    def _breaker_gate(self, want: int) -> int:
        """How many jobs to claim given the breakers: none while one is open (the failing
        task's jobs stay queued for the cool-down), one as the probe, else `want`."""
        probing = False
        for breaker in self.breakers.values():
            if breaker.state is BreakerState.CLOSED:
                continue
            if not breaker.allow():
                return 0
            probing = True
        return 1 if probing else want

    async def _claim_once(self, queue: _Queue, want: int) -> None:
        reply = await queue.ops.claim(want)
        if reply.status == "lost":
            await self._recover_lease(queue)
        elif reply.status == "paused":
            await self._idle(queue, self.settings.idle_block_s)
        elif reply.status == "bp":
            await self._refused(queue, reply)
        else:
            for job in reply.jobs:
                self._start(queue, job)
            if len(reply.jobs) < want:
                await self._idle(queue, self._idle_timeout(reply.next_due_ms))

    async def _refused(self, queue: _Queue, reply: ClaimReply) -> None:
        self.log.error(
            "claims_refused_backpressure", queue=queue.name, backlog=reply.backlog,
            age_ms=reply.age_ms, next="waiting for the shipper to catch up",
        )  # fmt: skip
        await asyncio.sleep(1.0)

    def _idle_timeout(self, next_due_ms: int) -> float:
        timeout_s = self.settings.idle_block_s
        if next_due_ms:
            server_now_ms = time.time() * 1000 + self._clock_offset_ms
            timeout_s = min(timeout_s, (next_due_ms - server_now_ms) / 1000)
        return max(0.01, timeout_s)

    async def _idle(self, queue: _Queue, timeout_s: float) -> None:
        """Block on the server until an enqueue wakes us (or the timeout passes)."""
        await self.redis.blpop([queue.ops.keys.wake], timeout=timeout_s)

    # -- running jobs ----------------------------------------------------------------

    def _start(self, queue: _Queue, job: ClaimedJob) -> None:
        self._in_flight += 1
        running = _Running(job)
        queue.running[job.id] = running
        running.task = asyncio.create_task(self._run(queue, running))

    async def _run(self, queue: _Queue, running: _Running) -> None:
        job = running.job
        try:
            await self._execute(queue, job, running.started)
        except asyncio.CancelledError:
            self.log.info(
                "job_abandoned", queue=queue.name, job_id=job.id, task=job.task, attempt=job.attempt
            )
        finally:
            if queue.running.get(job.id) is running:
                del queue.running[job.id]
            self._in_flight -= 1
            self._slot_free.set()

    async def _execute(self, queue: _Queue, job: ClaimedJob, started: float) -> None:
        handler = self.app.handlers.get(job.task)
        if handler is None:
            known = ", ".join(sorted(self.app.handlers)) or "none"
            error = f"no handler for task {job.task!r} in this worker (registered: {known})"
            self.log.error(
                "unknown_task",
                queue=queue.name,
                job_id=job.id,
                task=job.task,
                next="dead-lettering the job",
            )
            await self._fail(queue, job, started, error, "", retryable=False, reason="unknown_task")
            return
        try:
            payload = parse_payload(job.payload, what=f"payload of job {job.id}")
        except ValueError as exc:
            await self._fail(
                queue, job, started, str(exc), "", retryable=False, reason="invalid_payload"
            )
            return
        await self._call(queue, job, handler, payload, started)

    async def _call(
        self, queue: _Queue, job: ClaimedJob, handler: Handler, payload: Any, started: float
    ) -> None:
        ctx = JobContext(
            queue.name, job.id, job.task, job.lane, job.attempt, self.worker_id, job.trace_id
        )
        idem = _Idem(self._store, "", False)
        if handler.idempotent:
            key = handler.idempotency_key(payload) if handler.idempotency_key else job.id
            idem.key = check_name("idempotency key", key)
            if not await self._begin(queue, job, idem, started):
                return
            ctx._commit = partial(self._commit, queue, job, idem, ctx)
        try:
            if handler.is_async:
                await handler.fn(ctx, payload)
            else:
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(self._threads, handler.fn, ctx, payload)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._record_outcome(job.task, failed=True)
            await self._handler_failed(queue, job, handler, exc, started, idem=idem)
        else:
            self._record_outcome(job.task, failed=False)
            await self._succeeded(queue, job, started, idem, ctx)

    async def _begin(self, queue: _Queue, job: ClaimedJob, idem: _Idem, started: float) -> bool:
        """Claim the job's idempotency record; False when the handler must not run."""
        found = await idem.store.begin(queue.ops, idem.key, job)
        if found.outcome == "run":
            return True
        if found.outcome == "done":
            self.log.info("job_deduplicated", queue=queue.name, job_id=job.id, key=idem.key,
                          original_job=found.other_job, next="acking without running")  # fmt: skip
            item = AckItem(job.id, job.token, 0, idem.key, duplicate_of=found.other_job or "?")
            await self._ack(queue, job, started, item)
            return False
        await self._fail(
            queue, job, started, f"idempotency key {idem.key!r} is held by job {found.other_job}",
            "", retryable=True, reason="idempotency_busy",
            delay_ms=self.settings.heartbeat_interval_ms, counted=False,
        )  # fmt: skip
        return False

    async def _commit(
        self,
        queue: _Queue,
        job: ClaimedJob,
        idem: _Idem,
        ctx: JobContext,
        commands: tuple[tuple[Any, ...], ...],
    ) -> list[Any]:
        reply = await queue.ops.idem_commit(idem.key, job, commands, ctx.outbox.messages)
        if reply[0] != "ok":
            msg = (
                f"job {job.id} in queue {queue.name!r} no longer holds idempotency key "
                f"{idem.key!r} ({reply[0]}): its effect was not applied"
            )
            raise LeaseLost(msg)
        ctx.outbox.messages.clear()
        idem.committed = True
        return reply[1:]

    async def _succeeded(
        self, queue: _Queue, job: ClaimedJob, started: float, idem: _Idem, ctx: JobContext
    ) -> None:
        if idem.key and not idem.store.in_engine and not idem.committed:
            await idem.store.complete(queue.ops, idem.key, job)
        run_ms = int((time.monotonic() - started) * 1000)
        in_engine_key = idem.key if idem.store.in_engine else ""
        item = AckItem(job.id, job.token, run_ms, in_engine_key, "", tuple(ctx.outbox.messages))
        await self._ack(queue, job, started, item)

    def _record_outcome(self, task: str, *, failed: bool) -> None:
        breaker = self._breaker(task)
        if breaker is None:
            return
        if failed:
            breaker.record_failure()
        else:
            breaker.record_success()

    async def _handler_failed(
        self,
        queue: _Queue,
        job: ClaimedJob,
        handler: Handler,
        exc: Exception,
        started: float,
        *,
        idem: _Idem,
    ) -> None:
        if idem.key and not idem.store.in_engine and not idem.committed:
            await idem.store.release(queue.ops, idem.key, job)
        policy = handler.policy
        error = f"{type(exc).__name__}: {exc}"
        tb = "".join(traceback.format_exception(exc))[-TRACEBACK_LIMIT:]
        retryable = policy.retries(exc)
        delay_ms = self._retry_delay_ms(handler, exc, job)
        await self._fail(
            queue,
            job,
            started,
            error,
            tb,
            retryable=retryable,
            reason="non_retryable",
            delay_ms=delay_ms,
            max_attempts=policy.max_attempts or 0,
            idem_key=idem.key if idem.store.in_engine and not idem.committed else "",
        )

    def _retry_delay_ms(self, handler: Handler, exc: Exception, job: ClaimedJob) -> int:
        if isinstance(exc, Retry) and exc.delay_s is not None:
            return int(exc.delay_s * 1000)
        policy, s = handler.policy, self.settings
        base = s.backoff_base_ms if policy.backoff_base_ms is None else policy.backoff_base_ms
        cap = s.backoff_cap_ms if policy.backoff_cap_ms is None else policy.backoff_cap_ms
        return backoff_ms(job.attempt, base, cap)

    # -- acks and failures -----------------------------------------------------------

    async def _ack(self, queue: _Queue, job: ClaimedJob, started: float, item: AckItem) -> None:
        run_ms = item.run_ms
        acks = queue.acks
        assert acks is not None
        status = await self._persist(queue, job, lambda: acks.submit(item))
        if status == "ok":
            self.stats["acked"] += 1
            outcome: metrics.Outcome = "deduplicated" if item.duplicate_of else "acked"
            metrics.job_finished(queue.name, job.task, outcome, run_ms)
            self.log.debug(
                "job_acked",
                queue=queue.name,
                job_id=job.id,
                task=job.task,
                attempt=job.attempt,
                duration_ms=run_ms,
            )
        else:
            self._rejected(queue, job, status, "ack")

    async def _fail(
        self,
        queue: _Queue,
        job: ClaimedJob,
        started: float,
        error: str,
        tb: str,
        *,
        retryable: bool,
        reason: str,
        delay_ms: int = 0,
        max_attempts: int = 0,
        counted: bool = True,
        idem_key: str = "",
    ) -> None:
        run_ms = int((time.monotonic() - started) * 1000)

        async def send() -> str:
            return await queue.ops.fail(
                job, error, traceback=tb, retryable=retryable, reason=reason,
                delay_ms=delay_ms, run_ms=run_ms, max_attempts=max_attempts,
                counted=counted, idem_key=idem_key,
            )  # fmt: skip

        status = await self._persist(queue, job, send)
        self._log_failure(queue, job, status, error, run_ms)

    def _log_failure(
        self, queue: _Queue, job: ClaimedJob, status: str, error: str, run_ms: int
    ) -> None:
        kind, _, detail = status.partition(":")
        fields = {
            "queue": queue.name,
            "job_id": job.id,
            "task": job.task,
            "attempt": job.attempt,
            "error": error,
            "duration_ms": run_ms,
        }
        if kind == "retried":
            self.stats["failed"] += 1
            metrics.job_finished(queue.name, job.task, "failed", run_ms)
            self.log.info("job_failed", **fields, next="retrying", due_ms=int(detail) or None)
        elif kind == "dead":
            self.stats["failed"] += 1
            metrics.job_finished(queue.name, job.task, "dead", run_ms)
            self.log.warning(
                "job_dead_lettered",
                **fields,
                reason=detail,
                next="kept in the dead-letter queue for an operator",
            )
        else:
            self._rejected(queue, job, status, "fail")

    def _rejected(self, queue: _Queue, job: ClaimedJob, status: str, op: str) -> None:
        self.stats["rejected"] += 1
        metrics.ack_rejected(queue.name, job.task, op)
        self.log.warning(
            "ack_rejected",
            queue=queue.name,
            job_id=job.id,
            op=op,
            reason=status.partition(":")[2],
            next="the job belongs to another claim now; nothing counted",
        )

    async def _persist(
        self, queue: _Queue, job: ClaimedJob, send: Callable[[], Awaitable[str]]
    ) -> str:
        """Send an ack or fail until Redis answers; a lost answer must not strand a job."""
        errors = 0
        while True:
            try:
                return await send()
            except RedisError as exc:
                errors += 1
                pause_s = min(MAX_RETRY_PAUSE_S, 0.05 * 2**errors)
                self.log.warning(
                    "finish_failed",
                    queue=queue.name,
                    job_id=job.id,
                    error=str(exc),
                    next=f"retrying in {pause_s:.2f}s",
                )
                await asyncio.sleep(pause_s)


async def cancel_all(tasks: list[asyncio.Task[None]], retry_s: float = 1.0) -> None:
    """Cancel tasks until they have ended. A cancellation that lands while redis-py is
    inside its connection code can be swallowed there, and a loop that lost it would run
    on for good: so cancel again until every task is done."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=retry_s)
    await asyncio.gather(*tasks, return_exceptions=True)


async def run_worker(app: App, queues: list[str], settings: Settings) -> None:
    """Run a worker in the foreground with signal handling (the CLI entry point)."""
    worker = Worker(app, queues, settings)
    worker.install_signal_handlers()
    with contextlib.suppress(asyncio.CancelledError):
        await worker.run()
