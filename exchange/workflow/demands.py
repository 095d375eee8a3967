"""Data demands (新数据需求, 003 §17; 供需对接, 000): a department asks for data nobody shares yet.

The requesting department files a demand (what data, why, on what legal basis); the platform
assigns it to the department that owns the data; that provider answers within 5 working days
of the assignment (the one calendar: holidays and make-up days, provisional in a year the
calendar lacks), reminded every 24/12/6 h by urgency like a reviewer, and in breach once the
deadline passes. Its answer is one of:

* ``existing``: the data is already a catalog resource (the requester is told, and applies);
* ``publish``: it commits to publish a resource by a date (同意共享的，应当及时挂载资源);
* ``refuse``: it refuses, with its reason (不同意共享的，应当说明理由).

The requester closes the demand (answered or not: a demand it no longer needs). The machine is
data (``MACHINE``), the clock runs in the housekeeping tick (``tick``), and every step has its
history row and audit event in the step's transaction.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from exchange import audit
from exchange.kernel.clock import utcnow
from exchange.kernel.errors import BadInput, Forbidden, NotFound
from exchange.kernel.workdays import WorkCalendar, default_calendar
from exchange.store.locks import locked_session
from exchange.workflow import notifications, sla
from exchange.workflow.application import TEXT
from exchange.workflow.demands_models import DataDemand, DemandTransition
from exchange.workflow.states import Machine, edges
from exchange.workflow.users import Principal
from exchange.workspace import Workspace

ANSWER_WORKING_DAYS = 5  # 003 §17: 数据拥有部门应当在5个工作日内予以答复

FILED = "filed"
ASSIGNED = "assigned"
ANSWERED = "answered"
CLOSED = "closed"
STATES: tuple[str, ...] = (FILED, ASSIGNED, ANSWERED, CLOSED)

MACHINE = Machine(
    tuple(
        edges("assign", {FILED}, ASSIGNED, "admin")
        + edges("answer", {ASSIGNED}, ANSWERED, "provider", "admin")
        + edges("close", {FILED, ASSIGNED, ANSWERED}, CLOSED, "requester", "admin")
    )
)

EXISTING, PUBLISH, REFUSE = "existing", "publish", "refuse"
ANSWERS = (EXISTING, PUBLISH, REFUSE)
PLATFORM_RECIPIENT = "platform:platform"


class DemandForm(BaseModel):
    """What a department asks for (需求标题, 需求说明, 用途, 依据)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    title: str = Field(min_length=1, max_length=200, pattern=TEXT)
    description: str = Field(min_length=1, max_length=5000, pattern=TEXT,
                             description="what data: fields, coverage, update cycle")  # fmt: skip
    purpose: str = Field(min_length=1, max_length=2000, pattern=TEXT)
    legal_basis: str = Field(min_length=1, max_length=2000, pattern=TEXT)
    urgency: Literal["normal", "urgent", "critical"] = "normal"
    department_code: str | None = Field(
        None, min_length=1, max_length=64,
        description="the requesting department: a requester's own; an admin names it",
    )  # fmt: skip


class DemandAnswer(BaseModel):
    """The provider's answer: an existing resource, a publication by a date, or a refusal."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    answer: Literal["existing", "publish", "refuse"]
    resource: str | None = Field(None, min_length=1, max_length=64,
                                 description="existing: the resource's code")  # fmt: skip
    publish_by: dt.date | None = Field(None, description="publish: the date it will be published")
    text: str | None = Field(None, max_length=5000,
                             description="refuse: the reason (required); else a note")  # fmt: skip


class DemandStep(BaseModel):
    at: str
    action: str
    from_state: str | None
    to_state: str
    actor: str
    reason: str | None


class DemandView(BaseModel):
    """A demand as the CLI and the API show it (times in Asia/Shanghai)."""

    id: int
    title: str
    description: str
    purpose: str
    legal_basis: str
    urgency: str
    department: str
    state: str
    next_actions: list[str]
    provider: str | None
    filed_at: str
    answer_due: str | None
    answer_clock: str | None  # running | overdue | met | late (None: not assigned yet)
    answer: str | None
    resource: str | None
    publish_by: str | None
    answer_text: str | None
    answered_at: str | None
    closed_at: str | None
    history: list[DemandStep] = []


# -- the actions ------------------------------------------------------------------------------


def file_demand(
    ws: Workspace, who: Principal, form: DemandForm, now: dt.datetime | None = None
) -> DemandView:
    """A department files a demand; the platform is told, to assign it to a provider."""
    now = now or utcnow()
    department = _requesting_department(ws, who, form)
    with locked_session(ws.store) as s:
        d = DataDemand(
            title=form.title, description=form.description, purpose=form.purpose,
            legal_basis=form.legal_basis, urgency=form.urgency, department_code=department,
            filed_by=who.name, filed_at=now, state=FILED, state_changed_at=now,
            answer_provisional=False, reminders_sent=0,
        )  # fmt: skip
        s.add(d)
        s.flush()
        _record(s, d, "file", None, who, form.title, now,
                {"department": department, "urgency": form.urgency})  # fmt: skip
        _notify(s, d, "demand.filed", PLATFORM_RECIPIENT, {"department": department})
        return _view(s, d, now)


def assign(
    ws: Workspace,
    who: Principal,
    demand_id: int,
    provider: str,
    now: dt.datetime | None = None,
    note: str | None = None,
) -> DemandView:
    """The platform assigns the demand to the department that owns the data: its 5-working-
    day answer clock starts."""
    now = now or utcnow()
    with locked_session(ws.store) as s:
        d = _row(s, demand_id)
        MACHINE.edge(d.state, "assign", who.role, subject=f"demand {d.id}")
        _known_department(ws, provider, "provider")
        _step(s, d, "assign", who, now, note, provider=provider)
        deadline = default_calendar().add_working_days(now, ANSWER_WORKING_DAYS)
        d.provider_code, d.assigned_at = provider, now
        d.answer_due_at, d.answer_provisional = deadline.utc, deadline.provisional
        due = sla.show(d.answer_due_at, d.answer_provisional)
        _notify(s, d, "demand.assigned", f"provider:{provider}", {"due": due})
        _notify(s, d, "demand.assigned", f"requester:{d.department_code}",
                {"provider": ws.catalog.describe_department(provider), "due": due})  # fmt: skip
        return _view(s, d, now)


def answer(
    ws: Workspace,
    who: Principal,
    demand_id: int,
    reply: DemandAnswer,
    now: dt.datetime | None = None,
) -> DemandView:
    """The assigned provider answers (an admin may, on its behalf); a late answer is recorded
    as a breach, once. The requester is told the answer."""
    now = now or utcnow()
    with locked_session(ws.store) as s:
        d = _row(s, demand_id)
        MACHINE.edge(d.state, "answer", who.role, subject=f"demand {d.id}")
        if who.role == "provider" and who.department != d.provider_code:
            raise Forbidden(
                f"{who.describe()} may not answer demand {d.id}: it is assigned to "
                f"{_department(ws, d.provider_code)}"
            )
        _check_answer(ws, d, reply, now)
        assert d.answer_due_at is not None  # assigned: its clock runs
        if now > d.answer_due_at:
            _breach(s, d)
        d.answer, d.resource_code, d.publish_by = reply.answer, reply.resource, reply.publish_by
        d.answer_text, d.answered_at = reply.text, now
        _step(s, d, "answer", who, now, reply.text,
              answer=reply.answer, resource=reply.resource,
              publish_by=str(reply.publish_by) if reply.publish_by else None,
              late=now > d.answer_due_at)  # fmt: skip
        told: dict[str, object] = {"answer": reply.answer, "resource": reply.resource,
                "publish_by": str(reply.publish_by) if reply.publish_by else None,
                "text": reply.text}  # fmt: skip
        if reply.answer == EXISTING:
            told["next"] = f"apply for resource {reply.resource} (exchange subscription apply)"
        _notify(s, d, "demand.answered", f"requester:{d.department_code}", told)
        return _view(s, d, now)


def close(
    ws: Workspace,
    who: Principal,
    demand_id: int,
    note: str | None = None,
    now: dt.datetime | None = None,
) -> DemandView:
    """The requesting department closes its demand (an unanswered one stops its clock)."""
    now = now or utcnow()
    with locked_session(ws.store) as s:
        d = _row(s, demand_id)
        if who.role == "requester" and who.department != d.department_code:
            raise Forbidden(
                f"{who.describe()} may not close demand {d.id}: it was filed by "
                f"{_department(ws, d.department_code)}"
            )
        _step(s, d, "close", who, now, note, answered=d.answer)
        d.closed_at = now
        if d.provider_code:
            _notify(s, d, "demand.closed", f"provider:{d.provider_code}", {"note": note})
        return _view(s, d, now)


# -- reading ----------------------------------------------------------------------------------


def may_view(who: Principal, d: DataDemand) -> bool:
    """Admins see every demand; a requester its department's; a provider those assigned to it."""
    if who.role == "admin":
        return True
    if not who.department:
        return False
    if who.role == "requester":
        return d.department_code == who.department
    return who.role == "provider" and d.provider_code == who.department


def show(
    ws: Workspace, who: Principal, demand_id: int, now: dt.datetime | None = None
) -> DemandView:
    """One demand with its history, if ``who`` may see it."""
    now = now or utcnow()
    with ws.store.session() as s:
        d = _row(s, demand_id)
        if not may_view(who, d):
            raise Forbidden(f"{who.describe()} may not see demand {d.id}")
        return _view(s, d, now, detail=True)


def list_for(
    ws: Workspace, who: Principal, state: str | None = None, now: dt.datetime | None = None
) -> list[DemandView]:
    """The demands ``who`` may see (``may_view``), in filing order."""
    now = now or utcnow()
    if state is not None and state not in STATES:
        raise BadInput(f"no demand state {state!r} (states: {', '.join(STATES)})")
    q = sa.select(DataDemand).order_by(DataDemand.id)
    if state:
        q = q.where(DataDemand.state == state)
    if who.role == "requester":
        q = q.where(DataDemand.department_code == (who.department or ""))
    elif who.role == "provider":
        q = q.where(DataDemand.provider_code == (who.department or ""))
    elif who.role != "admin":
        return []
    with ws.store.session() as s:
        return [_view(s, d, now) for d in s.execute(q).scalars()]


# -- the clock --------------------------------------------------------------------------------


def tick(s: Session, now: dt.datetime) -> dict[str, int]:
    """The answer clocks at ``now``: reminders to the provider until the deadline, one breach
    after it. Returns counts by the ``TickReport`` field they add to."""
    counts = {"breaches": 0, "demand_reminders": 0}
    waiting = s.execute(
        sa.select(DataDemand)
        .where(DataDemand.state == ASSIGNED, DataDemand.answer_due_at.is_not(None))
        .order_by(DataDemand.answer_due_at, DataDemand.id)
    ).scalars()
    for d in waiting:
        assert d.answer_due_at is not None and d.assigned_at is not None
        if now > d.answer_due_at:
            counts["breaches"] += _breach(s, d)
            continue
        interval = sla.REMINDER_INTERVAL.get(d.urgency, sla.REMINDER_INTERVAL["normal"])
        slot = int((now - d.assigned_at) / interval)
        if slot >= 1 and slot > d.reminders_sent:
            d.reminders_sent = slot
            due = sla.show(d.answer_due_at, d.answer_provisional)
            _notify(s, d, "demand.reminder", f"provider:{d.provider_code}",
                    {"reminder": slot, "due": due}, key_suffix=str(slot))  # fmt: skip
            counts["demand_reminders"] += 1
    return counts


def refresh_provisional(s: Session, calendar: WorkCalendar | None = None) -> int:
    """Recompute the provisional answer deadlines of unanswered demands: a calendar file may
    now know their year."""
    cal = calendar or default_calendar()
    changed = 0
    for d in s.execute(
        sa.select(DataDemand).where(
            DataDemand.state == ASSIGNED, DataDemand.answer_provisional.is_(True)
        )
    ).scalars():
        assert d.assigned_at is not None
        deadline = cal.add_working_days(d.assigned_at, ANSWER_WORKING_DAYS)
        if (deadline.utc, deadline.provisional) != (d.answer_due_at, d.answer_provisional):
            d.answer_due_at, d.answer_provisional = deadline.utc, deadline.provisional
            changed += 1
    return changed


def _breach(s: Session, d: DataDemand) -> int:
    """Record once that the provider's answer is overdue: an audit event, a notification."""
    if d.breached_at is not None or d.answer_due_at is None:
        return 0
    d.breached_at = d.answer_due_at
    audit.append(
        s, "demand.breached", f"demand:{d.id}",
        {"deadline": "answer", "party": f"provider {d.provider_code}", "due": d.answer_due_at,
         "provisional": d.answer_provisional},
        actor="housekeeping",
    )  # fmt: skip
    _notify(s, d, "demand.breached", f"provider:{d.provider_code}",
            {"due": sla.show(d.answer_due_at, d.answer_provisional)})  # fmt: skip
    return 1


# -- helpers ----------------------------------------------------------------------------------


def _requesting_department(ws: Workspace, who: Principal, form: DemandForm) -> str:
    if who.role == "requester":
        if not who.department:
            raise Forbidden(f"{who.describe()} belongs to no department and may not file a demand")
        if form.department_code not in (None, who.department):
            raise Forbidden(
                f"{who.describe()} may file demands only for its own department "
                f"{_department(ws, who.department)}, not {form.department_code}"
            )
        return who.department
    if who.role != "admin":
        raise Forbidden(f"{who.describe()} may not file a demand: requesters file them")
    if form.department_code is None:  # the platform belongs to no department: it acts for one
        raise Forbidden(
            f"{who.describe()} files a demand only on behalf of a department: name it "
            "(department_code)"
        )
    _known_department(ws, form.department_code, "department_code")
    return form.department_code


def _known_department(ws: Workspace, code: str, option: str) -> None:
    """A department the catalog declares (any code, if it declares none): NotFound else."""
    if ws.catalog.departments and code not in ws.catalog.departments:
        raise NotFound(
            f"{option}: no department {code!r} in the catalog "
            f"(departments: {ws.catalog.department_list()})"
        )


def _check_answer(ws: Workspace, d: DataDemand, reply: DemandAnswer, now: dt.datetime) -> None:
    """What each kind of answer must say, and that an existing resource can be applied for."""
    if reply.answer == EXISTING:
        if not reply.resource:
            raise BadInput("answer existing: name the resource (--resource CODE)")
        resource = ws.catalog.resources.get(reply.resource)
        if resource is None:
            raise NotFound(f"answer existing: no resource {reply.resource!r} in the catalog")
        if resource.share == "not_shared":
            raise BadInput(f"answer existing: resource {resource.code} is not shared (不予共享)")
        if resource.dedicated_to not in (None, d.department_code):
            raise BadInput(
                f"answer existing: resource {resource.code} is dedicated to "
                f"{_department(ws, resource.dedicated_to)}: department "
                f"{_department(ws, d.department_code)} cannot apply for it"
            )
    elif reply.answer == PUBLISH:
        if reply.publish_by is None:
            raise BadInput("answer publish: give the date it will be published (--publish-by)")
        if reply.publish_by <= sla.local_day(now):
            raise BadInput(f"answer publish: the date {reply.publish_by} is not after today")
    elif not (reply.text or "").strip():
        raise BadInput("answer refuse: give the reason (不同意共享的，应当说明理由)")
    if reply.answer != EXISTING and reply.resource:
        raise BadInput(f"answer {reply.answer}: --resource is only for an existing resource")


def _department(ws: Workspace, code: str | None) -> str:
    return ws.catalog.describe_department(code) if code else "(no department)"


def _row(s: Session, demand_id: int) -> DataDemand:
    d = s.get(DataDemand, demand_id)
    if d is None:
        raise NotFound(f"no demand {demand_id}")
    return d


def _step(
    s: Session,
    d: DataDemand,
    action: str,
    who: Principal,
    at: dt.datetime,
    reason: str | None,
    **details: object,
) -> None:
    """Take ``action`` (refused as the machine says) with its history row and audit event."""
    edge = MACHINE.edge(d.state, action, who.role, subject=f"demand {d.id}")
    source = d.state
    d.state, d.state_changed_at = edge.target, at
    _record(s, d, action, source, who, reason, at, details)


def _record(
    s: Session,
    d: DataDemand,
    action: str,
    source: str | None,
    who: Principal,
    reason: str | None,
    at: dt.datetime,
    details: dict[str, object],
) -> None:
    s.add(DemandTransition(demand_id=d.id, action=action, from_state=source, to_state=d.state,
                           actor=who.name, actor_kind=who.role, reason=reason, at=at))  # fmt: skip
    audit.append(
        s, f"demand.{action}", f"demand:{d.id}",
        {"from": source, "to": d.state, "reason": reason, "at": at, **details}, actor=who.name,
    )  # fmt: skip


def _notify(
    s: Session,
    d: DataDemand,
    kind: str,
    recipient: str,
    payload: dict[str, object] | None = None,
    *,
    key_suffix: str = "",
) -> None:
    body = {"demand": d.id, "title": d.title, "state": d.state, **(payload or {})}
    key = f"{kind}:demand:{d.id}:{recipient}" + (f":{key_suffix}" if key_suffix else "")
    notifications.notify(s, kind, recipient, body, key=key)


def _clock(d: DataDemand, now: dt.datetime) -> str | None:
    if d.answer_due_at is None:
        return None
    if d.answered_at is None:
        if d.state == CLOSED:
            return "cancelled"
        return "overdue" if now > d.answer_due_at else "running"
    return "late" if d.answered_at > d.answer_due_at else "met"


def _view(s: Session, d: DataDemand, now: dt.datetime, *, detail: bool = False) -> DemandView:
    history: list[DemandStep] = []
    if detail:
        history = [
            DemandStep(
                at=sla.show(t.at),
                action=t.action,
                from_state=t.from_state,
                to_state=t.to_state,
                actor=t.actor,
                reason=t.reason,
            )  # fmt: skip
            for t in s.execute(
                sa.select(DemandTransition)
                .where(DemandTransition.demand_id == d.id)
                .order_by(DemandTransition.id)
            ).scalars()
        ]
    return DemandView(
        id=d.id, title=d.title, description=d.description, purpose=d.purpose,
        legal_basis=d.legal_basis, urgency=d.urgency, department=d.department_code,
        state=d.state, next_actions=MACHINE.allowed_actions(d.state), provider=d.provider_code,
        filed_at=sla.show(d.filed_at),
        answer_due=sla.show(d.answer_due_at, d.answer_provisional) if d.answer_due_at else None,
        answer_clock=_clock(d, now), answer=d.answer, resource=d.resource_code,
        publish_by=str(d.publish_by) if d.publish_by else None, answer_text=d.answer_text,
        answered_at=sla.show(d.answered_at) if d.answered_at else None,
        closed_at=sla.show(d.closed_at) if d.closed_at else None, history=history,
    )  # fmt: skip
