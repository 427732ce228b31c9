"""Times on the command line (ISO 8601 or relative to now) and times in the output.

Every time inside replay is integer milliseconds since the epoch, as the ledger's `ts_ms`.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from typing import Final

from replay.errors import BadInput

_RELATIVE: Final = re.compile(r"-(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_MS: Final = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def parse_time(text: str, *, now: int | None = None) -> int:
    """Milliseconds since the epoch of `now`, `-15m` (s, m, h, d, ms) or an ISO 8601 time.

    An ISO time without a zone is taken as UTC, as the ledger's server times are.
    """
    stripped = text.strip()
    reference = now_ms() if now is None else now
    if stripped == "now":
        return reference

    relative = _RELATIVE.fullmatch(stripped)
    if relative:
        return reference - int(float(relative[1]) * _UNIT_MS[relative[2]])

    return _parse_iso(stripped)


def _parse_iso(text: str) -> int:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        msg = (
            f"cannot read the time {text!r}: give ISO 8601 (2025-12-03T12:00:00Z) "
            "or a time relative to now (-15m, -2h, -1d)"
        )
        raise BadInput(msg) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


def format_ts(ts_ms: int) -> str:
    """UTC time with milliseconds, e.g. 2025-12-03T12:00:00.123Z."""
    moment = dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"


def format_duration(ms: int | float) -> str:
    """A short duration: 850ms, 12.3s, 4m05s, 2h03m, 3d04h."""
    value = int(ms)
    sign = "-" if value < 0 else ""
    value = abs(value)
    if value < 1000:
        return f"{sign}{value}ms"
    if value < 60_000:
        return f"{sign}{value / 1000:.1f}s"
    seconds = value // 1000
    if seconds < 3600:
        return f"{sign}{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86_400:
        return f"{sign}{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{sign}{seconds // 86_400}d{seconds % 86_400 // 3600:02d}h"
