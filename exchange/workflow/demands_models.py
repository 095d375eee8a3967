"""Tables of data demands (migration 0016_demands_joint): a department's request for data
nobody shares yet (003 §17, 000 供需对接), its provider's answer clock, and its history."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from exchange.kernel.clock import utcnow
from exchange.store.models import Base


class DataDemand(Base):
    """A data demand: what data, why and on what legal basis; the provider department the
    platform assigned; that provider's answer (an existing resource, a commitment to publish
    one by a date, or a refusal with its reason), due within 5 working days of the assignment.

    The answer clock is the demand's own columns (``answer_due_at`` … ``breached_at``): it
    runs like the subscriptions' clocks (reminders, one breach, provisional deadlines)."""

    __tablename__ = "data_demands"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(sa.String(200))
    description: Mapped[str] = mapped_column(sa.Text)  # what data (fields, coverage, cycle)
    purpose: Mapped[str] = mapped_column(sa.Text)  # why
    legal_basis: Mapped[str] = mapped_column(sa.Text)
    urgency: Mapped[str] = mapped_column(sa.String(10), default="normal")
    department_code: Mapped[str] = mapped_column(sa.String(64), index=True)  # the requester
    filed_by: Mapped[str] = mapped_column(sa.String(100))
    filed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    state: Mapped[str] = mapped_column(sa.String(20), index=True)
    state_changed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    provider_code: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    assigned_at: Mapped[dt.datetime | None]
    answer_due_at: Mapped[dt.datetime | None]
    answer_provisional: Mapped[bool] = mapped_column(default=False)
    reminders_sent: Mapped[int] = mapped_column(default=0)
    breached_at: Mapped[dt.datetime | None]
    answer: Mapped[str | None] = mapped_column(sa.String(10))  # existing | publish | refuse
    resource_code: Mapped[str | None] = mapped_column(sa.String(64))
    publish_by: Mapped[dt.date | None]
    answer_text: Mapped[str | None] = mapped_column(sa.Text)
    answered_at: Mapped[dt.datetime | None]
    closed_at: Mapped[dt.datetime | None]


class DemandTransition(Base):
    """One step of a demand: who moved it from which state to which, and why."""

    __tablename__ = "data_demand_transitions"

    id: Mapped[int] = mapped_column(primary_key=True)
    demand_id: Mapped[int] = mapped_column(sa.ForeignKey("data_demands.id"), index=True)
    action: Mapped[str] = mapped_column(sa.String(20))
    from_state: Mapped[str | None] = mapped_column(sa.String(20))
    to_state: Mapped[str] = mapped_column(sa.String(20))
    actor: Mapped[str] = mapped_column(sa.String(100))
    actor_kind: Mapped[str] = mapped_column(sa.String(20))
    reason: Mapped[str | None] = mapped_column(sa.Text)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
