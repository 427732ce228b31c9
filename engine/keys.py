"""Every Redis key jobqueue uses, named in one place.

One hash tag per logical queue keeps all of a queue's keys in one cluster slot, so each
state change is one atomic Lua script; different queues spread over a Redis Cluster.
No command ever walks the keyspace: everything below is reached from a known name.

    <ns>:{<queue>}:lane:<lane>          list    ready job ids, one list per priority lane
    <ns>:{<queue>}:job:<id>             hash    the job record (task, payload, state, ...)
    <ns>:{<queue>}:processing:<worker>  list    ids claimed by one worker process
    <ns>:{<queue>}:hb:<worker>          string  heartbeat, TTL-bound, renewed while alive
    <ns>:{<queue>}:workers              set     the registry the reaper walks
    <ns>:{<queue>}:scheduled            zset    delayed jobs and retries, score = due ms
    <ns>:{<queue>}:dead                 list    dead-letter queue
    <ns>:{<queue>}:events               stream  the outbox: one entry per state change
    <ns>:{<queue>}:idem:<key>           string  idempotency record
    <ns>:{<queue>}:meta                 hash    paused flag, fair-claim counter
    <ns>:{<queue>}:wake                 list    wake-up tokens idle workers block on
    <ns>:{<queue>}:reaper               string  short lock: one reaper per queue at a time
    <ns>:queues                         set     names of known queues (for admin views)

Lua scripts build job, processing and heartbeat keys from the queue prefix, because
their names come from data (a popped job id, a registry member); the hash tag keeps
them in the slot of the keys the script declares.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_NAMESPACE = "jobqueue"


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """The keys of one queue."""

    queue: str
    namespace: str = DEFAULT_NAMESPACE

    @property
    def prefix(self) -> str:
        return f"{self.namespace}:{{{self.queue}}}:"

    def lane(self, lane: str) -> str:
        return f"{self.prefix}lane:{lane}"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def processing(self, worker_id: str) -> str:
        return f"{self.prefix}processing:{worker_id}"

    def heartbeat(self, worker_id: str) -> str:
        return f"{self.prefix}hb:{worker_id}"

    def idempotency(self, key: str) -> str:
        return f"{self.prefix}idem:{key}"

    @property
    def workers(self) -> str:
        return f"{self.prefix}workers"

    @property
    def scheduled(self) -> str:
        return f"{self.prefix}scheduled"

    @property
    def dead(self) -> str:
        return f"{self.prefix}dead"

    @property
    def events(self) -> str:
        return f"{self.prefix}events"

    @property
    def meta(self) -> str:
        return f"{self.prefix}meta"

    @property
    def wake(self) -> str:
        return f"{self.prefix}wake"

    @property
    def reaper_lock(self) -> str:
        return f"{self.prefix}reaper"


def queues_key(namespace: str = DEFAULT_NAMESPACE) -> str:
    """The set of known queue names (a registry, read by admin commands)."""
    return f"{namespace}:queues"
