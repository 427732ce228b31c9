"""A circuit breaker: stop calling something that keeps failing, and probe it now and then.

States and transitions:

- closed -> open after `failure_threshold` consecutive failures, or once at least
  `min_calls` outcomes were recorded in the last `window_s` seconds and the share of
  failures among them reached `failure_rate`.
- open -> half_open at the first `allow()` after `reset_timeout_s`: that call is the probe,
  the only one let through.
- half_open -> closed when the probe reports a success, -> open when it reports a failure,
  and -> open again when it has not reported within `probe_timeout_s`, so that a probe that
  was cancelled, or whose caller found nothing to do, cannot keep the breaker half-open.

The breaker knows nothing about what it guards: the fallback sink puts one in front of its
primary, and the engine keeps one per task. It is not thread-safe; use it from one event
loop. Outcomes are not tied to the call that produced them, so a call started while closed
that reports while half-open is taken as the probe's outcome.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable

import structlog
from structlog.typing import FilteringBoundLogger

log: FilteringBoundLogger = structlog.get_logger(__name__)

StateListener = Callable[["BreakerState", "BreakerState"], None]


class BreakerState(enum.StrEnum):
    """Where a breaker stands: calling through, refusing, or probing."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Counts the outcomes of calls and decides whether the next call may go through.

    Call `allow()` before each call; when it returns True, report the outcome with
    `record_success()` or `record_failure()`. `on_change(old, new)` is called on every state
    change (a metrics hook); it must not raise. `clock` returns seconds and only needs to be
    monotonic.
    """

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        failure_rate: float = 0.5,
        window_s: float = 60.0,
        min_calls: int = 20,
        reset_timeout_s: float = 30.0,
        probe_timeout_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: StateListener | None = None,
    ) -> None:
        _check_settings(failure_threshold, failure_rate, min_calls)
        self.name = name
        self.failure_threshold = failure_threshold
        self.failure_rate = failure_rate
        self.window_s = window_s
        self.min_calls = min_calls
        self.reset_timeout_s = reset_timeout_s
        self.probe_timeout_s = probe_timeout_s
        self._clock = clock
        self._on_change = on_change

        self._state = BreakerState.CLOSED
        self._consecutive_failures = 0
        self._outcomes: deque[tuple[float, bool]] = deque()  # (time, failed) in the window
        self._failures_in_window = 0
        self._opened_at = 0.0
        self._probe_started_at = 0.0

    @property
    def state(self) -> BreakerState:
        """The current state; an expired probe is noticed here too."""
        if self._state is BreakerState.HALF_OPEN and self._probe_expired():
            log.warning(
                "breaker_probe_expired",
                breaker=self.name,
                probe_timeout_s=self.probe_timeout_s,
                next="breaker reopens; another probe after the cool-down",
            )
            self._open()
        return self._state

    def allow(self) -> bool:
        """Whether a call may go through now; in half-open, only the one probe may."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN:
            return False

        if self._clock() - self._opened_at < self.reset_timeout_s:
            return False
        self._probe_started_at = self._clock()
        self._change(BreakerState.HALF_OPEN)
        return True

    def record_success(self) -> None:
        """Report a call that succeeded."""
        state = self.state
        if state is BreakerState.HALF_OPEN:
            self._close()
        elif state is BreakerState.CLOSED:
            self._consecutive_failures = 0
            self._remember(failed=False)

    def record_failure(self) -> None:
        """Report a call that failed."""
        state = self.state
        if state is BreakerState.HALF_OPEN:
            self._open()
        elif state is BreakerState.CLOSED:
            self._consecutive_failures += 1
            self._remember(failed=True)
            if self._should_trip():
                self._open()

    def _remember(self, *, failed: bool) -> None:
        now = self._clock()
        self._outcomes.append((now, failed))
        self._failures_in_window += failed

        while self._outcomes and self._outcomes[0][0] <= now - self.window_s:
            _, old_failed = self._outcomes.popleft()
            self._failures_in_window -= old_failed

    def _should_trip(self) -> bool:
        if self._consecutive_failures >= self.failure_threshold:
            return True
        calls = len(self._outcomes)
        return calls >= self.min_calls and self._failures_in_window / calls >= self.failure_rate

    def _probe_expired(self) -> bool:
        return self._clock() - self._probe_started_at >= self.probe_timeout_s

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._change(BreakerState.OPEN)

    def _close(self) -> None:
        self._consecutive_failures = 0
        self._outcomes.clear()
        self._failures_in_window = 0
        self._change(BreakerState.CLOSED)

    def _change(self, new: BreakerState) -> None:
        old, self._state = self._state, new
        if new is BreakerState.OPEN:
            log.warning(
                "breaker_opened",
                breaker=self.name,
                previous=old.value,
                consecutive_failures=self._consecutive_failures,
                next=f"calls are refused for {self.reset_timeout_s:g}s, then one probe",
            )
        else:
            log.info(
                "breaker_state_changed", breaker=self.name, previous=old.value, state=new.value
            )

        if self._on_change is not None:
            self._on_change(old, new)


def _check_settings(failure_threshold: int, failure_rate: float, min_calls: int) -> None:
    if failure_threshold < 1:
        msg = f"failure_threshold must be at least 1, not {failure_threshold}"
        raise ValueError(msg)
    if not 0.0 < failure_rate <= 1.0:
        msg = f"failure_rate must be in (0, 1], not {failure_rate}"
        raise ValueError(msg)
    if min_calls < 1:
        msg = f"min_calls must be at least 1, not {min_calls}"
        raise ValueError(msg)
