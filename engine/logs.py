"""structlog, configured once: JSON lines when not on a terminal, console text on one."""

from __future__ import annotations

import logging
import sys

import structlog

_configured = False


def _stderr_logger(*_args: object) -> structlog.PrintLogger:
    # Resolved per logger, so a replaced sys.stderr (test capture, daemonisation) is used.
    return structlog.PrintLogger(sys.stderr)


def configure_logging(level: str = "INFO", *, json_lines: bool | None = None) -> None:
    """Configure structlog for a process (CLI entry points call this once)."""
    global _configured
    if _configured:
        return
    use_json = not sys.stderr.isatty() if json_lines is None else json_lines
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    _configured = True
