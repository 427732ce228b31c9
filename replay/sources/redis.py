"""Reads the events still in the queues' outbox streams: the tail not yet shipped.

The queues are the members of `<namespace>:queues`; each stream is read with XRANGE in
pages. Nothing walks the keyspace (no KEYS, no SCAN), as everywhere in jobqueue.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from typing import Any, Final, cast

import redis
from redis.exceptions import RedisError

from engine.keys import QueueKeys, queues_key
from ledger.errors import SchemaViolation
from ledger.event import JobEvent
from replay.errors import SourceUnavailable
from replay.events import Event, from_job_event
from replay.sources.base import Problem, Progress, ReadOptions, Source

PAGE: Final = 1000
SOCKET_TIMEOUT_S: Final = 10.0


def redacted(url: str) -> str:
    """The URL without its password, for labels and messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}@{host}" if parts.username else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def connect(url: str) -> redis.Redis:
    """A client for `url` that decodes replies and gives up on a dead server in seconds."""
    client: redis.Redis = redis.Redis.from_url(
        url, decode_responses=True, socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=SOCKET_TIMEOUT_S,
    )  # fmt: skip
    return client


class RedisSource(Source):
    """The outbox streams of every queue of a namespace on one Redis server."""

    kind = "redis"

    def __init__(self, url: str) -> None:
        super().__init__(redacted(url))
        self.url = url

    def read(self, options: ReadOptions, progress: Progress) -> Iterator[list[Event]]:
        client = connect(self.url)
        try:
            yield from self._read(client, options, progress)
        except RedisError as exc:
            msg = f"cannot read {self.address}: {exc}"
            raise SourceUnavailable(msg) from exc
        finally:
            client.close()

    def _read(
        self, client: redis.Redis, options: ReadOptions, progress: Progress
    ) -> Iterator[list[Event]]:
        queues = sorted(cast(set[str], client.smembers(queues_key(options.namespace))))
        if options.queue is not None:
            queues = [queue for queue in queues if queue == options.queue]

        streams = [QueueKeys(queue, options.namespace).events for queue in queues]
        progress.start(f"reading {self.address}", sum(int(client.xlen(key)) for key in streams))
        for queue, stream in zip(queues, streams, strict=True):
            yield from self._read_stream(client, queue, stream, options, progress)

    def _read_stream(
        self, client: redis.Redis, queue: str, stream: str, options: ReadOptions, progress: Progress
    ) -> Iterator[list[Event]]:
        start = "-"
        while True:
            entries = cast(
                list[tuple[str, dict[str, str]]], client.xrange(stream, start, "+", PAGE)
            )
            found = [
                self._event(queue, entry_id, fields, options.job_id) for entry_id, fields in entries
            ]
            yield [event for event in found if event is not None]
            progress.advance(len(entries))
            if len(entries) < PAGE:
                return
            start = f"({entries[-1][0]}"

    def _event(
        self, queue: str, entry_id: str, fields: dict[str, Any], job_id: str | None
    ) -> Event | None:
        if (
            job_id is not None
            and fields.get("job") != job_id
            and job_id not in fields.get("attrs", "")
        ):
            return None
        try:
            return from_job_event(JobEvent.from_stream(queue, entry_id, fields))
        except SchemaViolation as exc:
            self.report.add(
                Problem("malformed_entry", f"{self.address} {queue}/{entry_id}", str(exc))
            )
            return None
