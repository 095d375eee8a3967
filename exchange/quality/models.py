"""The quality tables of the metadata store (migrations 0003, 0005, 0009, 0010)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from exchange.kernel.clock import utcnow
from exchange.store.models import Base


class QuarantineEntry(Base):
    """One bad row of one run: its key and every reason (the rows themselves are Parquet in
    the run's staging directory). ``released_run_id`` names the later run that delivered the
    row once the provider had fixed it."""

    __tablename__ = "quality_quarantine"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(sa.ForeignKey("runs.id"), index=True)
    resource_code: Mapped[str] = mapped_column(sa.String(64))
    row_key: Mapped[str] = mapped_column(sa.String(500))
    reasons: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    released_run_id: Mapped[str | None] = mapped_column(sa.String(64))
    # The hash of the row's values (migration 0005; NULL before): the same row quarantined
    # again unchanged is neither counted again nor listed twice.
    row_hash: Mapped[bytes | None] = mapped_column(sa.LargeBinary(16))
    # When a key field holds ID or phone numbers (migration 0009): ``row_key`` is the masked
    # key as shown, and this keyed hash of the raw key is what later runs match it by.
    key_digest: Mapped[bytes | None] = mapped_column(sa.LargeBinary(16))

    __table_args__ = (
        sa.Index("ix_quality_quarantine_key", "resource_code", "row_key"),
        sa.Index("ix_quality_quarantine_digest", "resource_code", "key_digest"),
    )


class QuarantineKeyCheck(Base):
    """The check value of the quarantine key (migration 0010): an HMAC of a constant under the
    key in $EXCHANGE_HOME, recorded when the key is first used. A key file that is missing or
    does not match it is refused: every masked key in the store was made with the original."""

    __tablename__ = "quality_key_check"

    id: Mapped[int] = mapped_column(primary_key=True, default=1)
    check_value: Mapped[bytes] = mapped_column(sa.LargeBinary(32))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (sa.CheckConstraint("id = 1", name="ck_quality_key_check_one_row"),)


class QualityRunStat(Base):
    """What validation found in one run: the base of the six scores."""

    __tablename__ = "quality_run_stats"

    run_id: Mapped[str] = mapped_column(sa.ForeignKey("runs.id"), primary_key=True)
    resource_code: Mapped[str] = mapped_column(sa.String(64), index=True)
    extracted: Mapped[int]
    valid: Mapped[int]
    quarantined: Mapped[int]
    by_rule: Mapped[dict[str, Any]]
    by_dimension: Mapped[dict[str, Any]]
    newest_cursor: Mapped[str | None] = mapped_column(sa.String(1000))
    stale: Mapped[str | None] = mapped_column(sa.Text)
    held: Mapped[str | None] = mapped_column(sa.Text)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class QualityTicket(Base):
    """A provider's to-do about bad data (004 §9: flag → quarantine → review → handle).

    open → answered (fixed_at_source | accepted | will_not_fix, with a reason) → closed;
    due 3 working days after it was opened."""

    __tablename__ = "quality_tickets"

    id: Mapped[int] = mapped_column(primary_key=True)
    resource_code: Mapped[str] = mapped_column(sa.String(64), index=True)
    provider: Mapped[str] = mapped_column(sa.String(63))
    status: Mapped[str] = mapped_column(sa.String(20), default="open")
    opened_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    due_at: Mapped[dt.datetime]
    due_provisional: Mapped[bool] = mapped_column(default=False)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    runs: Mapped[list[str]]
    counts: Mapped[dict[str, Any]]
    sample_keys: Mapped[list[str]]
    findings: Mapped[list[str]]
    rows: Mapped[int] = mapped_column(default=0)
    resolution: Mapped[str | None] = mapped_column(sa.String(20))
    answer: Mapped[str | None] = mapped_column(sa.Text)
    answered_by: Mapped[str | None] = mapped_column(sa.String(100))
    answered_at: Mapped[dt.datetime | None]
    closed_at: Mapped[dt.datetime | None]


class ErrorReport(Base):
    """A requester's error report (纠错) on rows it received; the provider answers within
    3 working days, and the fix, once made at the source, reaches every subscriber."""

    __tablename__ = "quality_error_reports"

    id: Mapped[int] = mapped_column(primary_key=True)
    resource_code: Mapped[str] = mapped_column(sa.String(64), index=True)
    subscription_id: Mapped[int | None] = mapped_column(sa.ForeignKey("subscriptions.id"))
    reporter: Mapped[str] = mapped_column(sa.String(100))
    # When a key field holds ID or phone numbers: ``row_keys`` are masked as shown, and
    # ``key_digests`` (migration 0010; hex, one per key) are what deliveries are matched by.
    row_keys: Mapped[list[str]]
    key_digests: Mapped[list[str] | None] = mapped_column(sa.JSON(none_as_null=True))
    fields: Mapped[list[str]]
    description: Mapped[str] = mapped_column(sa.Text)
    discovered_on: Mapped[dt.date | None]
    late: Mapped[bool] = mapped_column(default=False)
    reported_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    due_at: Mapped[dt.datetime]
    due_provisional: Mapped[bool] = mapped_column(default=False)
    status: Mapped[str] = mapped_column(sa.String(20), default="open")
    resolution: Mapped[str | None] = mapped_column(sa.String(20))
    answer: Mapped[str | None] = mapped_column(sa.Text)
    answered_at: Mapped[dt.datetime | None]
    closed_at: Mapped[dt.datetime | None]


class ErrorReportDelivery(Base):
    """A delivery that carried reported rows (in their corrected version) to a subscriber."""

    __tablename__ = "quality_error_report_deliveries"

    id: Mapped[int] = mapped_column(primary_key=True)
    report_id: Mapped[int] = mapped_column(sa.ForeignKey("quality_error_reports.id"), index=True)
    delivery_id: Mapped[int] = mapped_column(sa.ForeignKey("deliveries.id"))
    run_id: Mapped[str] = mapped_column(sa.String(64))
    subscription_id: Mapped[int]
    keys: Mapped[list[str]]  # masked as the report's ``row_keys``
    # theirs, when the report has them
    key_digests: Mapped[list[str] | None] = mapped_column(sa.JSON(none_as_null=True))

    __table_args__ = (sa.UniqueConstraint("report_id", "delivery_id", name="uq_report_delivery"),)
