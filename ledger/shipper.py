"""The shipper: moves each queue's outbox events to a sink, and deletes them once durable.

Every queue's stream `<ns>:{<queue>}:events` is read through one consumer group,
`jobqueue-shipper`, so that several shippers (each with its own consumer name) share the
work and no entry is handed to two of them at once. One step over a queue:

1. reads up to `batch_size` entries: first this consumer's own pending entries (those it
   read before a restart or a sink failure), then, every half `claim_idle_ms`, entries
   another consumer has held for longer than `claim_idle_ms` (XAUTOCLAIM: that shipper is
   taken to have crashed), and otherwise new entries, blocking up to `block_ms`;
2. builds a `JobEvent` from each entry and scrubs it (DESIGN invariant 6);
3. writes the batch to the sink and, only once the write returned, acknowledges and
   deletes the entries in one MULTI/EXEC (all on the queue's one key, so one slot).

When the sink raises `SinkUnavailable`, nothing is acknowledged: the entries stay pending
for this consumer, and the next step, after an exponential pause, sends them again. A
crash between the write and the acknowledgement re-sends the batch; consumers of the
ledger dedupe by event id (DESIGN invariant 4).

Backpressure itself is enforced by the enqueue and claim scripts (`ledger_max_backlog`,
`ledger_max_age_ms`); the shipper watches the same bounds, logs when a queue crosses them
and when it is back under, and shows the state in `backpressure`.

Known shortcomings: an entry that cannot be read as an event (a bug upstream) is logged
and left pending in the stream, so it counts toward the backlog until an operator removes
it; and consumers of the group are never removed, so each shipper name ever used stays
listed in XINFO CONSUMERS (with nothing pending) until an operator deletes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from engine import metrics
from engine.keys import QueueKeys, queues_key
from engine.settings import Settings
from ledger.errors import SchemaViolation
from ledger.event import JobEvent
from sinks.base import Sink, SinkUnavailable, bounded
from sinks.scrub import Scrubber

log = structlog.get_logger("jobqueue.shipper")

GROUP: Final = "jobqueue-shipper"
DEFAULT_BATCH_SIZE: Final = 500
DEFAULT_BLOCK_MS: Final = 1000
DEFAULT_CLAIM_IDLE_MS: Final = 30_000
QUEUES_REFRESH_S: Final = 5.0
BACKPRESSURE_CHECK_S: Final = 1.0
RETRY_BASE_S: Final = 0.1
RETRY_MAX_S: Final = 5.0
MIN_AUTOCLAIM_INTERVAL_S: Final = 0.1
# A sink raises within its own deadline; this outer bound only guards against one that
# does not, and leaves it room to raise its own, more precise error first.
WRITE_DEADLINE_FACTOR: Final = 2.0

Entry = tuple[str, dict[str, str]]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _entries(raw: Iterable[Any]) -> list[Entry]:
    """Stream entries with str ids and fields; deleted entries keep their id, no fields."""
    found = []
    for entry_id, fields in raw:
        if entry_id is None:  # Redis 6.2 XAUTOCLAIM: an entry deleted while pending
            continue
        pairs = (fields or {}).items()
        found.append((_text(entry_id), {_text(k): _text(v) for k, v in pairs}))
    return found


def _stream_ms(entry_id: str) -> int:
    return int(entry_id.partition("-")[0])


@dataclass(slots=True)
class _QueueState:
    """Where the shipper stands on one queue."""

    keys: QueueKeys
    group_ready: bool = False
    pending_from: str | None = "0"  # own pending entries to re-read from; None once done
    autoclaim_from: str = "0-0"
    autoclaim_at: float = 0.0  # monotonic time of the next XAUTOCLAIM pass
    failures: int = 0  # consecutive failed steps
    retry_in_s: float = 0.0  # the pause after the last failed step
    checked_at: float = 0.0  # monotonic time of the last backpressure check


class Shipper:
    """Ships the outbox streams of `queues` (default: every known queue) to `sink`.

    `run()` serves until `stop()`; `ship_once(queue)` makes one step, for tests and tools.
    The caller owns `redis` and `sink` and closes them after `run()` returned.

    Counters, ready for metrics: `shipped` (events per sink name), `errors` (failed steps
    by cause: sink_unavailable, redis, unexpected; and malformed entries), `reclaimed`
    (entries taken over from other consumers) and `backpressure` (per queue, whether it is
    past a bound).
    """

    def __init__(
        self,
        redis: Redis,
        settings: Settings,
        sink: Sink,
        scrubber: Scrubber,
        queues: list[str] | None = None,
        *,
        consumer: str,
        batch_size: int = DEFAULT_BATCH_SIZE,
        block_ms: int = DEFAULT_BLOCK_MS,
        claim_idle_ms: int = DEFAULT_CLAIM_IDLE_MS,
    ) -> None:
        if batch_size < 1 or block_ms < 1 or claim_idle_ms < 1:
            msg = "batch_size, block_ms and claim_idle_ms must each be at least 1"
            raise ValueError(msg)
        self.redis = redis
        self.settings = settings
        self.sink = sink
        self.scrubber = scrubber
        self.consumer = consumer
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms

        self.shipped: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.reclaimed = 0
        self.backpressure: dict[str, bool] = {}

        self._fixed_queues = list(queues) if queues is not None else None
        self._states: dict[str, _QueueState] = {}
        self._stopping = asyncio.Event()
        self.log = log.bind(consumer=consumer, sink=sink.name)

    # -- running -----------------------------------------------------------------------

    async def run(self) -> None:
        """Ship every queue until `stop()`; queues that appear later are picked up too."""
        self.log.info("shipper_started", queues=self._fixed_queues or "all")
        loops: dict[str, asyncio.Task[None]] = {}
        try:
            while not self._stopping.is_set():
                for queue in await self._queues_or_none():
                    if queue not in loops or loops[queue].done():
                        loops[queue] = asyncio.create_task(self._queue_loop(queue))
                await self._pause(QUEUES_REFRESH_S)
        finally:
            await self._finish(list(loops.values()))
            self.log.info("shipper_stopped", shipped=dict(self.shipped), errors=dict(self.errors))

    def stop(self) -> None:
        """Ask `run()` to return once the steps in progress are done."""
        self._stopping.set()

    async def flush(self, *, timeout_s: float) -> int:
        """Ship what is left in every queue, for at most `timeout_s`; returns events shipped.

        Meant for a last pass after `run()` returned (a worker's final events). It stops
        at the first sink failure or at the deadline; what is left stays in the streams.
        """
        total = 0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                for queue in await self.queues():
                    while shipped := await self.ship_once(queue):
                        total += shipped
        return total

    async def queues(self) -> list[str]:
        """The queues shipped: the given list, or the registry of known queues."""
        if self._fixed_queues is not None:
            return list(self._fixed_queues)
        members = await self.redis.smembers(queues_key(self.settings.namespace))
        return sorted(_text(name) for name in members)

    async def _queues_or_none(self) -> list[str]:
        try:
            return await self.queues()
        except RedisError as exc:
            self.errors["redis"] += 1
            self.log.warning(
                "shipper_queue_list_failed",
                error=str(exc),
                next=f"shipping the queues known so far; reading the list again in "
                f"{QUEUES_REFRESH_S:g}s",
            )
            return []

    async def _queue_loop(self, queue: str) -> None:
        state = self._state(queue)
        while not self._stopping.is_set():
            await self._step(queue, state)
            if state.failures:
                await self._pause(state.retry_in_s)

    async def _step(self, queue: str, state: _QueueState) -> None:
        try:
            await self.ship_once(queue, block_ms=self.block_ms)
            await self._check_backpressure_now_and_then(queue, state)
        except RedisError as exc:
            self._step_failed(state, "redis")
            self.log.warning(
                "shipper_redis_error",
                queue=queue,
                error=str(exc),
                next=f"retrying in {state.retry_in_s:.1f}s",
            )
        except Exception:
            # The shipper must outlive any one bad step: while it is down, backpressure
            # stops the whole queue.
            self._step_failed(state, "unexpected")
            self.log.exception(
                "shipper_step_failed",
                queue=queue,
                next=f"retrying in {state.retry_in_s:.1f}s",
            )

    def _step_failed(self, state: _QueueState, kind: str) -> None:
        self.errors[kind] += 1
        metrics.ship_failed(self.sink.name, kind)
        state.failures += 1
        state.retry_in_s = self._retry_delay_s(state.failures)
        state.pending_from = "0"  # whatever this consumer holds is sent again

    @staticmethod
    def _retry_delay_s(failures: int) -> float:
        delay_s = min(RETRY_MAX_S, RETRY_BASE_S * 2.0 ** max(0, failures - 1))
        return delay_s * random.uniform(0.5, 1.0)  # several shippers do not retry in step

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake up at once on `stop()`."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _finish(self, loops: Sequence[asyncio.Task[None]]) -> None:
        if not loops:
            return
        grace_s = self.block_ms / 1000 + WRITE_DEADLINE_FACTOR * self.sink.write_timeout_s + 1
        _, pending = await asyncio.wait(loops, timeout=grace_s)
        for task in pending:
            task.cancel()  # its entries stay pending and are sent again later
        await asyncio.gather(*loops, return_exceptions=True)

    # -- one step ------------------------------------------------------------------------

    async def ship_once(self, queue: str, *, block_ms: int | None = None) -> int:
        """Read one batch of `queue`, ship it and delete it; return the events shipped.

        Returns 0 when there was nothing to ship, or when the sink failed (then the
        entries stay pending and the next call sends them again). `block_ms` waits that
        long for new entries when there are none.
        """
        state = self._state(queue)
        await self._ensure_group(state)
        entries = await self._next_entries(state, block_ms)
        try:
            shipped = await self._ship(state, entries)
        except SinkUnavailable as exc:
            await self._sink_failed(state, exc)
            return 0
        self._resumed(state)
        return shipped

    def _state(self, queue: str) -> _QueueState:
        if queue not in self._states:
            self._states[queue] = _QueueState(QueueKeys(queue, self.settings.namespace))
        return self._states[queue]

    async def _ensure_group(self, state: _QueueState) -> None:
        if state.group_ready:
            return
        try:
            await self.redis.xgroup_create(state.keys.events, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        state.group_ready = True

    async def _next_entries(self, state: _QueueState, block_ms: int | None) -> list[Entry]:
        try:
            if state.pending_from is not None:
                entries = await self._read(state, state.pending_from, None)
                if entries:
                    state.pending_from = entries[-1][0]
                    return entries
                state.pending_from = None

            if time.monotonic() >= state.autoclaim_at:
                entries = await self._autoclaim(state)
                if entries:
                    return entries

            return await self._read(state, ">", block_ms)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # The stream or its group was deleted: make them again at the next step.
            state.group_ready, state.pending_from = False, "0"
            return []

    async def _read(self, state: _QueueState, start: str, block_ms: int | None) -> list[Entry]:
        reply: Any = await self.redis.xreadgroup(
            GROUP,
            self.consumer,
            {state.keys.events: start},
            count=self.batch_size,
            block=block_ms,
        )
        if not reply:
            return []
        if isinstance(reply, dict):  # RESP3: {stream: [entries]}
            (raw,) = next(iter(reply.values()))
            return _entries(raw)
        return _entries(reply[0][1])  # RESP2: [[stream, entries]]

    async def _autoclaim(self, state: _QueueState) -> list[Entry]:
        """Take over entries other consumers have held past `claim_idle_ms`, a page a call."""
        reply = await self.redis.xautoclaim(
            state.keys.events,
            GROUP,
            self.consumer,
            self.claim_idle_ms,
            start_id=state.autoclaim_from,
            count=self.batch_size,
        )
        state.autoclaim_from = _text(reply[0])
        if state.autoclaim_from == "0-0":  # the whole pending list was scanned
            interval_s = max(MIN_AUTOCLAIM_INTERVAL_S, self.claim_idle_ms / 2000)
            state.autoclaim_at = time.monotonic() + interval_s

        entries = _entries(reply[1])
        if entries:
            self.reclaimed += len(entries)
            self.log.warning(
                "pending_events_reclaimed",
                queue=state.keys.queue,
                events=len(entries),
                idle_ms=self.claim_idle_ms,
                next="shipping them again; the shipper that held them is taken to have died",
            )
        return entries

    async def _ship(self, state: _QueueState, entries: list[Entry]) -> int:
        """Write the entries' events to the sink, then acknowledge and delete the entries."""
        if not entries:
            return 0
        queue = state.keys.queue
        events, done_ids = self._events(queue, entries)
        if events:
            await self._write([self.scrubber.scrub(event) for event in events])

        await self._ack_and_delete(state.keys.events, done_ids)
        self.shipped[self.sink.name] += len(events)
        metrics.events_shipped(self.sink.name, len(events))
        self.log.debug("events_shipped", queue=queue, events=len(events))
        return len(events)

    def _events(self, queue: str, entries: list[Entry]) -> tuple[list[JobEvent], list[str]]:
        """The events to ship, and the ids to acknowledge once they are durable."""
        events, done_ids = [], []
        for entry_id, fields in entries:
            if not fields:  # deleted from the stream while pending: nothing left to ship
                done_ids.append(entry_id)
                continue
            try:
                events.append(JobEvent.from_stream(queue, entry_id, fields))
            except SchemaViolation as exc:
                self.errors["malformed"] += 1
                self.log.error(
                    "outbox_entry_malformed",
                    queue=queue,
                    entry_id=entry_id,
                    error=str(exc),
                    next="left pending in the stream, never deleted: an operator must look",
                )
                continue
            done_ids.append(entry_id)
        return events, done_ids

    async def _write(self, batch: list[JobEvent]) -> None:
        deadline_s = WRITE_DEADLINE_FACTOR * self.sink.write_timeout_s
        await bounded(self.sink.name, self.sink.write(batch), deadline_s)

    async def _ack_and_delete(self, stream: str, ids: list[str]) -> None:
        if not ids:
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(stream, GROUP, *ids)
            pipe.xdel(stream, *ids)
            await pipe.execute()

    async def _sink_failed(self, state: _QueueState, exc: SinkUnavailable) -> None:
        self._step_failed(state, "sink_unavailable")
        backlog, age_ms = await self.backlog(state.keys.queue)
        self.log.error(
            "sink_unavailable_events_stay_in_redis",
            queue=state.keys.queue,
            backlog=backlog,
            oldest_age_ms=age_ms,
            attempt=state.failures,
            error=str(exc),
            next=f"retrying in {state.retry_in_s:.1f}s",
        )

    def _resumed(self, state: _QueueState) -> None:
        if state.failures:
            self.log.info("shipping_resumed", queue=state.keys.queue, failed_steps=state.failures)
        state.failures = 0

    # -- backlog and backpressure ------------------------------------------------------------

    async def backlog(self, queue: str) -> tuple[int, int]:
        """Un-shipped events of `queue`, and the age in ms (server clock) of the oldest."""
        stream = self._state(queue).keys.events
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xlen(stream)
            pipe.xrange(stream, count=1)
            length, first = await pipe.execute()
        if not first:
            return int(length), 0
        # TIME apart: a cluster pipeline refuses a command that names no key.
        now_s, now_us = await self.redis.time()
        now_ms = int(now_s) * 1000 + int(now_us) // 1000
        return int(length), max(0, now_ms - _stream_ms(_text(first[0][0])))

    async def check_backpressure(self, queue: str) -> bool:
        """Whether `queue` is past a ledger bound now; logs when that changes."""
        s = self.settings
        engaged = False
        if s.ledger_max_backlog or s.ledger_max_age_ms:
            backlog, age_ms = await self.backlog(queue)
            engaged = self._past_bound(backlog, age_ms)
            self._log_backpressure(queue, engaged, backlog, age_ms)
        self.backpressure[queue] = engaged
        return engaged

    def _past_bound(self, backlog: int, age_ms: int) -> bool:
        """The test the enqueue and claim scripts make (`over_backlog` in lib.lua)."""
        s = self.settings
        too_many = 0 < s.ledger_max_backlog <= backlog
        too_old = 0 < s.ledger_max_age_ms <= age_ms
        return backlog > 0 and (too_many or too_old)

    def _log_backpressure(self, queue: str, engaged: bool, backlog: int, age_ms: int) -> None:
        was = self.backpressure.get(queue, False)
        bounds = {
            "max_backlog": self.settings.ledger_max_backlog,
            "max_age_ms": self.settings.ledger_max_age_ms,
        }
        if engaged and not was:
            self.log.error(
                "ledger_backpressure_engaged",
                queue=queue,
                backlog=backlog,
                oldest_age_ms=age_ms,
                **bounds,
                next="enqueues and claims on this queue are refused until the shipper catches up",
            )
        elif was and not engaged:
            self.log.info(
                "ledger_backpressure_released",
                queue=queue,
                backlog=backlog,
                oldest_age_ms=age_ms,
                **bounds,
                next="enqueues and claims are accepted again",
            )

    async def _check_backpressure_now_and_then(self, queue: str, state: _QueueState) -> None:
        now = time.monotonic()
        if now - state.checked_at >= BACKPRESSURE_CHECK_S:
            state.checked_at = now
            await self.check_backpressure(queue)
