"""Tables of the subscription workflow (migration 0002): history, SLA clocks, notifications,
users and API tokens, evaluations, effectiveness reports and department suspensions."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from exchange.kernel.clock import utcnow
from exchange.store.models import Base


class SubscriptionTransition(Base):
    """One step of a subscription's life: who moved it from which state to which, and why."""

    __tablename__ = "subscription_transitions"

    id: Mapped[int] = mapped_column(primary_key=True)
    subscription_id: Mapped[int] = mapped_column(sa.ForeignKey("subscriptions.id"), index=True)
    action: Mapped[str] = mapped_column(sa.String(30))
    from_state: Mapped[str | None] = mapped_column(sa.String(20))
    to_state: Mapped[str] = mapped_column(sa.String(20))
    actor: Mapped[str] = mapped_column(sa.String(100))
    actor_kind: Mapped[str] = mapped_column(sa.String(20))
    reason: Mapped[str | None] = mapped_column(sa.Text)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class SlaClock(Base):
    """A deadline running against one party of one subscription (at most one per kind).

    ``stopped_at`` is set when the awaited step happens (or the subscription leaves the path);
    ``breached_at`` when housekeeping finds it overdue: how late = (stopped_at or now) - due_at.
    """

    __tablename__ = "sla_clocks"

    id: Mapped[int] = mapped_column(primary_key=True)
    subscription_id: Mapped[int] = mapped_column(sa.ForeignKey("subscriptions.id"), index=True)
    kind: Mapped[str] = mapped_column(sa.String(20))  # review|delivery|sign_off|evaluation|...
    party_kind: Mapped[str] = mapped_column(sa.String(20))  # provider | platform | requester
    party: Mapped[str] = mapped_column(sa.String(200))
    started_at: Mapped[dt.datetime]
    due_at: Mapped[dt.datetime]
    working_days: Mapped[int | None]  # None: a natural-time clock
    provisional: Mapped[bool] = mapped_column(default=False)
    stopped_at: Mapped[dt.datetime | None]
    outcome: Mapped[str | None] = mapped_column(sa.String(20))  # met|late|auto|cancelled
    breached_at: Mapped[dt.datetime | None]
    reminders_sent: Mapped[int] = mapped_column(default=0)

    __table_args__ = (sa.UniqueConstraint("subscription_id", "kind", name="uq_clock_kind"),)


class Notification(Base):
    """The outbox: a message for a party, delivered by the webhook sender (at least once)."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(40))
    recipient: Mapped[str] = mapped_column(sa.String(200))
    subscription_id: Mapped[int | None] = mapped_column(sa.ForeignKey("subscriptions.id"))
    payload: Mapped[dict[str, Any]]
    dedupe_key: Mapped[str] = mapped_column(sa.String(200), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    status: Mapped[str] = mapped_column(sa.String(10), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    sent_at: Mapped[dt.datetime | None]


class User(Base):
    """A person or system acting through the API or CLI, with one role."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(100), unique=True)
    role: Mapped[str] = mapped_column(sa.String(20))  # admin | provider | requester
    department: Mapped[str | None] = mapped_column(sa.String(200))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class UserPassword(Base):
    """The argon2id hash of the password an account application issued a user (migration
    0014_departments_accounts, a branch that does not descend from this table's: hence no
    foreign key). A user without one signs in with API tokens only."""

    __tablename__ = "user_passwords"

    user_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    password_hash: Mapped[str] = mapped_column(sa.String(200))
    set_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    """An API token of a user; only its sha256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    label: Mapped[str | None] = mapped_column(sa.String(100))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[dt.datetime | None]


class Evaluation(Base):
    """The requester's five-dimension star rating (000 评价)."""

    __tablename__ = "evaluations"

    id: Mapped[int] = mapped_column(primary_key=True)
    subscription_id: Mapped[int] = mapped_column(sa.ForeignKey("subscriptions.id"), unique=True)
    matches_description: Mapped[int]
    data_quality: Mapped[int]
    timeliness: Mapped[int]
    implementation_service: Mapped[int]
    review_efficiency: Mapped[int]
    comment: Mapped[str | None] = mapped_column(sa.Text)
    by: Mapped[str] = mapped_column(sa.String(100))
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class EffectivenessReport(Base):
    """The usage-effectiveness report (应用成效) due 90 days after closing."""

    __tablename__ = "effectiveness_reports"

    id: Mapped[int] = mapped_column(primary_key=True)
    subscription_id: Mapped[int] = mapped_column(sa.ForeignKey("subscriptions.id"), index=True)
    summary: Mapped[str] = mapped_column(sa.Text)
    by: Mapped[str] = mapped_column(sa.String(100))
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class DepartmentSuspension(Base):
    """A department's table deliveries and new applications stopped for an overdue report."""

    __tablename__ = "department_suspensions"

    id: Mapped[int] = mapped_column(primary_key=True)
    department_code: Mapped[str] = mapped_column(sa.String(64), index=True)
    subscription_id: Mapped[int] = mapped_column(sa.ForeignKey("subscriptions.id"), unique=True)
    reason: Mapped[str] = mapped_column(sa.Text)
    since: Mapped[dt.datetime]
    lifted_at: Mapped[dt.datetime | None]


class UpstreamApplication(Base):
    """A department's request for a national or provincial resource the city does not proxy
    yet (001 五, 002): the city forwards it upstream, records the upstream decision and its
    approval reference, and once the resource is proxied (in the city catalog with its
    ``origin``) files the department's own application (``form``) as a subscription."""

    __tablename__ = "upstream_applications"

    id: Mapped[int] = mapped_column(primary_key=True)
    level: Mapped[str] = mapped_column(sa.String(20))  # national | provincial
    platform: Mapped[str] = mapped_column(sa.String(200))
    upstream_code: Mapped[str] = mapped_column(sa.String(100), index=True)
    resource_name: Mapped[str] = mapped_column(sa.String(200))
    kind: Mapped[str] = mapped_column(sa.String(10))  # table | file | folder | api
    department_code: Mapped[str] = mapped_column(sa.String(64), index=True)
    applicant: Mapped[str] = mapped_column(sa.String(100))
    form: Mapped[dict[str, Any]]  # the department's application, its resource left out
    state: Mapped[str] = mapped_column(sa.String(20))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    state_changed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    forward_due_at: Mapped[dt.datetime]
    forward_provisional: Mapped[bool] = mapped_column(default=False)
    forwarded_at: Mapped[dt.datetime | None]
    forward_breached_at: Mapped[dt.datetime | None]
    approval_ref: Mapped[str | None] = mapped_column(sa.String(200))
    decision_reason: Mapped[str | None] = mapped_column(sa.Text)
    resource_code: Mapped[str | None] = mapped_column(sa.String(64))
    subscription_id: Mapped[int | None] = mapped_column(sa.ForeignKey("subscriptions.id"))


class UpstreamTransition(Base):
    """One step of an upstream application: who moved it, from which state to which, why."""

    __tablename__ = "upstream_transitions"

    id: Mapped[int] = mapped_column(primary_key=True)
    application_id: Mapped[int] = mapped_column(
        sa.ForeignKey("upstream_applications.id"), index=True
    )
    action: Mapped[str] = mapped_column(sa.String(30))
    from_state: Mapped[str | None] = mapped_column(sa.String(20))
    to_state: Mapped[str] = mapped_column(sa.String(20))
    actor: Mapped[str] = mapped_column(sa.String(100))
    reason: Mapped[str | None] = mapped_column(sa.Text)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
