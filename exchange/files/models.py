"""Tables of file and folder exchange: the manifest per resource, the per-subscriber ledger.

* ``file_manifest``: what the provider's node held when last pulled (path, size, mtime,
  sha256); a listing is compared with it to find new, changed and deleted files.
* ``file_deliveries``: one row per run, subscriber and file: the ledger. A file version (its
  sha256) reaches a subscriber once: the planner sends a file only to subscribers whose latest
  delivered version of that path differs, and a resumed run skips rows already delivered.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from exchange.kernel.clock import utcnow
from exchange.store.models import Base


class FileManifest(Base):
    """One file of a resource as last pulled from the provider."""

    __tablename__ = "file_manifest"

    id: Mapped[int] = mapped_column(primary_key=True)
    resource_code: Mapped[str] = mapped_column(sa.String(64))
    path: Mapped[str] = mapped_column(sa.String(1000))
    size: Mapped[int] = mapped_column(sa.BigInteger)
    mtime: Mapped[float]
    sha256: Mapped[str] = mapped_column(sa.String(64))
    run_id: Mapped[str] = mapped_column(sa.String(64))
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (sa.UniqueConstraint("resource_code", "path", name="uq_file_manifest"),)


class FileDelivery(Base):
    """One file version put to (or deleted from) one subscriber by one run."""

    __tablename__ = "file_deliveries"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(sa.ForeignKey("runs.id"), index=True)
    subscription_id: Mapped[int] = mapped_column(sa.ForeignKey("subscriptions.id"))
    path: Mapped[str] = mapped_column(sa.String(1000))
    action: Mapped[str] = mapped_column(sa.String(10))  # put | delete
    sha256: Mapped[str | None] = mapped_column(sa.String(64))
    size: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    status: Mapped[str] = mapped_column(sa.String(20))  # delivered | failed
    error: Mapped[str | None] = mapped_column(sa.Text)
    resumed_from: Mapped[int | None] = mapped_column(sa.BigInteger)
    finished_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        sa.UniqueConstraint("run_id", "subscription_id", "path", name="uq_file_delivery"),
        sa.Index("ix_file_deliveries_sub_path", "subscription_id", "path"),
    )
