"""Errors raised by replay: one base class, and subclasses the CLI maps to exit codes."""

from __future__ import annotations


class ReplayError(Exception):
    """Base class of every error raised by the replay package."""


class BadInput(ReplayError):
    """Raised when an argument, a time, a filter or a source address cannot be understood."""


class SourceUnavailable(ReplayError):
    """Raised when a source cannot be read at all: a missing folder, bucket or topic, or a
    server that does not answer."""


class JobNotFound(ReplayError):
    """Raised when no source holds any event of the job asked for."""
