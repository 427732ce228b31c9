"""Handlers, their retry policies, and the context a handler runs with."""

from __future__ import annotations

import inspect
import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from engine.names import check_name

HandlerFn = Callable[["JobContext", Any], Awaitable[Any] | Any]


class Retry(Exception):
    """Raised by a handler to ask for another attempt, optionally after `delay_s`."""

    def __init__(self, delay_s: float | None = None, reason: str = "retry requested") -> None:
        self.delay_s = delay_s
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a task's failures are retried: exponential backoff with full jitter and a cap.

    `None` values fall back to the worker's settings (or, for `max_attempts`, to the
    value the job was enqueued with).
    """

    max_attempts: int | None = None
    backoff_base_ms: int | None = None
    backoff_cap_ms: int | None = None
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    dont_retry_on: tuple[type[BaseException], ...] = ()

    def retries(self, exc: BaseException) -> bool:
        if isinstance(exc, Retry):
            return True
        if isinstance(exc, self.dont_retry_on):
            return False
        return isinstance(exc, self.retry_on)


def backoff_ms(failures: int, base_ms: int, cap_ms: int, rng: random.Random | None = None) -> int:
    """Full jitter: uniform between 0 and min(cap, base * 2^(failures - 1))."""
    ceiling = min(cap_ms, base_ms * (2 ** max(0, failures - 1)))
    return int((rng or random).uniform(0, ceiling))


KeyFn = Callable[[Any], str]


@dataclass(frozen=True, slots=True)
class Handler:
    """A function registered for a task name."""

    task: str
    fn: HandlerFn
    is_async: bool
    policy: RetryPolicy
    idempotent: bool = False
    idempotency_key: KeyFn | None = None


class Outbox:
    """Messages a handler publishes; committed with its ack (or its `ctx.commit`)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []

    def publish(self, topic: str, message: Any) -> None:
        """Queue a JSON message for `topic`; nothing leaves if the job fails."""
        text = json.dumps(message, separators=(",", ":"), allow_nan=False)
        self.messages.append((check_name("topic", topic), text))


@dataclass(slots=True)
class JobContext:
    """What a handler knows about the job it runs."""

    queue: str
    job_id: str
    task: str
    lane: str
    attempt: int
    worker_id: str
    trace_id: str | None = None
    outbox: Outbox = field(default_factory=Outbox)
    _log: Any = field(default=None, repr=False)
    _commit: Callable[[tuple[tuple[Any, ...], ...]], Awaitable[list[Any]]] | None = field(
        default=None, repr=False
    )

    async def commit(self, *commands: tuple[Any, ...]) -> list[Any]:
        """Run Redis commands as this job's effect, atomically with marking its
        idempotency record done and publishing its outbox (idempotent tasks only).

        Returns the commands' replies. Raises `LeaseLost` when the record is no longer
        this claim's (the job was reaped): the effect did not happen.
        """
        if self._commit is None:
            msg = f"task {self.task!r} is not idempotent: register it with idempotent=True"
            raise RuntimeError(msg)
        return await self._commit(commands)

    @property
    def log(self) -> Any:
        """A structlog logger bound to the queue, job id, task and attempt."""
        if self._log is None:
            self._log = structlog.get_logger("jobqueue.handler").bind(
                queue=self.queue, job_id=self.job_id, task=self.task, attempt=self.attempt
            )
        return self._log


class App:
    """A registry of handlers by task name; `jobqueue worker --app MODULE` loads one.

    `idempotency_store` replaces the default Redis store of idempotency records (an
    `engine.idempotency.IdempotencyStore`).
    """

    def __init__(self, idempotency_store: Any = None) -> None:
        self.handlers: dict[str, Handler] = {}
        self.idempotency_store = idempotency_store

    def task(
        self,
        name: str | None = None,
        *,
        max_attempts: int | None = None,
        backoff_base_ms: int | None = None,
        backoff_cap_ms: int | None = None,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        dont_retry_on: tuple[type[BaseException], ...] = (),
        idempotent: bool = False,
        idempotency_key: KeyFn | None = None,
    ) -> Callable[[HandlerFn], HandlerFn]:
        """Register the decorated function (async, or plain: run in a thread).

        `idempotent=True` runs the handler at most once per idempotency key: the job id,
        or `idempotency_key(payload)` (which implies idempotent).
        """
        policy = RetryPolicy(max_attempts, backoff_base_ms, backoff_cap_ms, retry_on, dont_retry_on)

        def register(fn: HandlerFn) -> HandlerFn:
            self.register(
                name or fn.__name__, fn, policy,
                idempotent=idempotent or idempotency_key is not None,
                idempotency_key=idempotency_key,
            )  # fmt: skip
            return fn

        return register

    def register(
        self,
        task: str,
        fn: HandlerFn,
        policy: RetryPolicy | None = None,
        *,
        idempotent: bool = False,
        idempotency_key: KeyFn | None = None,
    ) -> None:
        check_name("task", task)
        if task in self.handlers:
            msg = f"a handler for task {task!r} is already registered"
            raise ValueError(msg)
        is_async = inspect.iscoroutinefunction(fn)
        self.handlers[task] = Handler(
            task, fn, is_async, policy or RetryPolicy(), idempotent, idempotency_key
        )
