"""The engine's exceptions: one base, and subclasses a caller can act on."""

from __future__ import annotations


class EngineError(Exception):
    """Base class of every error the engine raises."""


class ConfigError(EngineError):
    """Raised when a setting is invalid or the Redis server is unfit for jobqueue."""


class InvalidName(EngineError, ValueError):
    """Raised when a queue, lane, task or job id could break the key layout."""


class InvalidPayload(EngineError, ValueError):
    """Raised when a payload is not JSON or is larger than the configured limit."""


class JobExists(EngineError):
    """Raised when an enqueue names a job id that already exists."""


class JobNotFound(EngineError):
    """Raised when an operation names a job the queue does not hold."""


class QueueFull(EngineError):
    """Raised when a lane or queue is past its configured length (producer backpressure)."""

    def __init__(self, queue: str, length: int, limit: int, lane: str | None = None) -> None:
        self.queue, self.length, self.limit, self.lane = queue, length, limit, lane
        where = f"lane {lane!r} of queue {queue!r}" if lane else f"queue {queue!r}"
        super().__init__(f"{where} holds {length} jobs, at or past its limit of {limit}")


class Backpressure(EngineError):
    """Raised when the ledger's un-shipped backlog is past its bound: nothing is dropped."""

    def __init__(self, queue: str, backlog: int, age_ms: int, limit: str) -> None:
        self.queue, self.backlog, self.age_ms = queue, backlog, age_ms
        super().__init__(
            f"queue {queue!r} refuses new work: ledger backlog {backlog} events, oldest "
            f"{age_ms} ms old, past its bound ({limit}); the shipper must catch up first"
        )


class LeaseLost(EngineError):
    """Raised when a worker's heartbeat expired and it was reaped: it must re-register."""


class QueuePaused(EngineError):
    """Raised when a claim is made on a paused queue."""


class UnknownTask(EngineError):
    """Raised when a job names a task for which no handler is registered."""
