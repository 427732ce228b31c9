"""Operator views and actions over a JobQueue: workers, peek, lane purge, ledger backlog.

Everything here is reached from known key names (the queue registry, each queue's worker
registry, lanes and lists), never by walking the keyspace. The one change made here,
purging a lane, runs `lua/purge_lane.lua`, which writes a `purged` event per job.
`jobqueue workers|peek|purge|top` (engine/cli.py) and the dashboard (engine/tui.py) use it.
"""

from __future__ import annotations

import getpass
import json
import socket
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import structlog
from redis.asyncio import Redis

from engine.errors import ConfigError
from engine.queue import JobQueue
from engine.settings import Settings

PURGE_BATCH = 500
PAYLOAD_CHARS = 200
MAX_LISTED_IDS = 50

log = structlog.get_logger("jobqueue.admin")


@dataclass(frozen=True, slots=True)
class WorkerView:
    """One registered worker of a queue, as its heartbeat key and processing list show it.

    `state` is 'alive' while the heartbeat key exists, 'expired' once it is gone and the
    reaper has yet to recover the worker's jobs. `heartbeat_age_ms` is the server time
    since the last renewal (the key holds the server ms of that renewal).
    """

    queue: str
    worker: str
    state: str
    heartbeat_age_ms: int | None
    ttl_left_ms: int | None
    in_flight: int
    job_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class PeekedJob:
    """A ready job near the head of a lane; `payload` is cut to a readable length."""

    id: str
    task: str
    lane: str
    state: str
    attempts: int
    created_ms: int | None
    payload: str
    payload_truncated: bool


@dataclass(frozen=True, slots=True)
class PurgeResult:
    """What purging a lane did: jobs deleted, and stray ids (no ready record) dropped."""

    queue: str
    lane: str
    purged: int
    stray: int


@dataclass(frozen=True, slots=True)
class LedgerBacklog:
    """A queue's un-shipped outbox events and how old the oldest one is."""

    queue: str
    events: int
    oldest_age_ms: int | None
    past_bound: bool


def operator_name() -> str:
    """Who is at the keyboard, recorded as `by` in the events an operator causes."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name in a bare container
        user = "operator"
    return f"{user}@{socket.gethostname()}"


def check_lane(settings: Settings, lane: str | None) -> str:
    """The lane named, or the default lane; an unknown name is bad input."""
    name = settings.default_lane if lane is None else lane
    if name not in settings.lanes:
        msg = f"unknown lane {name!r}: the lanes are {', '.join(settings.lanes)}"
        raise ConfigError(msg)
    return name


def _ms(time_reply: Sequence[int]) -> int:
    seconds, micros = time_reply
    return int(seconds) * 1000 + int(micros) // 1000


async def server_ms(redis: Redis) -> int:
    """The Redis server's clock in ms: ages are measured on the clock events carry."""
    return _ms(await redis.time())


# -- workers ------------------------------------------------------------------------


async def workers(jq: JobQueue, queue: str, *, max_ids: int = MAX_LISTED_IDS) -> list[WorkerView]:
    """Every worker in the queue's registry, with its heartbeat and jobs in flight."""
    keys = jq.keys(queue)
    members = sorted(cast(set[str], await jq.redis.smembers(keys.workers)))

    async with jq.redis.pipeline(transaction=False) as pipe:
        for worker in members:
            pipe.get(keys.heartbeat(worker))
            pipe.pttl(keys.heartbeat(worker))
            pipe.llen(keys.processing(worker))
            pipe.lrange(keys.processing(worker), 0, max_ids - 1)
        replies = await pipe.execute()

    # TIME apart: a cluster pipeline refuses a command that names no key.
    now_ms = _ms(await jq.redis.time())
    return [
        _worker_view(queue, worker, now_ms, replies[i * 4 : i * 4 + 4])
        for i, worker in enumerate(members)
    ]


def _worker_view(queue: str, worker: str, now_ms: int, reply: list[Any]) -> WorkerView:
    beat, pttl, in_flight, ids = reply
    age_ms = now_ms - int(beat) if isinstance(beat, str) and beat.isdigit() else None

    # PTTL: -2 when the key is gone (expired), -1 when it has no TTL (never set so).
    state = "expired" if pttl == -2 else "alive"
    ttl_left_ms = int(pttl) if pttl >= 0 else None
    return WorkerView(queue, worker, state, age_ms, ttl_left_ms, int(in_flight), list(ids))


# -- peek ---------------------------------------------------------------------------


async def peek(
    jq: JobQueue,
    queue: str,
    *,
    lane: str | None = None,
    count: int = 10,
    payload_chars: int = PAYLOAD_CHARS,
) -> list[PeekedJob]:
    """The next `count` jobs of a lane, head first (the default lane when none is named)."""
    if count < 1:
        msg = f"peek shows at least one job, not {count}"
        raise ConfigError(msg)
    keys = jq.keys(queue)
    name = check_lane(jq.settings, lane)
    ids = cast(list[str], await jq.redis.lrange(keys.lane(name), 0, count - 1))

    async with jq.redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hgetall(keys.job(job_id))
        records: list[dict[str, str]] = await pipe.execute()

    return [
        _peeked(job_id, name, record, payload_chars)
        for job_id, record in zip(ids, records, strict=True)
    ]


def _peeked(job_id: str, lane: str, record: dict[str, str], payload_chars: int) -> PeekedJob:
    payload = record.get("payload", "")
    created = record.get("created_ms", "")
    return PeekedJob(
        job_id,
        record.get("task", ""),
        lane,
        record.get("state", "missing"),
        int(record.get("attempts", "0")),
        int(created) if created.isdigit() else None,
        payload[:payload_chars],
        len(payload) > payload_chars,
    )


# -- purge --------------------------------------------------------------------------


async def purge_lane(
    jq: JobQueue, queue: str, lane: str, *, by: str, batch: int = PURGE_BATCH
) -> PurgeResult:
    """Delete every ready job of a lane in bounded batches, each with its `purged` event.

    Loops until a batch comes back short, so jobs enqueued to the lane while it runs are
    purged too.
    """
    keys = jq.keys(queue)
    name = check_lane(jq.settings, lane)
    script_keys = [keys.lane(name), keys.events]
    popped_total = purged_total = 0

    while True:
        popped, purged = await jq.scripts.purge_lane(
            keys=script_keys, args=[keys.prefix, by, batch]
        )
        popped_total += int(popped)
        purged_total += int(purged)
        if int(popped) < batch:
            break

    result = PurgeResult(queue, name, purged_total, popped_total - purged_total)
    log.warning(
        "lane_purged", queue=queue, lane=name, purged=result.purged, stray=result.stray, by=by,
        next="the jobs are gone; their purged events stay in the ledger",
    )  # fmt: skip
    return result


# -- the ledger backlog -------------------------------------------------------------


async def ledger_backlog(jq: JobQueue, queue: str) -> LedgerBacklog:
    """Un-shipped events in the queue's outbox and the age of the oldest (server clock)."""
    events_key = jq.keys(queue).events
    async with jq.redis.pipeline(transaction=False) as pipe:
        pipe.xlen(events_key)
        pipe.xrange(events_key, count=1)
        length, first = await pipe.execute()

    age_ms = _ms(await jq.redis.time()) - int(first[0][0].split("-")[0]) if first else None
    return LedgerBacklog(queue, int(length), age_ms, past_bound(jq.settings, length, age_ms))


def past_bound(settings: Settings, events: int, age_ms: int | None) -> bool:
    """The bound the claim and enqueue scripts apply (lib.lua `over_backlog`)."""
    if events == 0:
        return False
    by_count = 0 < settings.ledger_max_backlog <= events
    by_age = 0 < settings.ledger_max_age_ms <= (age_ms or 0)
    return by_count or by_age


# -- rendering for the CLI ----------------------------------------------------------


def format_ms(ms: int | None) -> str:
    """A duration for people: '850ms', '4.2s', '3m05s', '2h10m'; '-' when unknown."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms}ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f}s"
    minutes, seconds = divmod(ms // 1000, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def to_json(data: Any) -> str:
    """One of this module's records, or a list of them, as JSON."""
    if isinstance(data, Sequence):
        return json.dumps([asdict(item) for item in data], indent=2)
    return json.dumps(asdict(data), indent=2)


def workers_text(views: Sequence[WorkerView]) -> str:
    if not views:
        return "no registered workers"
    lines = []
    for v in views:
        jobs = ",".join(v.job_ids) + (" ..." if v.in_flight > len(v.job_ids) else "")
        lines.append(
            f"{v.queue}  {v.worker}  {v.state}  heartbeat {format_ms(v.heartbeat_age_ms)} ago"
            f"  ttl {format_ms(v.ttl_left_ms)}  in flight {v.in_flight}  {jobs}".rstrip()
        )
    return "\n".join(lines)


def peek_text(jobs: Sequence[PeekedJob]) -> str:
    if not jobs:
        return "the lane is empty"
    return "\n".join(
        f"{j.id}  {j.task}  {j.state}  attempts={j.attempts}  created {_iso(j.created_ms)}  "
        f"{j.payload}{' ...' if j.payload_truncated else ''}"
        for j in jobs
    )


def _iso(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def purge_text(result: PurgeResult) -> str:
    stray = f" ({result.stray} stray ids dropped)" if result.stray else ""
    return f"{result.queue}: {result.purged} jobs purged from lane {result.lane}{stray}"
