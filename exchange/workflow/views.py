"""Subscriptions as users see them (CLI and API): form, state, deadlines in Asia/Shanghai."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.orm import Session

from exchange.store.models import Subscription
from exchange.workflow import sla
from exchange.workflow import states as st
from exchange.workflow.models import (
    EffectivenessReport,
    Evaluation,
    SlaClock,
    SubscriptionTransition,
)
from exchange.workspace import Workspace

AT_RISK = dt.timedelta(hours=24)  # a running deadline this close is shown "at risk"
BREACHABLE = ("review", "delivery", "effectiveness")  # sign-off and evaluation complete alone


class Deadline(BaseModel):
    kind: str
    party: str
    started: str
    due: str
    provisional: bool
    status: str  # running | overdue | met | late | auto | cancelled
    late_hours: float | None = None


class Step(BaseModel):
    at: str
    action: str
    from_state: str | None
    to_state: str
    actor: str
    reason: str | None


class SubscriptionView(BaseModel):
    id: int
    resource: str
    resource_name: str
    state: str
    next_actions: list[str]
    node: str
    table: str
    requested_fields: list[str] | None
    fields: list[str]
    department_code: str | None
    department_name: str | None
    urgency: str
    applicant: str | None
    applied_at: str
    approved_at: str
    closed_at: str
    valid_until: str
    sla: str  # ok | at risk (a deadline within 24 h) | breached
    deadlines: list[Deadline]
    form: dict[str, Any] | None = None
    history: list[Step] | None = None
    evaluation: dict[str, Any] | None = None
    effectiveness_reports: list[dict[str, Any]] | None = None


def deadline_of(clock: SlaClock, now: dt.datetime) -> Deadline:
    v = sla.ClockView.of(clock, now)
    return Deadline(
        kind=v.kind,
        party=v.party if v.party == v.party_kind else f"{v.party_kind} {v.party}",
        started=v.started_at,
        due=v.due_at,
        provisional=v.provisional,
        status=v.status,
        late_hours=v.late_hours,
    )


FORM_FIELDS = (
    "purpose", "legal_basis", "contact_name", "contact_phone", "contact_email", "system_name",
    "system_ip", "deploy_location", "usage_days", "urgency_reason", "technical_notes",
)  # fmt: skip


def subscription_view(
    s: Session, ws: Workspace, sub: Subscription, now: dt.datetime, *, detail: bool = False
) -> SubscriptionView:
    clocks = list(
        s.execute(
            sa.select(SlaClock).where(SlaClock.subscription_id == sub.id).order_by(SlaClock.id)
        ).scalars()
    )
    deadlines = [deadline_of(c, now) for c in clocks]
    statuses = {d.status for d in deadlines}
    breached = bool(statuses & {"overdue", "late"}) or any(c.breached_at for c in clocks)
    at_risk = any(
        c.stopped_at is None and c.kind in BREACHABLE and now <= c.due_at <= now + AT_RISK
        for c in clocks
    )
    resource = ws.catalog.resources.get(sub.resource_code)
    view = SubscriptionView(
        id=sub.id,
        resource=sub.resource_code,
        resource_name=resource.name if resource else "",
        state=sub.status,
        next_actions=st.allowed_actions(sub.status),
        node=sub.subscriber_node,
        table=".".join(x for x in (sub.target_schema, sub.target_table) if x),
        requested_fields=sub.requested_fields,
        fields=list(sub.fields),
        department_code=sub.department_code,
        department_name=sub.department_name,
        urgency=sub.urgency,
        applicant=sub.applicant,
        applied_at=sla.show(sub.applied_at),
        approved_at=sla.show(sub.approved_at),
        closed_at=sla.show(sub.closed_at),
        valid_until=str(sub.valid_until),
        sla="breached" if breached else ("at risk" if at_risk else "ok"),
        deadlines=deadlines,
    )
    if detail:
        view.form = {f: getattr(sub, f) for f in FORM_FIELDS}
        view.history = [
            Step(
                at=sla.show(t.at),
                action=t.action,
                from_state=t.from_state,
                to_state=t.to_state,
                actor=t.actor,
                reason=t.reason,
            )
            for t in s.execute(
                sa.select(SubscriptionTransition)
                .where(SubscriptionTransition.subscription_id == sub.id)
                .order_by(SubscriptionTransition.id)
            ).scalars()
        ]
        ev = s.execute(sa.select(Evaluation).where(Evaluation.subscription_id == sub.id)).scalar()
        if ev is not None:
            view.evaluation = {
                "matches_description": ev.matches_description,
                "data_quality": ev.data_quality,
                "timeliness": ev.timeliness,
                "implementation_service": ev.implementation_service,
                "review_efficiency": ev.review_efficiency,
                "comment": ev.comment,
                "by": ev.by,
                "at": sla.show(ev.at),
            }
        view.effectiveness_reports = [
            {"summary": r.summary, "by": r.by, "at": sla.show(r.at)}
            for r in s.execute(
                sa.select(EffectivenessReport).where(EffectivenessReport.subscription_id == sub.id)
            ).scalars()
        ]
    return view


class DeadlineRow(Deadline):
    subscription_id: int
    resource: str
    state: str


class PartySla(BaseModel):
    party: str
    running: int = 0
    overdue: int = 0
    breaches: int = 0


class SlaReport(BaseModel):
    now: str
    open: list[DeadlineRow]
    breaches: list[DeadlineRow]
    by_party: list[PartySla]


def sla_report(pairs: list[tuple[SlaClock, Subscription]], now: dt.datetime) -> SlaReport:
    """Open deadlines, breaches, and counts per party (provider, platform, requester)."""
    open_rows: list[DeadlineRow] = []
    breaches: list[DeadlineRow] = []
    parties: dict[str, PartySla] = {}
    for clock, sub in pairs:
        row = DeadlineRow(
            **deadline_of(clock, now).model_dump(),
            subscription_id=sub.id,
            resource=sub.resource_code,
            state=sub.status,
        )
        party = parties.setdefault(row.party, PartySla(party=row.party))
        if clock.stopped_at is None:
            open_rows.append(row)
            if row.status == "overdue":
                party.overdue += 1
            else:
                party.running += 1
        if clock.breached_at is not None or row.status in ("overdue", "late"):
            breaches.append(row)
            party.breaches += 1
    open_rows.sort(key=lambda r: r.due)
    return SlaReport(
        now=sla.show(now),
        open=open_rows,
        breaches=breaches,
        by_party=sorted(parties.values(), key=lambda p: p.party),
    )
