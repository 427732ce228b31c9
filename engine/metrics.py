"""Prometheus metrics of a jobqueue process, kept in one registry of its own (`REGISTRY`).

Counters and the job duration histogram move where things happen: the worker counts a
job's outcome where it logs it, the reaper counts what it recovered, the shipper counts
the events it shipped and its failed steps, a task breaker's `on_change` sets its state.
A shipper's fallback sink (its breaker, whether it is in use, its bytes on disk) is read
when scraped, like the queues.

Queue-wide gauges are read from Redis when the endpoint is scraped (`read_queue`), for
the process's own queues only, with one command per key: LLEN per lane, ZCARD, LLEN of
the dead letters, XLEN and XRANGE COUNT 1 of the outbox (and TIME), SMEMBERS of the worker
registry and one EXISTS over its members' heartbeats. Nothing walks the keyspace.

Every name starts with `jobqueue_`. Several processes export the same queue-wide gauges;
the alert rules in deploy/prometheus/alerts.yml take the `max by (queue)` of them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Final, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from redis.asyncio import Redis

from engine.keys import QueueKeys
from engine.settings import Settings
from sinks.breaker import BreakerState, StateListener

Outcome = Literal["acked", "failed", "dead", "deduplicated", "rejected"]

REGISTRY: Final = CollectorRegistry(auto_describe=True)
ProcessCollector(namespace="jobqueue", registry=REGISTRY)

# Job runs last from milliseconds to the length of a heartbeat TTL and beyond.
DURATION_BUCKETS_S: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
)  # fmt: skip
LOOP_LAG_INTERVAL_S: Final = 0.5
BREAKER_CODES: Final = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


def _gauge(name: str, doc: str, *labels: str) -> Gauge:
    return Gauge(name, doc, labels, registry=REGISTRY)


def _counter(name: str, doc: str, *labels: str) -> Counter:
    return Counter(name, doc, labels, registry=REGISTRY)


# -- queues (read from Redis on scrape) -----------------------------------------------------

QUEUE_LENGTH = _gauge("jobqueue_queue_length", "Ready jobs in a lane.", "queue", "lane")
SCHEDULED = _gauge("jobqueue_scheduled_jobs", "Delayed jobs and retries not yet due.", "queue")
DEAD_LETTERS = _gauge("jobqueue_dead_letters", "Jobs in the dead-letter queue.", "queue")
IN_FLIGHT = _gauge(
    "jobqueue_jobs_in_flight", "Jobs a worker process has claimed and not finished.",
    "queue", "worker",
)  # fmt: skip
WORKERS_LIVE = _gauge(
    "jobqueue_workers_live", "Registered workers whose heartbeat key exists.", "queue"
)
LEDGER_BACKLOG = _gauge(
    "jobqueue_ledger_backlog", "Un-shipped events in the queue's outbox stream.", "queue"
)
LEDGER_OLDEST_AGE = _gauge(
    "jobqueue_ledger_oldest_event_age_seconds",
    "Age of the oldest un-shipped event, by the Redis server clock (0 when none).",
    "queue",
)
BACKPRESSURE = _gauge(
    "jobqueue_ledger_backpressure",
    "1 while the queue is past a ledger bound, so enqueues and claims are refused.",
    "queue",
)
REDIS_UP = _gauge("jobqueue_redis_up", "1 when the last read of the queue gauges reached Redis.")

# -- jobs (counted by the worker) -------------------------------------------------------------

JOBS = _counter(
    "jobqueue_jobs",
    "Finished runs by outcome: acked, failed (retried later), dead (dead-lettered), "
    "deduplicated (acked without running), rejected (a stale ack or fail, not counted).",
    "queue", "task", "outcome",
)  # fmt: skip
JOB_DURATION = Histogram(
    "jobqueue_job_duration_seconds",
    "Run time of handlers that acked, failed or dead-lettered their job.",
    ("queue", "task"),
    buckets=DURATION_BUCKETS_S,
    registry=REGISTRY,
)
RETRIES = _counter("jobqueue_retries", "Jobs scheduled for another attempt.", "queue", "task")
REAPED = _counter("jobqueue_reaped", "Dead workers reaped by this process's reaper.", "queue")
REAPED_JOBS = _counter(
    "jobqueue_reaped_jobs",
    "Jobs recovered from dead workers: returned to their lane, or dead (crash limit).",
    "queue", "outcome",
)  # fmt: skip
ACKS_REJECTED = _counter(
    "jobqueue_acks_rejected",
    "Acks (op=ack) and fails (op=fail) refused as stale: the job had been reaped.",
    "queue", "op",
)  # fmt: skip
HEARTBEAT_FAILURES = _counter(
    "jobqueue_heartbeat_failures", "Heartbeat renewals that failed on a Redis error.", "queue"
)

# -- the ledger (counted by the shipper, sink state read on scrape) ---------------------------

EVENTS_SHIPPED = _counter(
    "jobqueue_ledger_events_shipped", "Events written durably by a sink.", "sink"
)
SHIP_ERRORS = _counter(
    "jobqueue_ledger_ship_errors",
    "Failed shipper steps by cause: sink_unavailable (a sink error), redis, unexpected.",
    "sink", "cause",
)  # fmt: skip
SINK_UP = _gauge("jobqueue_sink_up", "1 when the sink's last write succeeded, else 0.", "sink")
FALLBACK_ACTIVE = _gauge(
    "jobqueue_ledger_fallback_active",
    "1 while the primary sink's events go to the local NDJSON fallback.",
    "sink",
)
FALLBACK_BYTES = _gauge(
    "jobqueue_ledger_fallback_bytes",
    "Bytes in the fallback folder, drained segments included.",
    "sink",
)

# -- the process ------------------------------------------------------------------------------

BREAKER_STATE = _gauge(
    "jobqueue_breaker_state", "Circuit breaker state: 0 closed, 1 half-open, 2 open.", "breaker"
)
BREAKER_TRANSITIONS = _counter(
    "jobqueue_breaker_transitions", "Circuit breaker state changes, by new state.",
    "breaker", "state",
)  # fmt: skip
LOOP_LAG = _gauge(
    "jobqueue_event_loop_lag_seconds", "How late the event loop last woke from a short sleep."
)


# -- hooks --------------------------------------------------------------------------------------


def job_finished(queue: str, task: str, outcome: Outcome, run_ms: int) -> None:
    """Count one job outcome; a handler that ran also has its run time observed."""
    JOBS.labels(queue, task, outcome).inc()
    if outcome in ("acked", "failed", "dead"):
        JOB_DURATION.labels(queue, task).observe(run_ms / 1000)
    if outcome == "failed":
        RETRIES.labels(queue, task).inc()


def ack_rejected(queue: str, task: str, op: str) -> None:
    JOBS.labels(queue, task, "rejected").inc()
    ACKS_REJECTED.labels(queue, op).inc()


def reaped(queue: str, workers: int, returned: int, dead: int) -> None:
    """Count one reaper pass's work."""
    REAPED.labels(queue).inc(workers)
    REAPED_JOBS.labels(queue, "returned").inc(returned)
    REAPED_JOBS.labels(queue, "dead").inc(dead)


def breaker_listener(name: str) -> StateListener:
    """An `on_change` for the breaker `name` that keeps its state gauge; it starts closed."""
    BREAKER_STATE.labels(name).set(BREAKER_CODES[BreakerState.CLOSED])

    def changed(old: BreakerState, new: BreakerState) -> None:
        BREAKER_STATE.labels(name).set(BREAKER_CODES[new])
        BREAKER_TRANSITIONS.labels(name, new.value).inc()

    return changed


def events_shipped(sink: str, events: int) -> None:
    """Count events a sink confirmed durable; a write that succeeded shows the sink up."""
    if events:
        EVENTS_SHIPPED.labels(sink).inc(events)
        SINK_UP.labels(sink).set(1)


def ship_failed(sink: str, cause: str) -> None:
    """Count a failed shipper step; a sink failure shows the sink down."""
    SHIP_ERRORS.labels(sink, cause).inc()
    if cause == "sink_unavailable":
        SINK_UP.labels(sink).set(0)


async def watch_loop_lag(interval_s: float = LOOP_LAG_INTERVAL_S) -> None:
    """Measure, forever, how much later than asked the event loop wakes from a sleep.

    A loop blocked by synchronous work delays every heartbeat and ack; this shows it.
    """
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        await asyncio.sleep(interval_s)
        LOOP_LAG.set(max(0.0, loop.time() - started - interval_s))


# -- queue gauges -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueSample:
    """One queue's state as read for the gauges and for /readyz.

    `worker`, `in_flight` and `heartbeat_ttl_ms` are set when read for a worker process:
    its claimed jobs and the time its heartbeat key has left (negative when it is gone).
    """

    queue: str
    lanes: dict[str, int]
    scheduled: int
    dead: int
    backlog: int
    oldest_age_ms: int
    workers_live: int
    backpressure: bool
    worker: str | None = None
    in_flight: int = 0
    heartbeat_ttl_ms: int = -2


def past_bound(settings: Settings, backlog: int, age_ms: int) -> bool:
    """The backpressure test the enqueue and claim scripts make (`over_backlog`, lib.lua)."""
    too_many = 0 < settings.ledger_max_backlog <= backlog
    too_old = 0 < settings.ledger_max_age_ms <= age_ms
    return backlog > 0 and (too_many or too_old)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def read_queue(
    redis: Redis, settings: Settings, queue: str, worker: str | None = None
) -> QueueSample:
    """Read one queue's gauges with one command per key (see the module docstring)."""
    keys = QueueKeys(queue, settings.namespace)
    async with redis.pipeline(transaction=False) as pipe:
        for lane in settings.lanes:
            pipe.llen(keys.lane(lane))
        pipe.zcard(keys.scheduled)
        pipe.llen(keys.dead)
        pipe.xlen(keys.events)
        pipe.xrange(keys.events, count=1)
        pipe.smembers(keys.workers)
        if worker is not None:
            pipe.llen(keys.processing(worker))
            pipe.pttl(keys.heartbeat(worker))
        replies = await pipe.execute()

    lanes = dict(zip(settings.lanes, map(int, replies[: len(settings.lanes)]), strict=True))
    scheduled, dead, backlog, first, members, *own = replies[len(lanes) :]
    age_ms = 0
    if first:  # TIME apart: a cluster pipeline refuses a command that names no key
        now_s, now_us = await redis.time()
        now_ms = int(now_s) * 1000 + int(now_us) // 1000
        age_ms = max(0, now_ms - int(_text(first[0][0]).partition("-")[0]))

    heartbeats = [keys.heartbeat(_text(member)) for member in members]
    live = int(await redis.exists(*heartbeats)) if heartbeats else 0  # one slot: hash tag
    in_flight, ttl_ms = (int(own[0]), int(own[1])) if own else (0, -2)
    return QueueSample(
        queue, lanes, int(scheduled), int(dead), int(backlog), age_ms, live,
        past_bound(settings, int(backlog), age_ms), worker, in_flight, ttl_ms,
    )  # fmt: skip


def publish(sample: QueueSample) -> None:
    """Set the queue gauges from a sample."""
    queue = sample.queue
    for lane, length in sample.lanes.items():
        QUEUE_LENGTH.labels(queue, lane).set(length)
    SCHEDULED.labels(queue).set(sample.scheduled)
    DEAD_LETTERS.labels(queue).set(sample.dead)
    WORKERS_LIVE.labels(queue).set(sample.workers_live)
    LEDGER_BACKLOG.labels(queue).set(sample.backlog)
    LEDGER_OLDEST_AGE.labels(queue).set(sample.oldest_age_ms / 1000)
    BACKPRESSURE.labels(queue).set(int(sample.backpressure))
    if sample.worker is not None:
        IN_FLIGHT.labels(queue, sample.worker).set(sample.in_flight)


def value(name: str, **labels: str) -> float:
    """A sample's current value in `REGISTRY` (0 when it was never set): for tests and tools."""
    found = REGISTRY.get_sample_value(name, labels)
    return 0.0 if found is None else found
