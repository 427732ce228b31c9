"""Errors raised by the ledger: one base class, and subclasses a caller can act on.

`SchemaViolation` is also a `ValueError`, which `JobEvent.from_record` raised before it
existed. Keyword arguments have defaults so that default pickling, which calls the class
with the message alone and then restores the attributes, works across processes.
"""

from __future__ import annotations


class LedgerError(Exception):
    """Base class of every error raised by the ledger package."""


class SchemaViolation(LedgerError, ValueError):
    """Raised when a record has a field the schema does not know, or lacks or mistypes one."""

    def __init__(self, msg: str, *, fields: tuple[str, ...] = ()) -> None:
        super().__init__(msg)
        self.fields = fields


class UnknownSchema(LedgerError):
    """Raised when encoded data names a schema that no version in schemas/ matches."""

    def __init__(self, msg: str, *, fingerprint: bytes = b"") -> None:
        super().__init__(msg)
        self.fingerprint = fingerprint


class CorruptRecord(LedgerError):
    """Raised when encoded data is truncated or damaged; `records_read` counts what came before."""

    def __init__(self, msg: str, *, records_read: int = 0) -> None:
        super().__init__(msg)
        self.records_read = records_read
