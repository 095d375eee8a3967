"""One exclusive lock for the metadata store's writers that must not interleave.

Workflow steps need it (each reads a state and writes the next). It is held until the
transaction ends. The audit chain no longer takes it: appenders take no lock, and the audit
sealer (exchange.audit.seal) holds a lock of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.orm import Session

from exchange.store.models import AuditEvent

if TYPE_CHECKING:
    from exchange.store.db import Store

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


@contextmanager
def locked_session(store: Store) -> Iterator[Session]:
    """A transaction that holds the writer lock from its start: a step that reads a state and
    writes the next (a workflow step, a code issued) reads the current one."""
    with store.session() as s:
        serialize(s)
        yield s
