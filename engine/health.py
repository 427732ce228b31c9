"""The HTTP endpoint of a worker or shipper process: /metrics, /healthz and /readyz.

Served when `metrics_port` is set, on `metrics_host` (loopback unless configured), by a
small HTTP/1.1 handler on `asyncio.start_server`: one GET or HEAD request per connection.

- /metrics: `engine.metrics.REGISTRY` in the Prometheus text format, after the queue
  gauges were read from Redis for the process's own queues.
- /healthz: 200 while the process serves requests at all.
- /readyz: 200 when Redis answers, the worker's heartbeat is fresh on each of its queues
  (at most one renewal missed) and no queue is in ledger backpressure; otherwise 503 with
  a one-line reason. A shipper has no heartbeat, so only Redis and backpressure count.

A worker starts its endpoint in `Worker.run()` (`serve_worker`); `serve_shipper` serves
one around a standalone shipper's run. Each endpoint also runs the event loop lag watch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Final

import structlog
from prometheus_client import generate_latest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from engine import metrics
from engine.settings import Settings

if TYPE_CHECKING:
    from engine.worker import Worker
    from ledger.shipper import Shipper
    from sinks.base import Sink

log = structlog.get_logger("jobqueue.health")

# The text format generate_latest writes; newer clients advertise 1.0.0 for the same bytes,
# which older Prometheus servers do not know.
METRICS_CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
TEXT_CONTENT_TYPE: Final = "text/plain; charset=utf-8"
READ_TIMEOUT_S: Final = 2.0
REQUEST_TIMEOUT_S: Final = 5.0
MAX_HEADER_LINES: Final = 100

QueueNames = Callable[[], Awaitable[list[str]]]


class Probe:
    """Reads the gauges of some queues and says whether the process is ready for work.

    `worker` makes it check that worker's heartbeat on every queue; `sink` (a shipper's)
    adds the fallback's gauges when it is a `FallbackSink`.
    """

    def __init__(
        self,
        redis: Redis,
        settings: Settings,
        queues: QueueNames,
        *,
        worker: str | None = None,
        sink: Sink | None = None,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.queues = queues
        self.worker = worker
        self.sink = sink

    async def check(self) -> str | None:
        """Refresh the gauges; return why the process is not ready, or None when it is."""
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                samples = await self._read()
        except (RedisError, OSError, TimeoutError) as exc:
            metrics.REDIS_UP.set(0)
            return f"redis unreachable: {str(exc) or type(exc).__name__}"

        metrics.REDIS_UP.set(1)
        for sample in samples:
            metrics.publish(sample)
        await self._sink_gauges()
        return self._not_ready(samples)

    async def _read(self) -> list[metrics.QueueSample]:
        names = await self.queues()
        reads = [metrics.read_queue(self.redis, self.settings, q, self.worker) for q in names]
        return list(await asyncio.gather(*reads))

    def _not_ready(self, samples: list[metrics.QueueSample]) -> str | None:
        for sample in samples:
            reason = self._heartbeat_problem(sample) or _backpressure_problem(sample)
            if reason:
                return reason
        return None

    def _heartbeat_problem(self, sample: metrics.QueueSample) -> str | None:
        if self.worker is None:
            return None
        if sample.heartbeat_ttl_ms < 0:
            return f"no heartbeat on queue {sample.queue}: not registered yet, or reaped"
        if sample.heartbeat_ttl_ms < self.settings.heartbeat_interval_ms:
            return (
                f"heartbeat on queue {sample.queue} expires in {sample.heartbeat_ttl_ms} ms: "
                "renewals are failing"
            )
        return None

    async def _sink_gauges(self) -> None:
        from sinks.fallback import FallbackSink  # noqa: PLC0415 - only shippers have sinks
        from sinks.ndjson import bytes_on_disk  # noqa: PLC0415

        sink = self.sink
        if not isinstance(sink, FallbackSink):
            return
        primary = sink.primary.name
        metrics.FALLBACK_ACTIVE.labels(primary).set(int(sink.fallback_active))
        metrics.SINK_UP.labels(primary).set(int(not sink.fallback_active))
        state = sink.breaker.state
        metrics.BREAKER_STATE.labels(sink.breaker.name).set(metrics.BREAKER_CODES[state])
        size = await asyncio.to_thread(bytes_on_disk, sink.fallback.folder)
        metrics.FALLBACK_BYTES.labels(primary).set(size)


def _backpressure_problem(sample: metrics.QueueSample) -> str | None:
    if not sample.backpressure:
        return None
    return (
        f"ledger backpressure on queue {sample.queue}: {sample.backlog} un-shipped events, "
        f"the oldest {sample.oldest_age_ms} ms old"
    )


# -- HTTP -------------------------------------------------------------------------------------


class BadRequest(Exception):
    """Raised when a request line cannot be read as HTTP."""


@dataclass(frozen=True, slots=True)
class Response:
    status: HTTPStatus
    body: bytes
    content_type: str = TEXT_CONTENT_TYPE

    def encode(self, *, head: bool = False) -> bytes:
        lines = [
            f"HTTP/1.1 {self.status.value} {self.status.phrase}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {len(self.body)}",
            "Connection: close",
        ]
        if self.status is HTTPStatus.METHOD_NOT_ALLOWED:
            lines.append("Allow: GET, HEAD")
        return "\r\n".join([*lines, "", ""]).encode() + (b"" if head else self.body)


def text(status: HTTPStatus, message: str) -> Response:
    return Response(status, f"{message}\n".encode())


async def read_request(reader: asyncio.StreamReader) -> tuple[str, str]:
    """The method and path of one request; its headers are read and ignored."""
    parts = (await reader.readline()).decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        msg = "not an HTTP request line"
        raise BadRequest(msg)
    for _ in range(MAX_HEADER_LINES):
        if (await reader.readline()).strip() == b"":
            break
    return parts[0].upper(), parts[1].partition("?")[0]


class Endpoint:
    """Serves /metrics, /healthz and /readyz for `probe` on `host`:`port` (0: any port)."""

    def __init__(self, probe: Probe, host: str, port: int) -> None:
        self.probe = probe
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._lag_watch: asyncio.Task[None] | None = None
        self._ready: bool | None = None

    async def start(self) -> Endpoint:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._lag_watch = asyncio.create_task(metrics.watch_loop_lag())
        log.info("metrics_endpoint_started", host=self.host, port=self.port)
        return self

    async def close(self) -> None:
        if self._lag_watch is not None:
            self._lag_watch.cancel()
            await asyncio.gather(self._lag_watch, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        log.info("metrics_endpoint_stopped", port=self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                await self._answer(reader, writer)
        except (TimeoutError, ConnectionError, ValueError):
            pass  # the client went away, or sent a line too long to read: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        method = "GET"
        try:
            method, path = await read_request(reader)
            response = await self.respond(method, path)
        except BadRequest as exc:
            response = text(HTTPStatus.BAD_REQUEST, str(exc))
        except Exception:
            log.exception("metrics_request_failed", next="answering 500; the endpoint stays up")
            response = text(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error, see the log")
        writer.write(response.encode(head=method == "HEAD"))
        await writer.drain()

    async def respond(self, method: str, path: str) -> Response:
        """The response to one request."""
        if method not in ("GET", "HEAD"):
            return text(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} is not served here")
        if path == "/metrics":
            await self.probe.check()
            return Response(HTTPStatus.OK, generate_latest(metrics.REGISTRY), METRICS_CONTENT_TYPE)
        if path == "/healthz":
            return text(HTTPStatus.OK, "ok")
        if path == "/readyz":
            return self._readiness(await self.probe.check())
        return text(HTTPStatus.NOT_FOUND, f"no {path} here: try /metrics, /healthz or /readyz")

    def _readiness(self, reason: str | None) -> Response:
        ready = reason is None
        if ready != self._ready:
            self._ready = ready
            log.info("readiness_changed", ready=ready, reason=reason)
        if reason is None:
            return text(HTTPStatus.OK, "ready")
        return text(HTTPStatus.SERVICE_UNAVAILABLE, reason)


# -- wiring -----------------------------------------------------------------------------------


async def serve_worker(worker: Worker, queues: list[str]) -> Endpoint | None:
    """Start a worker's endpoint when `metrics_port` is set; None otherwise."""
    settings = worker.settings
    if settings.metrics_port is None:
        return None

    async def names() -> list[str]:
        return queues

    probe = Probe(worker.redis, settings, names, worker=worker.worker_id)
    return await Endpoint(probe, settings.metrics_host, settings.metrics_port).start()


@contextlib.asynccontextmanager
async def serve_shipper(shipper: Shipper) -> AsyncIterator[Endpoint | None]:
    """Serve a shipper's endpoint while in the block, when `metrics_port` is set."""
    settings = shipper.settings
    if settings.metrics_port is None:
        yield None
        return
    probe = Probe(shipper.redis, settings, shipper.queues, sink=shipper.sink)
    endpoint = await Endpoint(probe, settings.metrics_host, settings.metrics_port).start()
    try:
        yield endpoint
    finally:
        await endpoint.close()
