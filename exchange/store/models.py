"""The metadata store's tables (SQLAlchemy 2, typed mappings). Changes go through Alembic."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from exchange.kernel.clock import utcnow


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: sa.JSON, list[str]: sa.JSON}


class Subscription(Base):
    """A requester's request for a resource and, once approved, its right to receive the
    granted ``fields`` on its node. ``status`` is the workflow state (exchange.workflow.states);
    the application form's fields (001 附件4) are kept as the requester filled them in."""

    __tablename__ = "subscriptions"

    id: Mapped[int] = mapped_column(primary_key=True)
    resource_code: Mapped[str] = mapped_column(sa.String(64), index=True)
    subscriber_node: Mapped[str] = mapped_column(sa.String(63))
    target_schema: Mapped[str | None] = mapped_column(sa.String(63))
    target_table: Mapped[str] = mapped_column(sa.String(63))
    fields: Mapped[list[str]]  # granted (what the engine delivers)
    status: Mapped[str] = mapped_column(sa.String(20), default="implementation")
    valid_until: Mapped[dt.date]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # The application form (all NULL for subscriptions a platform engineer added directly).
    share: Mapped[str | None] = mapped_column(sa.String(20))
    requested_fields: Mapped[list[str] | None] = mapped_column(sa.JSON)
    department_code: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    department_name: Mapped[str | None] = mapped_column(sa.String(200))
    purpose: Mapped[str | None] = mapped_column(sa.Text)
    legal_basis: Mapped[str | None] = mapped_column(sa.Text)
    contact_name: Mapped[str | None] = mapped_column(sa.String(100))
    contact_phone: Mapped[str | None] = mapped_column(sa.String(40))
    contact_email: Mapped[str | None] = mapped_column(sa.String(200))
    system_name: Mapped[str | None] = mapped_column(sa.String(200))
    system_ip: Mapped[str | None] = mapped_column(sa.String(45))
    deploy_location: Mapped[str | None] = mapped_column(sa.String(200))
    technical_notes: Mapped[str | None] = mapped_column(sa.Text)
    usage_days: Mapped[int | None]
    urgency: Mapped[str] = mapped_column(sa.String(10), default="normal")
    urgency_reason: Mapped[str | None] = mapped_column(sa.Text)
    applicant: Mapped[str | None] = mapped_column(sa.String(100))
    # Workflow bookkeeping (times in UTC).
    applied_at: Mapped[dt.datetime | None]
    approved_at: Mapped[dt.datetime | None]
    closed_at: Mapped[dt.datetime | None]
    state_changed_at: Mapped[dt.datetime | None]
    decision_reason: Mapped[str | None] = mapped_column(sa.Text)
    suspended_from: Mapped[str | None] = mapped_column(sa.String(20))


class Run(Base):
    """One exchange of one resource; its staged files live in ``staging_dir``."""

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    resource_code: Mapped[str] = mapped_column(sa.String(64), index=True)
    # running | failed (a step raised, resumable until closed) | succeeded | held | abandoned;
    # exchange.status shows a `running` row that no live lease holds as `interrupted`.
    status: Mapped[str] = mapped_column(sa.String(20))
    step: Mapped[str] = mapped_column(sa.String(20))  # last step completed
    full: Mapped[bool] = mapped_column(default=False)
    staging_dir: Mapped[str] = mapped_column(sa.String(1000))
    rows_extracted: Mapped[int | None]
    rows_valid: Mapped[int | None]
    rows_quarantined: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(sa.Text)
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None]


class RunLease(Base):
    """Who is working on a resource's run now: one row per resource while a holder (a CLI
    process, or an Airflow DAG run: ``shared``) has it (``exchange.runs.lease``); ``pid`` and
    ``host`` are the process that took it, ``heartbeat_at`` the last beat of any member."""

    __tablename__ = "run_leases"

    resource_code: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    run_id: Mapped[str | None] = mapped_column(sa.String(64))
    holder: Mapped[str] = mapped_column(sa.String(200))
    pid: Mapped[int]
    host: Mapped[str] = mapped_column(sa.String(255))
    acquired_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    shared: Mapped[bool] = mapped_column(default=False, server_default=sa.false())


class RunLeaseMember(Base):
    """One process working for a lease's holder now (a DAG run's parallel tasks are several):
    each gives back its own row, so one finishing never frees the lease for its siblings."""

    __tablename__ = "run_lease_members"

    resource_code: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    token: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    holder: Mapped[str] = mapped_column(sa.String(200))
    pid: Mapped[int]
    host: Mapped[str] = mapped_column(sa.String(255))
    joined_at: Mapped[dt.datetime]
    heartbeat_at: Mapped[dt.datetime]


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
    # The unchained events, in id order, for the sealer (migration 0012).
    __table_args__ = (
        sa.Index(
            "ix_audit_events_pending", "id",
            postgresql_where=sa.text("seq IS NULL"), sqlite_where=sa.text("seq IS NULL"),
        ),
    )  # fmt: skip

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)  # windows of time
    actor: Mapped[str] = mapped_column(sa.String(100))
    kind: Mapped[str] = mapped_column(sa.String(50))
    subject: Mapped[str] = mapped_column(sa.String(200))
    payload: Mapped[dict[str, Any]]
    # NULL until the sealer chains the event (exchange.audit.seal): appenders take no lock, and
    # the chain runs in ``seq`` order, not ``id`` order (ids are handed out before commit).
    seq: Mapped[int | None] = mapped_column(sa.BigInteger, unique=True)
    prev_hash: Mapped[str | None] = mapped_column(sa.String(64), unique=True)
    hash: Mapped[str | None] = mapped_column(sa.String(64), unique=True)


class AuditCheckpoint(Base):
    """A signed seal over a consecutive range of the chain (exchange.audit.checkpoints);
    ``witnessed`` once its line is in the witness file outside the store."""

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    seq_from: Mapped[int] = mapped_column(sa.BigInteger)
    seq_to: Mapped[int] = mapped_column(sa.BigInteger)
    count: Mapped[int]
    head_hash: Mapped[str] = mapped_column(sa.String(64))
    at: Mapped[dt.datetime]
    prev_signature: Mapped[str] = mapped_column(sa.Text)
    key_id: Mapped[str] = mapped_column(sa.String(32))
    signature: Mapped[str] = mapped_column(sa.Text)
    witnessed: Mapped[bool] = mapped_column(default=False)


class FileTarget(Base):
    """The directory a file or folder subscription fills on its subscriber's file node."""

    __tablename__ = "file_targets"

    subscription_id: Mapped[int] = mapped_column(
        sa.ForeignKey("subscriptions.id"), primary_key=True
    )
    target_dir: Mapped[str] = mapped_column(sa.String(1000))


class DeliveredRow(Base):
    """A row a subscription holds whose cursor lies within the look-back window of its
    watermark (``cursor_lag`` below it, the watermark's own value included), by the hash of
    its granted fields: such a row comes back in the next incremental extract (inclusive
    ``>=``, the window re-read) and is not sent again while it is unchanged. Replaced with
    each delivery, in the transaction that records it (``exchange.runs.delivered``)."""

    __tablename__ = "delivered_rows"

    subscription_id: Mapped[int] = mapped_column(
        sa.ForeignKey("subscriptions.id"), primary_key=True
    )
    row_hash: Mapped[bytes] = mapped_column(sa.LargeBinary(16), primary_key=True)


class Installation(Base):
    """This metadata store's one installation id (migration 0007), generated once: it keys the
    delivery markers this installation writes in a target database, so that two installations
    delivering into one database never read or replace each other's markers."""

    __tablename__ = "installation"

    id: Mapped[int] = mapped_column(primary_key=True)  # always 1: one row
    installation_id: Mapped[str] = mapped_column(sa.String(32), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (sa.CheckConstraint("id = 1", name="ck_installation_one_row"),)


class RunPrune(Base):
    """A finished run whose staging directory was removed after the retention period
    (``exchange.runs.prune``); the run's row stays."""

    __tablename__ = "run_prunes"

    run_id: Mapped[str] = mapped_column(sa.ForeignKey("runs.id"), primary_key=True)
    pruned_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    bytes_removed: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    files_removed: Mapped[int] = mapped_column(default=0)
