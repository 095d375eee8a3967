"""One exclusive lock for the metadata store's writers that must not interleave.

The audit chain needs it (each event links to the head that was current when it was written)
and so do workflow steps (each reads a state and writes the next). It is held until the
transaction ends.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from exchange.store.models import AuditEvent

LOCK_KEY = 0x6578636861696E  # "exchain": the advisory-lock key on PostgreSQL


def serialize(s: Session) -> None:
    """Wait for, then hold, the store's writer lock for the rest of this transaction."""
    dialect = s.get_bind().dialect.name
    if dialect == "postgresql":
        s.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
    elif dialect == "sqlite":
        # pysqlite opens a transaction only before a write, so reads before it are not
        # isolated: an UPDATE that matches nothing takes SQLite's one write lock now, and
        # what this transaction reads afterwards is current until it commits.
        s.execute(sa.update(AuditEvent).where(AuditEvent.id < 0).values(kind=AuditEvent.kind))
