"""Tables of departments and account applications (migration 0014_departments_accounts):
the departments (loaded from the catalog, managed by CLI and API), the account applications
of the forms 用户账号密码申请单 and 数据库、FTP 账号密码申请单, their history and their clocks."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from exchange.kernel.clock import utcnow
from exchange.store.models import Base


class DepartmentRow(Base):
    """A department: code (the unified social credit code where it has one), name, level and
    the code of its supervising department. ``source``: ``catalog`` (loaded from it) or
    ``store`` (added with ``exchange department add`` or the API)."""

    __tablename__ = "departments"

    code: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    level: Mapped[str] = mapped_column(sa.String(30))
    supervisor: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    source: Mapped[str] = mapped_column(sa.String(10), default="catalog")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AccountApplication(Base):
    """A department's application for a platform, database or FTP account (or its reset).
    ``department_code`` is the department the account is for; ``acting_department`` the
    department of the user who filed it, when a supervising department applied for its unit.
    The secret issued is never stored here (a platform user's password only as its hash, in
    ``users``)."""

    __tablename__ = "account_applications"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_type: Mapped[str] = mapped_column(sa.String(10))  # platform | database | ftp
    application_type: Mapped[str] = mapped_column(sa.String(10))  # new | reset | other
    department_code: Mapped[str] = mapped_column(sa.String(64), index=True)
    acting_department: Mapped[str | None] = mapped_column(sa.String(64))
    supervisor: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    responsible_person: Mapped[str] = mapped_column(sa.String(100))
    position: Mapped[str] = mapped_column(sa.String(100))
    phone: Mapped[str] = mapped_column(sa.String(40))
    email: Mapped[str] = mapped_column(sa.String(200))
    reason: Mapped[str] = mapped_column(sa.Text)
    existing_login: Mapped[str | None] = mapped_column(sa.String(100))  # 原有账号名称 (reset)
    node: Mapped[str | None] = mapped_column(sa.String(63))
    applicant: Mapped[str] = mapped_column(sa.String(100))
    state: Mapped[str] = mapped_column(sa.String(20), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    state_changed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    login: Mapped[str | None] = mapped_column(sa.String(100))  # what was issued (not a secret)
    reach: Mapped[str | None] = mapped_column(sa.Text)
    decision_reason: Mapped[str | None] = mapped_column(sa.Text)


class AccountTransition(Base):
    """One step of an account application: who (of which department), from which state to
    which, for which department, and why."""

    __tablename__ = "account_transitions"

    id: Mapped[int] = mapped_column(primary_key=True)
    application_id: Mapped[int] = mapped_column(
        sa.ForeignKey("account_applications.id"), index=True
    )
    action: Mapped[str] = mapped_column(sa.String(30))
    from_state: Mapped[str | None] = mapped_column(sa.String(20))
    to_state: Mapped[str] = mapped_column(sa.String(20))
    actor: Mapped[str] = mapped_column(sa.String(100))
    actor_department: Mapped[str | None] = mapped_column(sa.String(64))
    reason: Mapped[str | None] = mapped_column(sa.Text)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AccountClock(Base):
    """A deadline of one account application, shaped as the subscriptions' SLA clocks
    (``exchange.workflow.models.SlaClock``) and counted on the same calendar: ``consent`` (the
    supervising department) and ``answer`` (the platform, 2 working days)."""

    __tablename__ = "account_clocks"

    id: Mapped[int] = mapped_column(primary_key=True)
    application_id: Mapped[int] = mapped_column(
        sa.ForeignKey("account_applications.id"), index=True
    )
    kind: Mapped[str] = mapped_column(sa.String(20))  # consent | answer
    party_kind: Mapped[str] = mapped_column(sa.String(20))  # supervisor | platform
    party: Mapped[str] = mapped_column(sa.String(200))
    started_at: Mapped[dt.datetime]
    due_at: Mapped[dt.datetime]
    working_days: Mapped[int]
    provisional: Mapped[bool] = mapped_column(default=False)
    stopped_at: Mapped[dt.datetime | None]
    outcome: Mapped[str | None] = mapped_column(sa.String(20))  # met | late | cancelled
    breached_at: Mapped[dt.datetime | None]
    reminders_sent: Mapped[int] = mapped_column(default=0)

    __table_args__ = (sa.UniqueConstraint("application_id", "kind", name="uq_account_clock_kind"),)
