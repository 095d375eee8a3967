"""Subscriptions as users see them (CLI and API): form, state, deadlines in Asia/Shanghai."""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.orm import Session

from exchange.catalog.model import Resource
from exchange.store.models import FileTarget, Subscription
from exchange.workflow import sla
from exchange.workflow import states as st
from exchange.workflow.grants import API_KIND, FILES_LABEL, NO_TARGET
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
    kind: str  # the resource's: table | file | folder | api
    state: str
    next_actions: list[str]
    next_step: str | None = None  # what is awaited, in words, when the machine cannot say it
    node: str
    table: str
    target: str  # where it lands: node.table, node:/dir for files, — for an api
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


@dataclass(frozen=True)
class ClockRow:
    """The columns of an SLA clock a view shows, read as plain values: a page reads 50 or more
    clocks, and building an ORM object for each cost more than the whole rest of its view."""

    id: int
    subscription_id: int
    kind: str
    party_kind: str
    party: str
    started_at: dt.datetime
    due_at: dt.datetime
    provisional: bool
    stopped_at: dt.datetime | None
    outcome: str | None
    breached_at: dt.datetime | None


_CLOCK_COLUMNS = [getattr(SlaClock, f) for f in ClockRow.__dataclass_fields__]


def deadline_of(clock: SlaClock | ClockRow, now: dt.datetime) -> Deadline:
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
    s: Session,
    ws: Workspace,
    sub: Subscription,
    now: dt.datetime,
    *,
    detail: bool = False,
    clocks: list[SlaClock] | list[ClockRow] | None = None,
    folders: dict[int, str] | None = None,
) -> SubscriptionView:
    """``clocks``: the subscription's SLA clocks in id order, and ``folders``: the target
    directories of a page's file subscriptions (``folders_by_subscription``), when the caller
    read them for a whole page at once; else they are read here (a query each: a page of 50
    would be 100 round trips)."""
    if clocks is None:
        clocks = clocks_by_subscription(s, [sub.id]).get(sub.id, [])
    deadlines = [deadline_of(c, now) for c in clocks]
    statuses = {d.status for d in deadlines}
    breached = bool(statuses & {"overdue", "late"}) or any(c.breached_at for c in clocks)
    at_risk = any(
        c.stopped_at is None
        and c.kind.partition(".")[0] in BREACHABLE  # a joint review's review.1, review.2 ...
        and now <= c.due_at <= now + AT_RISK
        for c in clocks
    )
    resource = ws.catalog.resources.get(sub.resource_code)
    table = ".".join(x for x in (sub.target_schema, sub.target_table) if x)
    if folders is None:
        folders = folders_by_subscription(s, [sub.id])
    folder = folders.get(sub.id)
    kind = subscription_kind(resource, sub)
    if kind == API_KIND:
        target = NO_TARGET
    elif folder is not None:
        target = f"{sub.subscriber_node}:/{folder}"
    else:
        target = f"{sub.subscriber_node}.{table}"
    view = SubscriptionView(
        id=sub.id,
        resource=sub.resource_code,
        resource_name=resource.name if resource else "",
        kind=kind,
        state=sub.status,
        next_actions=list(_allowed_actions(sub.status)),
        next_step=next_step(kind, sub),
        node=sub.subscriber_node,
        table=table,
        target=target,
        requested_fields=None if sub.requested_fields is None else list(sub.requested_fields),
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
        sid = {"sid": sub.id}
        view.history = [
            Step(
                at=sla.show(t.at),
                action=t.action,
                from_state=t.from_state,
                to_state=t.to_state,
                actor=t.actor,
                reason=t.reason,
            )
            for t in s.execute(_HISTORY, sid)
        ]
        ev = s.execute(_EVALUATION, sid).first()
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
            for r in s.execute(_EFFECTIVENESS, sid)
        ]
    return view


def subscription_kind(resource: Resource | None, sub: Subscription) -> str:
    """The kind of the subscribed resource; one gone from the catalog is told by its row (an
    api subscription has no node, a file subscription's table is the files label)."""
    if resource is not None:
        return resource.kind
    if not sub.subscriber_node:
        return API_KIND
    return "file" if sub.target_table == FILES_LABEL else "table"


def next_step(kind: str, sub: Subscription) -> str | None:
    """What an api subscription in implementation waits for: its authorization code (issuing
    it is the implementation; the engine never delivers an api)."""
    if kind == API_KIND and sub.status == st.IMPLEMENTATION:
        return f"issue the authorization code: exchange code issue {sub.id}"
    return None


@functools.cache
def _allowed_actions(state: str) -> tuple[str, ...]:
    return tuple(st.allowed_actions(state))


def folders_by_subscription(s: Session, ids: list[int]) -> dict[int, str]:
    """The target directories of those of ``ids`` that are file subscriptions, in one query."""
    if not ids:
        return {}
    return {sid: target_dir for sid, target_dir in s.execute(_FOLDERS, {"ids": ids})}


def clocks_by_subscription(s: Session, ids: list[int]) -> dict[int, list[ClockRow]]:
    """The SLA clocks of many subscriptions in one query, each one's in id order."""
    out: dict[int, list[ClockRow]] = {}
    if not ids:
        return out
    for row in s.execute(_CLOCKS, {"ids": ids}):
        clock = ClockRow(*row)
        out.setdefault(clock.subscription_id, []).append(clock)
    return out


# The views' statements, built once: building a statement and its cache key again on every
# call cost more CPU than running it (a read of one subscription runs five). Columns, not
# ORM objects: nothing here changes what it reads. Selecting mapped columns still flushes a
# session's pending changes first, as an action's own view needs.
_IDS: sa.BindParameter[int] = sa.bindparam("ids", type_=sa.Integer, expanding=True)
_FOLDERS = sa.select(FileTarget.subscription_id, FileTarget.target_dir).where(
    FileTarget.subscription_id.in_(_IDS)
)
_CLOCKS = sa.select(*_CLOCK_COLUMNS).where(SlaClock.subscription_id.in_(_IDS)).order_by(SlaClock.id)
_SID: sa.BindParameter[int] = sa.bindparam("sid", type_=sa.Integer)
_HISTORY = (
    sa.select(
        SubscriptionTransition.at,
        SubscriptionTransition.action,
        SubscriptionTransition.from_state,
        SubscriptionTransition.to_state,
        SubscriptionTransition.actor,
        SubscriptionTransition.reason,
    )
    .where(SubscriptionTransition.subscription_id == _SID)
    .order_by(SubscriptionTransition.id)
)
_EVALUATION = sa.select(
    Evaluation.matches_description,
    Evaluation.data_quality,
    Evaluation.timeliness,
    Evaluation.implementation_service,
    Evaluation.review_efficiency,
    Evaluation.comment,
    Evaluation.by,
    Evaluation.at,
).where(Evaluation.subscription_id == _SID)
_EFFECTIVENESS = (
    sa.select(EffectivenessReport.summary, EffectivenessReport.by, EffectivenessReport.at)
    .where(EffectivenessReport.subscription_id == _SID)
    .order_by(EffectivenessReport.id)
)


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
