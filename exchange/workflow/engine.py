"""Where the exchange engine meets the workflow: who is served, and what a delivery completes."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from exchange.store.models import Subscription
from exchange.workflow import states as st
from exchange.workflow.models import DepartmentSuspension
from exchange.workflow.notices_models import offline_on
from exchange.workflow.transitions import move
from exchange.workflow.users import ENGINE


def suspended_departments() -> sa.Select[Any]:
    """Departments whose deliveries are stopped for an overdue effectiveness report."""
    return sa.select(DepartmentSuspension.department_code).where(
        DepartmentSuspension.lifted_at.is_(None)
    )


def deliverable(today: dt.date) -> sa.ColumnElement[bool]:
    """The subscriptions the engine may serve today: approved (DELIVERABLE, so not suspended),
    within their usage period, not of a department suspended for an overdue report, and not
    of a resource an offline notice has taken offline (``exchange.workflow.notices``)."""
    return sa.and_(
        Subscription.status.in_(sorted(st.DELIVERABLE)),
        Subscription.valid_until >= today,
        Subscription.resource_code.not_in(offline_on(today)),
        sa.or_(
            Subscription.department_code.is_(None),
            Subscription.department_code.not_in(suspended_departments()),
        ),
    )


def on_delivered(s: Session, subscription_id: int, run_id: str, at: dt.datetime) -> None:
    """A successful delivery: the first one completes implementation (→ sign-off)."""
    sub = s.get(Subscription, subscription_id)
    if sub is not None and sub.status == st.IMPLEMENTATION:
        move(
            s,
            sub,
            "deliver",
            ENGINE,
            at,
            f"first delivery succeeded (run {run_id})",
            extra={"run": run_id},
        )
