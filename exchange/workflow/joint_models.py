"""The table of joint reviews (migration 0016_demands_joint): one row per source provider of
a conditional request for a resource that fuses several departments' data (003 §15)."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from exchange.store.models import Base

PENDING, APPROVED, REJECTED = "pending", "approved", "rejected"


def clock_kind(position: int) -> str:
    """The SLA clock of the ``position``-th (from 1) source provider: ``review.1``, …"""
    return f"review.{position}"


class JointReview(Base):
    """One source provider's part of a joint review: pending until it decides (or its clock,
    the subscription's SLA clock ``clock_kind``, runs out), then approved with the fields it
    grants or rejected with its reason."""

    __tablename__ = "joint_reviews"

    id: Mapped[int] = mapped_column(primary_key=True)
    subscription_id: Mapped[int] = mapped_column(sa.ForeignKey("subscriptions.id"), index=True)
    department_code: Mapped[str] = mapped_column(sa.String(64))
    clock_kind: Mapped[str] = mapped_column(sa.String(20))  # review.1, review.2, ...
    decision: Mapped[str] = mapped_column(sa.String(10), default="pending")  # or approved|rejected
    fields: Mapped[list[str] | None] = mapped_column(sa.JSON)
    reason: Mapped[str | None] = mapped_column(sa.Text)
    decided_by: Mapped[str | None] = mapped_column(sa.String(100))
    decided_at: Mapped[dt.datetime | None]
    timed_out: Mapped[bool] = mapped_column(default=False)

    __table_args__ = (
        sa.UniqueConstraint("subscription_id", "department_code", name="uq_joint_review"),
    )
