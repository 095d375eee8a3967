"""The workflow's actions, as the CLI and the REST API call them: apply, review, withdraw,
sign off, evaluate, report effectiveness, suspend, resume, remove — each checked against the
actor's role and the state machine, and done in one transaction with its history and audit
event. An application is for the applicant's own department and names one of its nodes (an
application for an api resource names none: it is called through the gateway).
"""

from __future__ import annotations

import datetime as dt
from contextlib import AbstractContextManager
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from exchange import audit
from exchange.catalog.model import Resource
from exchange.kernel.clock import utcnow
from exchange.kernel.errors import BadInput, Forbidden, IllegalTransition, NotFound
from exchange.store.locks import locked_session
from exchange.store.models import Subscription
from exchange.workflow import joint, sla
from exchange.workflow import states as st
from exchange.workflow.acting import recorded
from exchange.workflow.application import Application, DepartmentRequest
from exchange.workflow.grants import (
    check_api_free,
    check_dedicated,
    check_department,
    check_grant,
    check_node_department,
    check_target_free,
    is_api,
)
from exchange.workflow.models import (
    DepartmentSuspension,
    EffectivenessReport,
    Evaluation,
    SlaClock,
)
from exchange.workflow.transitions import AUTO, PLATFORM, move, record
from exchange.workflow.users import SYSTEM, Principal
from exchange.workflow.views import (
    SlaReport,
    SubscriptionView,
    clocks_by_subscription,
    folders_by_subscription,
    sla_report,
    subscription_view,
)
from exchange.workspace import Workspace


class Stars(BaseModel):
    """The five dimensions of an evaluation (000 评价), 1–5 stars each."""

    matches_description: int = Field(ge=1, le=5, description="描述相符")
    data_quality: int = Field(ge=1, le=5, description="数据质量")
    timeliness: int = Field(ge=1, le=5, description="数据时效")
    implementation_service: int = Field(ge=1, le=5, description="实施服务")
    review_efficiency: int = Field(ge=1, le=5, description="审批效率")


def _session(ws: Workspace) -> AbstractContextManager[Session]:
    return locked_session(ws.store)


def provider_department(ws: Workspace, resource: Resource) -> str | None:
    """The code of the department that provides a resource (its provider node's), or None
    for a node of no department: no provider user reviews such a resource, only admins do
    (its review deadline runs against the platform)."""
    return ws.catalog.node(resource.provider).department or None


def applicant_department(ws: Workspace, who: Principal, form: DepartmentRequest) -> tuple[str, str]:
    """The code and name of the department an application is for: a requester's own (the form
    may only repeat it), or the one an admin applying on its behalf names. The name is the
    catalog's; a form's name must agree with it."""
    if who.role == "requester":
        if not who.department:
            raise Forbidden(f"{_who(who)} belongs to no department and may not apply")
        code = who.department
        if form.department_code is not None and form.department_code != code:
            raise Forbidden(
                f"{_who(who)} may apply only for its own department "
                f"{ws.catalog.describe_department(code)}, not {form.department_code}"
            )
    else:
        if form.department_code is None:
            raise BadInput("department_code: an admin applying on behalf of a department names it")
        code = form.department_code
        check_department(ws.catalog, code, "department_code")
    name = ws.catalog.departments.get(code)
    if name is None:  # a catalog that declares no departments: the form's name, or the code
        return code, form.department_name or code
    if form.department_name is not None and form.department_name != name:
        raise BadInput(
            f"department_name: {form.department_name!r} is not the name of department {code} "
            f"({name}); leave it out, it comes from the catalog"
        )
    return code, name


def subscription_row(s: Session, subscription_id: int) -> Subscription:
    """The subscription, or NotFound naming it."""
    sub = s.get(Subscription, subscription_id)
    if sub is None:
        raise NotFound(f"no subscription {subscription_id}")
    return sub


def _who(who: Principal) -> str:
    return who.describe()


def acts_for(who: Principal, sub: Subscription) -> bool:
    """A platform admin, or a requester of the subscription's own department: who takes the
    requester's steps of a subscription (and holds its authorization codes)."""
    if who.role == "admin":
        return True
    return (
        who.role == "requester" and bool(who.department) and who.department == sub.department_code
    )


def _require_requester(who: Principal, sub: Subscription, action: str) -> None:
    if acts_for(who, sub):
        return
    raise Forbidden(
        f"{_who(who)} may not {action} subscription {sub.id}: it belongs to department "
        f"{sub.department_code or '(none: added by the platform)'}"
    )


def _require_provider(ws: Workspace, who: Principal, sub: Subscription) -> None:
    if who.role == "admin":
        return
    resource = ws.catalog.resource(sub.resource_code)
    provider = provider_department(ws, resource)
    if who.role == "provider" and provider is not None and who.department == provider:
        return
    by = (
        ws.catalog.describe_department(provider)
        if provider is not None
        else f"node {resource.provider!r} of no department: only a platform admin reviews it"
    )
    raise Forbidden(
        f"{_who(who)} may not review subscription {sub.id}: resource {sub.resource_code} "
        f"is provided by {by}"
    )


def _require_admin(who: Principal, action: str) -> None:
    if who.role != "admin":
        raise Forbidden(f"{_who(who)} may not {action}: only a platform admin may")


def may_view(ws: Workspace, who: Principal, sub: Subscription) -> bool:
    """Admins see all; requesters their department's; providers the requests they review."""
    if who.role == "admin":
        return True
    if who.role == "requester":
        return bool(who.department) and who.department == sub.department_code
    if who.role == "provider":
        resource = ws.catalog.resources.get(sub.resource_code)
        return (
            resource is not None
            and who.department is not None
            and (
                provider_department(ws, resource) == who.department
                or joint.is_source(resource, who.department)
            )
        )
    return False


def open_suspension(s: Session, department: str) -> DepartmentSuspension | None:
    return s.execute(
        sa.select(DepartmentSuspension)
        .where(
            DepartmentSuspension.department_code == department,
            DepartmentSuspension.lifted_at.is_(None),
        )
        .order_by(DepartmentSuspension.id)
        .limit(1)
    ).scalar()


# -- the actions ------------------------------------------------------------------------------


def apply(
    ws: Workspace, who: Principal, form: Application, now: dt.datetime | None = None
) -> SubscriptionView:
    """File an application: conditional resources go to the provider's review, unconditional
    ones are filed at once and the 3-working-day delivery clock starts from the request (for
    an api resource, its implementation is the authorization code issued)."""
    now = now or utcnow()
    with _session(ws) as s:
        sub = file_application(s, ws, who, form, now)
        return subscription_view(s, ws, sub, now)


def file_application(
    s: Session, ws: Workspace, who: Principal, form: Application, now: dt.datetime
) -> Subscription:
    """``apply`` in the caller's transaction (an upstream application, once proxied, files
    its department's form with the step that records it: ``exchange.workflow.upstream``)."""
    if who.role not in ("requester", "admin"):
        raise Forbidden(f"{_who(who)} may not apply: requesters apply for their department")
    department_code, department_name = applicant_department(ws, who, form)
    resource, table = check_grant(
        ws,
        form.resource,
        form.node,
        form.fields,
        target_table=form.target_table,
        target_schema=form.target_schema,
    )
    if form.node is not None:
        check_node_department(ws.catalog, form.node, department_code)
    check_dedicated(ws.catalog, resource, department_code)
    suspended = open_suspension(s, department_code)
    if suspended is not None:
        raise Forbidden(
            f"department {department_code} may not apply: {suspended.reason} "
            "(report it to lift the suspension)"
        )
    if form.node is not None:
        check_target_free(s, form.node, table, form.target_schema)
    if is_api(resource):
        check_api_free(s, resource.code, department_code)
    fields = [f for f in resource.field_names if f in form.fields]
    sub = Subscription(
        resource_code=resource.code,
        subscriber_node=form.node or "",  # an api subscription: no node
        target_schema=form.target_schema,
        target_table=table,
        fields=fields,
        requested_fields=fields,
        status=st.APPLIED,
        valid_until=sla.local_day(now) + dt.timedelta(days=form.usage_days),
        share=resource.share,
        department_code=department_code,
        department_name=department_name,
        purpose=form.purpose,
        legal_basis=form.legal_basis,
        contact_name=form.contact_name,
        contact_phone=form.contact_phone,
        contact_email=form.contact_email,
        system_name=form.system_name,
        system_ip=form.system_ip,
        deploy_location=form.deploy_location,
        technical_notes=form.technical_notes,
        usage_days=form.usage_days,
        urgency=form.urgency,
        urgency_reason=form.urgency_reason,
        applicant=who.name,
        applied_at=now,
        state_changed_at=now,
    )
    s.add(sub)
    s.flush()
    record(
        s,
        sub,
        "apply",
        None,
        who,
        form.urgency_reason,
        now,
        extra={
            "resource": resource.code,
            "node": form.node,
            "table": table,
            "fields": fields,
            "department": department_code,
            **recorded(who),
            "urgency": form.urgency,
            "usage_days": form.usage_days,
        },
    )  # fmt: skip  (contact details stay out of the audit log)
    if resource.share == "conditional":
        move(
            s, sub, "submit_for_review", SYSTEM, now,
            "conditional resource (有条件共享): the provider reviews",
            provider=provider_department(ws, resource) or PLATFORM,
            reviewers=joint.reviewers(resource),
        )  # fmt: skip
    else:
        move(s, sub, "file", SYSTEM, now, "unconditional resource (无条件共享): no review")
    return sub


def review(
    ws: Workspace,
    who: Principal,
    subscription_id: int,
    *,
    approve: bool,
    fields: list[str] | None = None,
    reason: str | None = None,
    now: dt.datetime | None = None,
) -> SubscriptionView:
    """The provider's decision: approve (possibly fewer fields than requested) or reject; a
    joint request's source provider decides its own part (``exchange.workflow.joint``)."""
    now = now or utcnow()
    joint_view = joint.review(
        ws, who, subscription_id, approve=approve, fields=fields, reason=reason, now=now
    )
    if joint_view is not None:
        return joint_view
    with _session(ws) as s:
        sub = subscription_row(s, subscription_id)
        _require_provider(ws, who, sub)
        if approve:
            st.next_state(sub.status, "approve", who.role, subject=f"subscription {sub.id}")
            granted = _granted(ws, sub, fields)
            sub.fields = granted
            sub.decision_reason = reason
            move(s, sub, "approve", who, now, reason or "approved", extra={"fields": granted})
        else:
            if not (reason or "").strip():
                raise BadInput("a rejection needs a reason (审批不通过的应说明理由)")
            move(s, sub, "reject", who, now, reason)
        return subscription_view(s, ws, sub, now)


def _granted(ws: Workspace, sub: Subscription, fields: list[str] | None) -> list[str]:
    requested = sub.requested_fields or sub.fields
    if not fields:
        return list(requested)
    extra = [f for f in fields if f not in requested]
    if extra:
        raise BadInput(
            f"only requested fields may be granted; not requested: {', '.join(extra)} "
            f"(requested: {', '.join(requested)})"
        )
    resource = ws.catalog.resource(sub.resource_code)
    # an api response is filtered, not merged by a key: any subset of it may be granted
    missing = [] if is_api(resource) else [k for k in resource.primary_key if k not in fields]
    if missing:
        raise BadInput(f"the granted fields must include the primary key {', '.join(missing)}")
    return [f for f in resource.field_names if f in fields]


def withdraw(
    ws: Workspace, who: Principal, subscription_id: int, reason: str, now: dt.datetime | None = None
) -> SubscriptionView:
    """The requester withdraws its application (before implementation)."""
    return _requester_step(ws, who, subscription_id, "withdraw", reason or "withdrawn", now)


def sign_off(
    ws: Workspace, who: Principal, subscription_id: int, now: dt.datetime | None = None
) -> SubscriptionView:
    """The requester confirms it received the data (签收)."""
    return _requester_step(ws, who, subscription_id, "sign_off", "signed off", now)


def _requester_step(
    ws: Workspace,
    who: Principal,
    subscription_id: int,
    action: str,
    reason: str,
    now: dt.datetime | None,
) -> SubscriptionView:
    now = now or utcnow()
    with _session(ws) as s:
        sub = subscription_row(s, subscription_id)
        _require_requester(who, sub, action.replace("_", "-"))
        move(s, sub, action, who, now, reason, extra=recorded(who))
        return subscription_view(s, ws, sub, now)


def evaluate(
    ws: Workspace,
    who: Principal,
    subscription_id: int,
    stars: Stars,
    comment: str | None = None,
    now: dt.datetime | None = None,
) -> SubscriptionView:
    """The requester's five-star evaluation; it closes the subscription (办结)."""
    now = now or utcnow()
    with _session(ws) as s:
        sub = subscription_row(s, subscription_id)
        _require_requester(who, sub, "evaluate")
        scores = stars.model_dump()
        move(s, sub, "evaluate", who, now, "evaluated", extra={"stars": scores, **recorded(who)})
        s.add(Evaluation(subscription_id=sub.id, comment=comment, by=who.name, at=now, **scores))
        return subscription_view(s, ws, sub, now)


def report_effectiveness(
    ws: Workspace,
    who: Principal,
    subscription_id: int,
    summary: str,
    now: dt.datetime | None = None,
) -> SubscriptionView:
    """The usage-effectiveness report (应用成效); lifts a suspension its lateness caused."""
    now = now or utcnow()
    if not summary.strip():
        raise BadInput("the effectiveness report is empty")
    with _session(ws) as s:
        sub = subscription_row(s, subscription_id)
        _require_requester(who, sub, "report on")
        clock = sla.get_clock(s, sub.id, "effectiveness")
        if clock is None or clock.stopped_at is not None:
            why = "already reported" if clock is not None else f"it is {sub.status}, not closed"
            raise IllegalTransition(f"subscription {sub.id} has no effectiveness report due: {why}")
        s.add(EffectivenessReport(subscription_id=sub.id, summary=summary, by=who.name, at=now))
        sla.stop_clock(s, sub.id, "effectiveness", now)
        audit.append(
            s, "subscription.effectiveness_reported", f"subscription:{sub.id}",
            {"due": clock.due_at, "late": now > clock.due_at, **recorded(who)}, actor=who.name,
        )  # fmt: skip
        _lift_suspensions(s, sub.id, who, now)
        return subscription_view(s, ws, sub, now)


def admin_step(
    ws: Workspace,
    who: Principal,
    subscription_id: int,
    action: str,
    reason: str,
    now: dt.datetime | None = None,
) -> SubscriptionView:
    """Platform steps: ``suspend``, ``resume``, or ``deliver`` (an implementation done by hand;
    refused for an api resource, whose implementation is issuing its authorization code)."""
    if action not in ("suspend", "resume", "deliver"):
        raise BadInput(f"{action!r} is not a platform step (suspend, resume, deliver)")
    _require_admin(who, action)
    if not reason.strip():
        raise BadInput(f"{action} needs a reason")
    now = now or utcnow()
    with _session(ws) as s:
        sub = subscription_row(s, subscription_id)
        resource = ws.catalog.resources.get(sub.resource_code)
        if action == "deliver" and resource is not None and is_api(resource):
            # An API is implemented by its authorization code: marking it done by hand would
            # leave the requester at sign-off with nothing to call the gateway with.
            raise IllegalTransition(
                f"subscription {sub.id} is for api resource {sub.resource_code}: it is "
                f"implemented by issuing its authorization code (exchange code issue {sub.id}), "
                "not marked implemented by hand"
            )
        move(s, sub, action, who, now, reason)
        return subscription_view(s, ws, sub, now)


def remove(
    ws: Workspace,
    who: Principal,
    subscription_id: int,
    reason: str,
    now: dt.datetime | None = None,
) -> SubscriptionView:
    """Remove a subscription that should never have existed (an admin's correction): it is
    never delivered again, nothing more is due on it, and a department suspension it caused
    is lifted. Its row, history and deliveries stay: what was delivered stays accounted for."""
    _require_admin(who, "remove a subscription")
    if not reason.strip():
        raise BadInput("remove needs a reason")
    now = now or utcnow()
    with _session(ws) as s:
        sub = subscription_row(s, subscription_id)
        move(s, sub, "remove", who, now, reason)
        _lift_suspensions(s, sub.id, who, now, removed=True)
        return subscription_view(s, ws, sub, now)


def _lift_suspensions(
    s: Session, subscription_id: int, who: Principal, now: dt.datetime, *, removed: bool = False
) -> None:
    """Lift the department suspension this subscription's overdue report caused (it was
    reported, or the subscription removed), each lifting audited."""
    for susp in s.execute(
        sa.select(DepartmentSuspension).where(
            DepartmentSuspension.subscription_id == subscription_id,
            DepartmentSuspension.lifted_at.is_(None),
        )
    ).scalars():
        susp.lifted_at = now
        details: dict[str, Any] = {"subscription": subscription_id}
        if removed:
            details["removed"] = True
        audit.append(
            s, "department.resumed", f"department:{susp.department_code}", details,
            actor=who.name,
        )  # fmt: skip


def auto_reason(what: str) -> str:
    """Why a step happened on its own (marks the clock ``auto``)."""
    return AUTO + what


# -- reading ----------------------------------------------------------------------------------


def show(
    ws: Workspace, who: Principal, subscription_id: int, now: dt.datetime | None = None
) -> SubscriptionView:
    """One subscription with its form, deadlines and history, if ``who`` may see it."""
    now = now or utcnow()
    with ws.store.session() as s:
        sub = subscription_row(s, subscription_id)
        if not may_view(ws, who, sub):
            raise Forbidden(f"{_who(who)} may not see subscription {sub.id}")
        return subscription_view(s, ws, sub, now, detail=True)


def list_for(
    ws: Workspace, who: Principal, now: dt.datetime | None = None, state: str | None = None
) -> list[SubscriptionView]:
    """The subscriptions ``who`` may see, with their deadlines and SLA status."""
    now = now or utcnow()
    if state is not None and not st.is_legal_state(state):
        raise BadInput(f"no state {state!r} (states: {', '.join(st.STATES)})")
    with ws.store.session() as s:
        q = sa.select(Subscription).order_by(Subscription.id)
        if state:
            q = q.where(Subscription.status == state)
        if who.role == "requester":
            q = q.where(Subscription.department_code == (who.department or ""))
        return [
            subscription_view(s, ws, sub, now)
            for sub in s.execute(q).scalars()
            if may_view(ws, who, sub)
        ]


def visible_to(ws: Workspace, who: Principal) -> sa.ColumnElement[bool]:
    """``may_view`` as a SQL condition on subscriptions, so that a page can be cut in SQL."""
    if who.role == "admin":
        return sa.true()
    if who.role == "requester" and who.department:
        return Subscription.department_code == who.department
    if who.role == "provider":
        codes = [
            r.code
            for r in ws.catalog.resources.values()
            if who.department is not None
            and (provider_department(ws, r) == who.department or joint.is_source(r, who.department))
        ]
        return Subscription.resource_code.in_(codes)
    return sa.false()


def list_page(
    ws: Workspace,
    who: Principal,
    *,
    limit: int,
    offset: int = 0,
    state: str | None = None,
    now: dt.datetime | None = None,
) -> tuple[int, list[SubscriptionView]]:
    """One page (in id order) of the subscriptions ``who`` may see, and how many there are."""
    now = now or utcnow()
    if state is not None and not st.is_legal_state(state):
        raise BadInput(f"no state {state!r} (states: {', '.join(st.STATES)})")
    q = sa.select(Subscription).where(visible_to(ws, who))
    if state:
        q = q.where(Subscription.status == state)
    with ws.store.session() as s:
        total = s.execute(sa.select(sa.func.count()).select_from(q.subquery())).scalar_one()
        subs = list(s.execute(q.order_by(Subscription.id).limit(limit).offset(offset)).scalars())
        ids = [sub.id for sub in subs]
        clocks = clocks_by_subscription(s, ids)
        folders = folders_by_subscription(s, ids)
        views = [
            subscription_view(s, ws, sub, now, clocks=clocks.get(sub.id, []), folders=folders)
            for sub in subs
        ]
        return total, views


def sla_overview(ws: Workspace, who: Principal, now: dt.datetime | None = None) -> SlaReport:
    """Open deadlines and breaches of the subscriptions ``who`` may see, per party."""
    now = now or utcnow()
    with ws.store.session() as s:
        pairs = [
            (clock, sub)
            for clock, sub in s.execute(
                sa.select(SlaClock, Subscription)
                .join(Subscription, Subscription.id == SlaClock.subscription_id)
                .order_by(SlaClock.due_at, SlaClock.id)
            ).all()
            if may_view(ws, who, sub)
        ]
        return sla_report(pairs, now)
