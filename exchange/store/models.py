"""The metadata store's tables (SQLAlchemy 2, typed mappings). Changes go through Alembic."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> dt.datetime:
    """Naive UTC: every time in the store is UTC (shown in Asia/Shanghai)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: sa.JSON, list[str]: sa.JSON}


class Subscription(Base):
    """A requester's approved right to receive a resource's granted fields on its node."""

    __tablename__ = "subscriptions"

    id: Mapped[int] = mapped_column(primary_key=True)
    resource_code: Mapped[str] = mapped_column(sa.String(64), index=True)
    subscriber_node: Mapped[str] = mapped_column(sa.String(63))
    target_schema: Mapped[str | None] = mapped_column(sa.String(63))
    target_table: Mapped[str] = mapped_column(sa.String(63))
    fields: Mapped[list[str]]
    status: Mapped[str] = mapped_column(sa.String(20), default="active")
    valid_until: Mapped[dt.date]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        sa.UniqueConstraint("subscriber_node", "target_schema", "target_table", name="uq_target"),
    )


class Run(Base):
    """One exchange of one resource; its staged files live in ``staging_dir``."""

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    resource_code: Mapped[str] = mapped_column(sa.String(64), index=True)
    status: Mapped[str] = mapped_column(sa.String(20))  # running | succeeded | failed
    step: Mapped[str] = mapped_column(sa.String(20))  # last step completed
    full: Mapped[bool] = mapped_column(default=False)
    staging_dir: Mapped[str] = mapped_column(sa.String(1000))
    rows_extracted: Mapped[int | None]
    rows_valid: Mapped[int | None]
    rows_quarantined: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(sa.Text)
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None]


class Delivery(Base):
    """What one run did for one subscription."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(sa.ForeignKey("runs.id"), index=True)
    subscription_id: Mapped[int] = mapped_column(sa.ForeignKey("subscriptions.id"), index=True)
    status: Mapped[str] = mapped_column(sa.String(20))  # delivered | failed
    rows: Mapped[int] = mapped_column(default=0)
    watermark: Mapped[str | None] = mapped_column(sa.String(1000))
    error: Mapped[str | None] = mapped_column(sa.Text)
    seconds: Mapped[float | None]
    finished_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (sa.UniqueConstraint("run_id", "subscription_id", name="uq_delivery"),)


class Watermark(Base):
    """The cursor up to which a subscription has every row (mirrors the target's marker)."""

    __tablename__ = "watermarks"

    subscription_id: Mapped[int] = mapped_column(
        sa.ForeignKey("subscriptions.id"), primary_key=True
    )
    value: Mapped[str] = mapped_column(sa.String(1000))
    run_id: Mapped[str] = mapped_column(sa.String(64))
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AuditEvent(Base):
    """One link of the hash-chained audit log."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(sa.String(100))
    kind: Mapped[str] = mapped_column(sa.String(50))
    subject: Mapped[str] = mapped_column(sa.String(200))
    payload: Mapped[dict[str, Any]]
    prev_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
