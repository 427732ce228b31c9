"""The audit ledger: the `JobEvent` record, its Avro codec, the outbox shipper.

The codec lives in `ledger.codec` and is not imported here: it reads the Avro schemas when
imported, and modules that only need `JobEvent` should not depend on finding them.
"""

from ledger.errors import CorruptRecord, LedgerError, SchemaViolation, UnknownSchema
from ledger.event import JobEvent

__all__ = ["CorruptRecord", "JobEvent", "LedgerError", "SchemaViolation", "UnknownSchema"]
