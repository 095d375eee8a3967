"""Upstream applications (001 五, 002): a department asks, through the city, for a
national or provincial resource the city platform does not proxy yet.

The requester files the upstream resource's particulars (level, platform, its upstream code,
name, kind and the fields it needs, as the upstream catalog names them) with the department's
own application (the ordinary form's keys but ``resource``). The platform forwards it upstream
within ``EXCHANGE_UPSTREAM_FORWARD_DAYS`` working days (default 3, on the statutory calendar;
housekeeping records a breach), records the upstream decision (its approval reference, or the
reason of a refusal), and once the city proxies the resource (it is in the city catalog with
``origin.upstream_code`` equal to the application's) files the department's form with
``apply`` as its subscription, in the same transaction: from there the subscription's own
review and deadlines run. The requester may withdraw before the decision.

Every step is a transition of ``upstream_states`` with its ``UpstreamTransition`` row (who,
when, why) and an ``upstream.<action>`` audit event.
"""

from __future__ import annotations

import datetime as dt
from contextlib import AbstractContextManager
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, Field, field_validator
from sqlalchemy.orm import Session

from exchange import audit
from exchange.catalog.model import Resource
from exchange.kernel.clock import utcnow
from exchange.kernel.errors import BadInput, Forbidden, NotFound, Unauthorized
from exchange.kernel.workdays import WorkCalendar, default_calendar
from exchange.store.locks import locked_session
from exchange.workflow import notifications, sla
from exchange.workflow import service as svc
from exchange.workflow import upstream_states as ust
from exchange.workflow.application import TEXT, Application, DepartmentRequest, parse_form
from exchange.workflow.config import WorkflowSettings
from exchange.workflow.grants import API_KIND, check_node_department
from exchange.workflow.models import UpstreamApplication, UpstreamTransition
from exchange.workflow.transitions import PLATFORM
from exchange.workflow.users import Principal, principal_of
from exchange.workspace import Workspace

#: The keys of the upstream resource's particulars; the rest of a request is the form.
UPSTREAM_KEYS = ("level", "platform", "upstream_code", "resource_name", "kind")
PLATFORM_RECIPIENT = f"{PLATFORM}:{PLATFORM}"


class UpstreamRequest(DepartmentRequest):
    """A department's request for an upstream resource: its particulars as the upstream
    catalog gives them, and the department's own application but its (not yet known)
    resource code. The fields are names as the upstream catalog shows them (any text): they
    are checked against the city's resource once it is proxied."""

    level: Literal["national", "provincial"] = Field(description="国家 | 省级")
    platform: str = Field(
        min_length=1, max_length=200, pattern=TEXT, description="the upstream platform"
    )
    upstream_code: str = Field(
        min_length=1, max_length=100, pattern=TEXT, description="the resource's upstream code"
    )
    resource_name: str = Field(min_length=1, max_length=200, pattern=TEXT)
    kind: Literal["table", "file", "folder", "api"]
    fields: list[Annotated[str, Field(min_length=1, max_length=200, pattern=TEXT)]] = Field(
        min_length=1,
        max_length=1000,
        description="requested fields, as the upstream catalog names them",
        json_schema_extra={"uniqueItems": True},  # _distinct_as_sent
    )

    # Free text is stripped: " 名称" and "名称" are distinct as sent (as the spec's uniqueItems
    # sees them) and one field once stripped, so distinct is checked before, and kept once after.
    @field_validator("fields", mode="before")
    @classmethod
    def _distinct_as_sent(cls, v: object) -> object:
        if isinstance(v, list):
            for i, name in enumerate(v):
                if name in v[:i]:
                    raise ValueError(f"field {name!r} is requested twice")
        return v

    @field_validator("fields")
    @classmethod
    def _once(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(v))


def parse_upstream_request(data: dict[str, object]) -> UpstreamRequest:
    """Validate an upstream request from the CLI or a file; every problem named by its key."""
    return parse_form(UpstreamRequest, data)


class UpstreamStep(BaseModel):
    at: str
    action: str
    from_state: str | None
    to_state: str
    actor: str
    reason: str | None


class UpstreamView(BaseModel):
    """An upstream application as the CLI and the API show it (times in Asia/Shanghai)."""

    id: int
    level: str
    platform: str
    upstream_code: str
    resource_name: str
    kind: str
    fields: list[str]
    department_code: str
    applicant: str
    state: str
    next_actions: list[str]
    created_at: str
    forward_due: str  # marked "(provisional)" when the calendar did not know its year
    forward_status: str  # running | overdue | met | late | cancelled
    forward_late_hours: float | None = None
    forwarded_at: str
    approval_ref: str | None
    decision_reason: str | None
    resource_code: str | None
    subscription_id: int | None
    form: dict[str, Any] | None = None
    history: list[UpstreamStep] | None = None


def _session(ws: Workspace) -> AbstractContextManager[Session]:
    return locked_session(ws.store)


def _who(who: Principal) -> str:
    return who.describe()


def _get(s: Session, application_id: int) -> UpstreamApplication:
    app = s.get(UpstreamApplication, application_id)
    if app is None:
        raise NotFound(f"no upstream application {application_id}")
    return app


def may_view(who: Principal, app: UpstreamApplication) -> bool:
    """Admins see all; requesters their department's."""
    if who.role == "admin":
        return True
    return (
        who.role == "requester" and bool(who.department) and who.department == app.department_code
    )


def _visible(who: Principal) -> sa.ColumnElement[bool]:
    """``may_view`` as a SQL condition."""
    if who.role == "admin":
        return sa.true()
    if who.role == "requester" and who.department:
        return UpstreamApplication.department_code == who.department
    return sa.false()


def _require_admin(who: Principal, action: str, application_id: int) -> None:
    if who.role != "admin":
        raise Forbidden(
            f"{_who(who)} may not {action} upstream application {application_id}: only a "
            "platform admin may"
        )


def proxy_of(ws: Workspace, upstream_code: str) -> Resource | None:
    """The city resource that proxies ``upstream_code`` (its ``origin`` names it), if any."""
    for resource in ws.catalog.resources.values():
        if resource.origin is not None and resource.origin.upstream_code == upstream_code:
            return resource
    return None


def _check_where(ws: Workspace, req: DepartmentRequest, kind: str, department: str) -> None:
    """Where the data will land, checked now as ``apply`` will check it once proxied: an
    api has no node nor target table; tables and files land on the department's own node."""
    if kind == API_KIND:
        if req.node is not None:
            raise BadInput("node: an api resource is called through the gateway: leave node out")
        if req.target_table is not None or req.target_schema is not None:
            which = "target_table" if req.target_table is not None else "target_schema"
            raise BadInput(f"{which}: an api resource has no target table")
        return
    if req.node is None:
        raise BadInput(f"node: {kind} data lands on a node: name your department's front-end node")
    check_node_department(ws.catalog, req.node, department)


def _step(
    s: Session,
    app: UpstreamApplication,
    action: str,
    who: Principal,
    at: dt.datetime,
    reason: str | None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Take ``action`` (refused if the machine forbids it): new state, history row, audit."""
    source = app.state
    app.state = ust.next_state(source, action, who.role, subject=f"upstream application {app.id}")
    app.state_changed_at = at
    _record(s, app, action, source, who, at, reason, extra)


def _record(
    s: Session,
    app: UpstreamApplication,
    action: str,
    source: str | None,
    who: Principal,
    at: dt.datetime,
    reason: str | None,
    extra: dict[str, Any] | None = None,
) -> None:
    s.add(
        UpstreamTransition(
            application_id=app.id,
            action=action,
            from_state=source,
            to_state=app.state,
            actor=who.name,
            reason=reason,
            at=at,
        )
    )
    audit.append(
        s,
        f"upstream.{action}",
        f"upstream:{app.id}",
        {"from": source, "to": app.state, "reason": reason, "at": at, **(extra or {})},
        actor=who.name,
    )


def _note(s: Session, app: UpstreamApplication, kind: str, recipient: str, **payload: Any) -> None:
    body = {"upstream_code": app.upstream_code, "state": app.state, **payload}
    notifications.notify(s, kind, recipient, body, key=f"{kind}:{app.id}")


def _requester(app: UpstreamApplication) -> str:
    return f"requester:{app.department_code}"


# -- the actions ------------------------------------------------------------------------------


def apply(
    ws: Workspace,
    who: Principal,
    req: UpstreamRequest,
    now: dt.datetime | None = None,
    *,
    forward_days: int | None = None,
    calendar: WorkCalendar | None = None,
) -> UpstreamView:
    """File a department's upstream application (drafted); the platform's forward deadline
    starts: ``forward_days`` working days (default ``EXCHANGE_UPSTREAM_FORWARD_DAYS``)."""
    now = now or utcnow()
    if who.role not in ("requester", "admin"):
        raise Forbidden(f"{_who(who)} may not apply: requesters apply for their department")
    department, _ = svc.applicant_department(ws, who, req)
    proxied = proxy_of(ws, req.upstream_code)
    if proxied is not None:
        raise BadInput(
            f"upstream resource {req.upstream_code} is proxied already as resource "
            f"{proxied.code}: apply for it with `exchange subscription apply {proxied.code}`"
        )
    _check_where(ws, req, req.kind, department)
    days = forward_days or WorkflowSettings.from_env().upstream_forward_days
    due = (calendar or default_calendar()).add_working_days(now, days)
    form = req.model_dump(mode="json", exclude=set(UPSTREAM_KEYS))
    form["department_code"] = department
    with _session(ws) as s:
        suspended = svc.open_suspension(s, department)
        if suspended is not None:
            raise Forbidden(
                f"department {department} may not apply: {suspended.reason} "
                "(report it to lift the suspension)"
            )
        live = s.execute(
            sa.select(UpstreamApplication.id).where(
                UpstreamApplication.department_code == department,
                UpstreamApplication.upstream_code == req.upstream_code,
                UpstreamApplication.state.not_in(sorted(ust.FINAL)),
            )
        ).scalar()
        if live is not None:
            raise BadInput(
                f"department {department} has applied for upstream resource "
                f"{req.upstream_code} already: upstream application {live}"
            )
        app = UpstreamApplication(
            level=req.level,
            platform=req.platform,
            upstream_code=req.upstream_code,
            resource_name=req.resource_name,
            kind=req.kind,
            department_code=department,
            applicant=who.name,
            form=form,
            state=ust.DRAFTED,
            created_at=now,
            state_changed_at=now,
            forward_due_at=due.utc,
            forward_provisional=due.provisional,
        )
        s.add(app)
        s.flush()
        _record(
            s,
            app,
            "apply",
            None,
            who,
            now,
            req.urgency_reason,
            extra={
                "level": req.level,
                "platform": req.platform,
                "upstream_code": req.upstream_code,
                "kind": req.kind,
                "fields": list(req.fields),
                "department": department,
                "forward_due": due.utc,
                "provisional": due.provisional,
            },
        )  # fmt: skip  (contact details stay out of the audit log)
        _note(
            s, app, "upstream.requested", PLATFORM_RECIPIENT,
            department=department, forward_due=sla.show(due.utc, due.provisional),
        )  # fmt: skip
        return view_of(s, app, now)


def forward(
    ws: Workspace,
    who: Principal,
    application_id: int,
    note: str | None = None,
    now: dt.datetime | None = None,
) -> UpstreamView:
    """The platform forwards the application upstream (转交): the forward deadline stops, met
    or late (a late one is recorded as a breach, once)."""
    now = now or utcnow()
    _require_admin(who, "forward", application_id)
    with _session(ws) as s:
        app = _get(s, application_id)
        _step(s, app, "forward", who, now, note or "forwarded upstream",
              extra={"due": app.forward_due_at, "late": now > app.forward_due_at})  # fmt: skip
        app.forwarded_at = now
        if now > app.forward_due_at:
            _breach(s, app)
        _note(s, app, "upstream.forwarded", _requester(app), platform=app.platform)
        return view_of(s, app, now)


def decide(
    ws: Workspace,
    who: Principal,
    application_id: int,
    *,
    approved: bool,
    approval_ref: str | None = None,
    reason: str | None = None,
    now: dt.datetime | None = None,
) -> UpstreamView:
    """Record the upstream decision: approved with its approval reference (批复文号), or
    rejected with the upstream's reason."""
    now = now or utcnow()
    _require_admin(who, "record the decision of", application_id)
    ref = (approval_ref or "").strip()
    why = (reason or "").strip()
    if approved and not ref:
        raise BadInput("--approval-ref: an approval is recorded with its reference (批复文号)")
    if not approved and not why:
        raise BadInput("--reason: a refusal is recorded with the upstream's reason")
    with _session(ws) as s:
        app = _get(s, application_id)
        if approved:
            _step(s, app, "approve", who, now, why or f"approved upstream: {ref}",
                  extra={"approval_ref": ref})  # fmt: skip
            app.approval_ref = ref
            app.decision_reason = why or None
            _note(s, app, "upstream.approved", _requester(app), approval_ref=ref)
        else:
            _step(s, app, "reject", who, now, why)
            app.decision_reason = why
            _note(s, app, "upstream.rejected", _requester(app), reason=why)
        return view_of(s, app, now)


def proxied(
    ws: Workspace,
    who: Principal,
    application_id: int,
    resource_code: str,
    fields: list[str] | None = None,
    now: dt.datetime | None = None,
) -> UpstreamView:
    """The city now proxies the resource as ``resource_code`` (in the catalog, its origin
    the application's upstream code): the department's form is filed with ``apply`` as its
    subscription, in this step's transaction. ``fields``: the requested fields by the city
    resource's names, when the upstream names the department gave are not its."""
    now = now or utcnow()
    _require_admin(who, "record the proxy of", application_id)
    with _session(ws) as s:
        app = _get(s, application_id)
        ust.next_state(app.state, "proxy", who.role, subject=f"upstream application {app.id}")
        resource = _proxying(ws, app, resource_code)
        form = _application(app, resource, fields)
        sub = svc.file_application(s, ws, _applicant(s, app, who), form, now)
        app.resource_code, app.subscription_id = resource.code, sub.id
        _step(s, app, "proxy", who, now, f"proxied as {resource.code}: subscription {sub.id}",
              extra={"resource": resource.code, "subscription": sub.id})  # fmt: skip
        _note(s, app, "upstream.proxied", _requester(app),
              resource=resource.code, subscription=sub.id)  # fmt: skip
        return view_of(s, app, now)


def _proxying(ws: Workspace, app: UpstreamApplication, code: str) -> Resource:
    """The city resource ``code``, refused unless it is the proxy of the application's
    upstream resource, of the kind asked for."""
    resource = ws.catalog.resources.get(code)
    if resource is None:
        raise NotFound(
            f"no resource {code!r} in the catalog: add the proxied resource with "
            f"origin.upstream_code {app.upstream_code!r} first"
        )
    if resource.origin is None or resource.origin.upstream_code != app.upstream_code:
        has = (
            f"its origin.upstream_code is {resource.origin.upstream_code!r}"
            if resource.origin is not None
            else "it has no origin"
        )
        raise BadInput(
            f"resource {code} is not the proxy of upstream resource {app.upstream_code!r} "
            f"of upstream application {app.id}: {has}"
        )
    if resource.kind != app.kind:
        raise BadInput(
            f"resource {code} is a {resource.kind} resource; upstream application {app.id} "
            f"asked for a {app.kind}"
        )
    return resource


def _application(
    app: UpstreamApplication, resource: Resource, fields: list[str] | None
) -> Application:
    """The department's stored form, for ``resource``, as the ordinary application."""
    wanted = list(fields) if fields else list(app.form.get("fields") or [])
    unknown = [f for f in wanted if f not in resource.field_names]
    if unknown:
        raise BadInput(
            f"resource {resource.code} has no field {', '.join(map(repr, unknown))} "
            f"(fields: {', '.join(resource.field_names)}): give the requested fields by its "
            "names (--fields)"
        )
    data = {**app.form, "resource": resource.code, "fields": wanted}
    data["department_code"] = app.department_code
    return parse_form(Application, data)


def _applicant(s: Session, app: UpstreamApplication, who: Principal) -> Principal:
    """Who the subscription is filed as: the applicant (its form, its department), or the
    admin taking the step when the applicant is no longer a user who may apply for it."""
    try:
        applicant = principal_of(s, app.applicant)
    except Unauthorized:
        return who
    if applicant.role == "admin" or (
        applicant.role == "requester" and applicant.department == app.department_code
    ):
        return applicant
    return who


def withdraw(
    ws: Workspace,
    who: Principal,
    application_id: int,
    reason: str,
    now: dt.datetime | None = None,
) -> UpstreamView:
    """The requester withdraws its application before the upstream decision (撤销)."""
    now = now or utcnow()
    if not reason.strip():
        raise BadInput("--reason: a withdrawal says why")
    with _session(ws) as s:
        app = _get(s, application_id)
        if not (who.role == "admin" or (who.role == "requester" and may_view(who, app))):
            raise Forbidden(
                f"{_who(who)} may not withdraw upstream application {app.id}: it belongs to "
                f"department {app.department_code}"
            )
        _step(s, app, "withdraw", who, now, reason)
        _note(s, app, "upstream.withdrawn", PLATFORM_RECIPIENT, reason=reason)
        return view_of(s, app, now)


# -- reading ----------------------------------------------------------------------------------


def show(
    ws: Workspace, who: Principal, application_id: int, now: dt.datetime | None = None
) -> UpstreamView:
    """One upstream application with its form and history, if ``who`` may see it."""
    now = now or utcnow()
    with ws.store.session() as s:
        app = _get(s, application_id)
        if not may_view(who, app):
            raise Forbidden(f"{_who(who)} may not see upstream application {app.id}")
        return view_of(s, app, now, detail=True)


def list_page(
    ws: Workspace,
    who: Principal,
    *,
    limit: int | None = None,
    offset: int = 0,
    state: str | None = None,
    now: dt.datetime | None = None,
) -> tuple[int, list[UpstreamView]]:
    """The upstream applications ``who`` may see (admin: all; a requester: its department's),
    in id order, and how many there are."""
    now = now or utcnow()
    if state is not None and state not in ust.STATES:
        raise BadInput(f"no state {state!r} (states: {', '.join(ust.STATES)})")
    q = sa.select(UpstreamApplication).where(_visible(who))
    if state:
        q = q.where(UpstreamApplication.state == state)
    with ws.store.session() as s:
        total = s.execute(sa.select(sa.func.count()).select_from(q.subquery())).scalar_one()
        page = q.order_by(UpstreamApplication.id).offset(offset)
        if limit is not None:
            page = page.limit(limit)
        return total, [view_of(s, app, now) for app in s.execute(page).scalars()]


def forward_status(app: UpstreamApplication, now: dt.datetime) -> tuple[str, float | None]:
    """The forward deadline's status and how many hours late (None when not late)."""
    due = app.forward_due_at
    if app.forwarded_at is not None:
        end, status = app.forwarded_at, ("late" if app.forwarded_at > due else "met")
    elif app.state == ust.DRAFTED:
        end, status = now, ("overdue" if now > due else "running")
    else:  # withdrawn before it was forwarded: nothing is due
        return "cancelled", None
    late = (end - due).total_seconds() / 3600 if end > due else None
    return status, round(late, 2) if late is not None else None


def view_of(
    s: Session, app: UpstreamApplication, now: dt.datetime, *, detail: bool = False
) -> UpstreamView:
    status, late = forward_status(app, now)
    view = UpstreamView(
        id=app.id,
        level=app.level,
        platform=app.platform,
        upstream_code=app.upstream_code,
        resource_name=app.resource_name,
        kind=app.kind,
        fields=list(app.form.get("fields") or []),
        department_code=app.department_code,
        applicant=app.applicant,
        state=app.state,
        next_actions=ust.allowed_actions(app.state),
        created_at=sla.show(app.created_at),
        forward_due=sla.show(app.forward_due_at, app.forward_provisional),
        forward_status=status,
        forward_late_hours=late,
        forwarded_at=sla.show(app.forwarded_at),
        approval_ref=app.approval_ref,
        decision_reason=app.decision_reason,
        resource_code=app.resource_code,
        subscription_id=app.subscription_id,
    )
    if detail:
        view.form = {k: v for k, v in app.form.items() if k != "fields"}
        view.history = [
            UpstreamStep(
                at=sla.show(t.at),
                action=t.action,
                from_state=t.from_state,
                to_state=t.to_state,
                actor=t.actor,
                reason=t.reason,
            )
            for t in s.execute(
                sa.select(UpstreamTransition)
                .where(UpstreamTransition.application_id == app.id)
                .order_by(UpstreamTransition.id)
            ).scalars()
        ]
    return view


# -- housekeeping -----------------------------------------------------------------------------


def _breach(s: Session, app: UpstreamApplication) -> bool:
    """Record once that the forward deadline passed: audit event and a notification."""
    if app.forward_breached_at is not None:
        return False
    app.forward_breached_at = app.forward_due_at
    audit.append(
        s, "upstream.forward_breached", f"upstream:{app.id}",
        {"due": app.forward_due_at, "provisional": app.forward_provisional,
         "party": PLATFORM},
        actor="housekeeping",
    )  # fmt: skip
    _note(
        s, app, "upstream.forward_breached", PLATFORM_RECIPIENT,
        due=sla.show(app.forward_due_at, app.forward_provisional),
    )  # fmt: skip
    return True


def forward_breaches(s: Session, now: dt.datetime) -> int:
    """Breach every drafted application whose forward deadline passed by ``now``; the count
    of new breaches (idempotent: a breach is recorded once, dated at the deadline)."""
    overdue = s.execute(
        sa.select(UpstreamApplication)
        .where(
            UpstreamApplication.state == ust.DRAFTED,
            UpstreamApplication.forward_breached_at.is_(None),
            UpstreamApplication.forward_due_at < now,
        )
        .order_by(UpstreamApplication.forward_due_at, UpstreamApplication.id)
    ).scalars()
    return sum(_breach(s, app) for app in overdue)


def refresh_provisional(
    s: Session, calendar: WorkCalendar | None = None, *, forward_days: int | None = None
) -> int:
    """Recompute provisional forward deadlines of drafted applications: a calendar file may
    now know their year."""
    cal = calendar or default_calendar()
    days = forward_days or WorkflowSettings.from_env().upstream_forward_days
    changed = 0
    for app in s.execute(
        sa.select(UpstreamApplication).where(
            UpstreamApplication.forward_provisional.is_(True),
            UpstreamApplication.state == ust.DRAFTED,
        )
    ).scalars():
        due = cal.add_working_days(app.created_at, days)
        if (due.utc, due.provisional) != (app.forward_due_at, app.forward_provisional):
            app.forward_due_at, app.forward_provisional = due.utc, due.provisional
            changed += 1
    return changed
