"""Housekeeping ``tick(now)``: everything the clock does on its own.

* review timeouts, decided by the platform's policy (approve: Hubei 003 §14; reject: Guangdong
  000), recorded as a breach by the provider; reminders to a pending reviewer every 24/12/6 h
  by urgency;
* delivery deadlines passed: a breach by the platform;
* sign-off and evaluation auto-complete after one natural day;
* the usage-effectiveness report overdue: a breach, and the department's deliveries and new
  applications suspended until it reports;
* expiry at the end of the usage period (the engine stops delivering);
* upstream applications not forwarded within their working days: a breach by the platform;
* the source providers of a joint review each on their own clock (``joint``), and the data
  demands' answer clocks: reminders and a breach (``demands``);
* provisional deadlines recomputed once the calendar file knows their year;
* resource change and offline notices applied on their effective day (``notices``);
* from 1 November, a warning to the platform each working day while the calendar lacks the
  coming year (``calendar_status``).

Idempotent: a second call at the same ``now`` changes nothing. Steps that a timeout takes
happen *at the deadline* (not at ``now``), so the outcome does not depend on how often the
tick runs: ticking every 15 minutes or once a week reaches the same states.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, fields

import sqlalchemy as sa
from sqlalchemy.orm import Session

from exchange import audit
from exchange.kernel.clock import utcnow
from exchange.kernel.errors import BadInput
from exchange.kernel.workdays import WorkCalendar
from exchange.store import Store
from exchange.store.locks import serialize
from exchange.store.models import Subscription
from exchange.workflow import (
    calendar_status,
    demands,
    joint,
    notices,
    notifications,
    sla,
    upstream,
)
from exchange.workflow import states as st
from exchange.workflow.config import WorkflowSettings
from exchange.workflow.models import DepartmentSuspension, SlaClock
from exchange.workflow.transitions import AUTO, move
from exchange.workflow.users import SYSTEM
from exchange.workspace import Workspace

log = logging.getLogger(__name__)

MAX_ROUNDS = 10  # a timeout can start the next clock, which may be overdue too


@dataclass
class TickReport:
    """What one tick did (all zero when nothing was due)."""

    approved_on_timeout: int = 0
    rejected_on_timeout: int = 0
    reminders: int = 0
    breaches: int = 0
    signed_off: int = 0
    evaluated: int = 0
    expired: int = 0
    departments_suspended: int = 0
    upstream_forward_breaches: int = 0
    deadlines_recomputed: int = 0
    notices_applied: int = 0
    calendar_warnings: int = 0
    joint_timeouts: int = 0  # source providers of joint reviews decided for by the policy
    demand_reminders: int = 0

    @property
    def changed(self) -> int:
        return sum(getattr(self, f.name) for f in fields(self))

    def __str__(self) -> str:
        done = [
            f"{f.name.replace('_', ' ')} {getattr(self, f.name)}"
            for f in fields(self)
            if f.name != "calendar_warnings"
        ]
        text = ", ".join(d for d in done if not d.endswith(" 0")) or "nothing due"
        if self.calendar_warnings:  # a reminder to the platform, not a deadline that passed
            text += (
                "; warned the platform: the calendar lacks next year's official schedule "
                "(`exchange calendar status`)"
            )
        return text


def tick(
    target: Workspace | Store,
    now: dt.datetime | None = None,
    *,
    policy: str | None = None,
    calendar: WorkCalendar | None = None,
) -> TickReport:
    """Apply every deadline that has passed by ``now`` (naive UTC); see the module docstring."""
    store = target.store if isinstance(target, Workspace) else target
    now = now or utcnow()
    policy = policy or WorkflowSettings.from_env().review_timeout_policy
    report = TickReport()
    with store.session() as s:
        serialize(s)  # one housekeeper at a time, and no workflow step in between
        for _ in range(MAX_ROUNDS):
            before = report.changed
            _add(report, joint.tick(s, now, policy))  # a joint review's clocks are its own
            _reviews(s, now, policy, report)
            _breaches(s, now, "delivery", report)
            _auto_complete(s, now, "sign_off", "sign_off", report)
            _auto_complete(s, now, "evaluation", "evaluate", report)
            _effectiveness(s, now, report)
            _expiry(s, now, report)
            report.upstream_forward_breaches += upstream.forward_breaches(s, now)
            _add(report, demands.tick(s, now))
            if report.changed == before:
                break
        report.deadlines_recomputed = sla.refresh_provisional(s, calendar)
        report.deadlines_recomputed += upstream.refresh_provisional(s, calendar)
        report.deadlines_recomputed += demands.refresh_provisional(s, calendar)
        report.deadlines_recomputed += notices.refresh_provisional(s, calendar)
        report.notices_applied = notices.apply_due(s, now)
        report.calendar_warnings = calendar_status.warn_missing_years(s, now, calendar)
    _seal_audit(target, store)
    return report


def _add(report: TickReport, counts: dict[str, int]) -> None:
    """Add a module's own tick counts to the report fields they are named after."""
    for name, n in counts.items():
        setattr(report, name, getattr(report, name) + n)


def _seal_audit(target: Workspace | Store, store: Store) -> None:
    """Seal the audit log: a checkpoint is due every T seconds even when nothing else
    commits. A missing key must not stop the deadlines: it is logged (and ``exchange audit
    seal`` or ``verify`` names it)."""
    if isinstance(target, Workspace):
        audit.configure(store, target.settings)
    try:
        audit.seal(store)
    except BadInput as exc:
        log.warning("the audit log was not checkpointed: %s", exc)


def _running(s: Session, kind: str) -> list[tuple[SlaClock, Subscription]]:
    rows = s.execute(
        sa.select(SlaClock, Subscription)
        .join(Subscription, Subscription.id == SlaClock.subscription_id)
        .where(SlaClock.kind == kind, SlaClock.stopped_at.is_(None))
        .order_by(SlaClock.due_at, SlaClock.id)
    ).all()
    return [(c, sub) for c, sub in rows]


def _breach(s: Session, clock: SlaClock, report: TickReport) -> None:
    if sla.record_breach(s, clock):
        report.breaches += 1


def _reviews(s: Session, now: dt.datetime, policy: str, report: TickReport) -> None:
    for clock, sub in _running(s, "review"):
        if sub.status != st.UNDER_REVIEW:
            continue
        if now > clock.due_at:
            _breach(s, clock, report)
            at = clock.due_at
            if policy == "approve":
                move(s, sub, "approve", SYSTEM, at,
                     AUTO + "no answer within 5 working days: approved (视为同意, Hubei 003 §14)",
                     extra={"fields": sub.fields})  # fmt: skip
                report.approved_on_timeout += 1
            else:
                why = "no answer within 5 working days: rejected (超时拒绝, Guangdong 000)"
                move(s, sub, "reject", SYSTEM, at, AUTO + why)
                report.rejected_on_timeout += 1
            clock.outcome = "timeout"
            continue
        interval = sla.REMINDER_INTERVAL.get(sub.urgency, sla.REMINDER_INTERVAL["normal"])
        slot = int((now - clock.started_at) / interval)
        if slot >= 1 and slot > clock.reminders_sent:
            clock.reminders_sent = slot
            notifications.notify(
                s,
                "review.reminder",
                f"provider:{clock.party}",
                {"resource": sub.resource_code, "urgency": sub.urgency, "reminder": slot,
                 "due": sla.show(clock.due_at, clock.provisional)},
                key=f"review.reminder:{sub.id}:{slot}",
                subscription_id=sub.id,
            )  # fmt: skip
            report.reminders += 1


def _breaches(s: Session, now: dt.datetime, kind: str, report: TickReport) -> None:
    for clock, _ in _running(s, kind):
        if now > clock.due_at:
            _breach(s, clock, report)


def _auto_complete(
    s: Session, now: dt.datetime, kind: str, action: str, report: TickReport
) -> None:
    state = {"sign_off": st.SIGN_OFF, "evaluation": st.EVALUATION}[kind]
    for clock, sub in _running(s, kind):
        if sub.status == state and now >= clock.due_at:
            move(s, sub, action, SYSTEM, clock.due_at,
                 AUTO + f"no {kind.replace('_', '-')} within 1 natural day (000)")  # fmt: skip
            if kind == "sign_off":
                report.signed_off += 1
            else:
                report.evaluated += 1


def _effectiveness(s: Session, now: dt.datetime, report: TickReport) -> None:
    for clock, sub in _running(s, "effectiveness"):
        if now <= clock.due_at or clock.breached_at is not None:
            continue
        _breach(s, clock, report)
        department = sub.department_code or ""
        reason = (
            f"the usage-effectiveness report of subscription {sub.id} was due "
            f"{sla.show(clock.due_at)}"
        )
        s.add(
            DepartmentSuspension(
                department_code=department, subscription_id=sub.id, reason=reason,
                since=clock.due_at,
            )
        )  # fmt: skip
        audit.append(
            s, "department.suspended", f"department:{department}",
            {"subscription": sub.id, "reason": reason}, actor="housekeeping",
        )  # fmt: skip
        report.departments_suspended += 1


def _expiry(s: Session, now: dt.datetime, report: TickReport) -> None:
    today = sla.local_day(now)
    expiring = s.execute(
        sa.select(Subscription)
        .where(
            Subscription.status.in_(sorted(st.DELIVERABLE | {st.SUSPENDED})),
            Subscription.valid_until < today,
        )
        .order_by(Subscription.id)
    ).scalars()
    for sub in expiring:
        at = sla.end_of_local_day(sub.valid_until)
        if sub.state_changed_at and sub.state_changed_at > at:
            at = sub.state_changed_at
        move(s, sub, "expire", SYSTEM, at, f"usage period ended {sub.valid_until}")
        report.expired += 1


def housekeep(
    ws: Workspace, now: dt.datetime | None = None, settings: WorkflowSettings | None = None
) -> tuple[TickReport, notifications.SendReport]:
    """``tick`` then send the outbox to the webhook: what the housekeeping DAG runs."""
    settings = settings or WorkflowSettings.from_env()
    report = tick(ws, now, policy=settings.review_timeout_policy)
    sent = notifications.send_pending(
        ws.store,
        settings.webhook_url,
        timeout=settings.webhook_timeout,
        max_attempts=settings.webhook_max_attempts,
    )
    return report, sent
