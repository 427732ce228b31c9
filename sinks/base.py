"""The sink contract: a write either completes durably or raises within a deadline."""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable, Sequence
from typing import TypeVar

from ledger.event import JobEvent

T = TypeVar("T")

DEFAULT_WRITE_TIMEOUT_S = 2.0
DEFAULT_CLOSE_TIMEOUT_S = 2.0


class SinkError(Exception):
    """Base class of every error raised by a sink."""


class SinkUnavailable(SinkError):
    """Raised when a sink could not confirm a durable write within its deadline."""


class Sink(abc.ABC):
    """Somewhere the ledger's events are written durably.

    `write` returns only once every event of the batch is durable; otherwise it raises
    `SinkUnavailable` within `write_timeout_s`. `close` is bounded the same way.
    """

    name: str = "sink"
    write_timeout_s: float = DEFAULT_WRITE_TIMEOUT_S
    close_timeout_s: float = DEFAULT_CLOSE_TIMEOUT_S

    @abc.abstractmethod
    async def write(self, batch: Sequence[JobEvent]) -> None:
        """Write the batch durably or raise `SinkUnavailable`."""

    async def close(self) -> None:  # noqa: B027 - sinks without resources need no close
        """Release connections and files; bounded by `close_timeout_s`."""


async def bounded(name: str, awaitable: Awaitable[T], timeout_s: float) -> T:
    """Await with a deadline, turning a timeout or any I/O error into `SinkUnavailable`."""
    try:
        return await asyncio.wait_for(awaitable, timeout_s)
    except TimeoutError as exc:
        msg = f"sink {name} did not confirm within {timeout_s:g}s"
        raise SinkUnavailable(msg) from exc
    except SinkUnavailable:
        raise
    except (OSError, SinkError) as exc:
        msg = f"sink {name} failed: {exc}"
        raise SinkUnavailable(msg) from exc
