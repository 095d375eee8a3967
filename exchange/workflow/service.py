"""The workflow's actions, as the CLI and the REST API call them: apply, review, withdraw,
sign off, evaluate, report effectiveness, suspend, resume — each checked against the actor's
role and the state machine, and done in one transaction with its history and audit event.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from exchange import audit
from exchange.catalog.model import Resource
from exchange.kernel.clock import utcnow
from exchange.kernel.errors import BadInput, Forbidden, IllegalTransition, NotFound
from exchange.store.locks import serialize
from exchange.store.models import Subscription
from exchange.workflow import sla
from exchange.workflow import states as st
from exchange.workflow.application import Application
from exchange.workflow.grants import check_grant, check_target_free
from exchange.workflow.models import (
    DepartmentSuspension,
    EffectivenessReport,
    Evaluation,
    SlaClock,
)
from exchange.workflow.transitions import AUTO, move, record
from exchange.workflow.users import SYSTEM, Principal
from exchange.workflow.views import SlaReport, SubscriptionView, sla_report, subscription_view
from exchange.workspace import Workspace


class Stars(BaseModel):
    """The five dimensions of an evaluation (000 评价), 1–5 stars each."""

    matches_description: int = Field(ge=1, le=5, description="描述相符")
    data_quality: int = Field(ge=1, le=5, description="数据质量")
    timeliness: int = Field(ge=1, le=5, description="数据时效")
    implementation_service: int = Field(ge=1, le=5, description="实施服务")
    review_efficiency: int = Field(ge=1, le=5, description="审批效率")


@contextmanager
def _session(ws: Workspace) -> Iterator[Session]:
    """A transaction that holds the store's writer lock: a step reads the current state."""
    with ws.store.session() as s:
        serialize(s)
        yield s


def provider_department(ws: Workspace, resource: Resource) -> str:
    """The department that provides a resource: its provider node's department (or name)."""
    node = ws.catalog.node(resource.provider)
    return node.department or node.name


def _sub(s: Session, subscription_id: int) -> Subscription:
    sub = s.get(Subscription, subscription_id)
    if sub is None:
        raise NotFound(f"no subscription {subscription_id}")
    return sub


def _who(who: Principal) -> str:
    dept = f" of {who.department}" if who.department else ""
    return f"{who.name} ({who.role}{dept})"


def _require_requester(who: Principal, sub: Subscription, action: str) -> None:
    if who.role == "admin":
        return
    if who.role == "requester" and who.department and who.department == sub.department_code:
        return
    raise Forbidden(
        f"{_who(who)} may not {action} subscription {sub.id}: it belongs to department "
        f"{sub.department_code or '(none: added by the platform)'}"
    )


def _require_provider(ws: Workspace, who: Principal, sub: Subscription) -> None:
    if who.role == "admin":
        return
    provider = provider_department(ws, ws.catalog.resource(sub.resource_code))
    if who.role == "provider" and who.department == provider:
        return
    raise Forbidden(
        f"{_who(who)} may not review subscription {sub.id}: resource {sub.resource_code} "
        f"is provided by {provider}"
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
        return resource is not None and provider_department(ws, resource) == who.department
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
    ones are filed at once and the 3-working-day delivery clock starts from the request."""
    now = now or utcnow()
    if who.role not in ("requester", "admin"):
        raise Forbidden(f"{_who(who)} may not apply: requesters apply for their department")
    if who.role == "requester" and who.department != form.department_code:
        raise Forbidden(
            f"{_who(who)} may apply only for its own department, not {form.department_code}"
        )
    resource, table = check_grant(
        ws,
        form.resource,
        form.node,
        form.fields,
        target_table=form.target_table,
        target_schema=form.target_schema,
    )
    node = ws.catalog.node(form.node)
    if node.department and node.department != form.department_name:
        raise BadInput(
            f"node {form.node!r} is the front-end of {node.department}, "
            f"not of {form.department_name}: name your department's own node"
        )
    with _session(ws) as s:
        suspended = open_suspension(s, form.department_code)
        if suspended is not None:
            raise Forbidden(
                f"department {form.department_code} may not apply: {suspended.reason} "
                "(report it to lift the suspension)"
            )
        check_target_free(s, form.node, table, form.target_schema)
        fields = [f for f in resource.field_names if f in form.fields]
        sub = Subscription(
            resource_code=resource.code,
            subscriber_node=form.node,
            target_schema=form.target_schema,
            target_table=table,
            fields=fields,
            requested_fields=fields,
            status=st.APPLIED,
            valid_until=sla.local_day(now) + dt.timedelta(days=form.usage_days),
            share=resource.share,
            department_code=form.department_code,
            department_name=form.department_name,
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
                "department": form.department_code,
                "urgency": form.urgency,
                "usage_days": form.usage_days,
            },
        )  # fmt: skip  (contact details stay out of the audit log)
        if resource.share == "conditional":
            move(
                s, sub, "submit_for_review", SYSTEM, now,
                "conditional resource (有条件共享): the provider reviews",
                provider=provider_department(ws, resource),
            )  # fmt: skip
        else:
            move(s, sub, "file", SYSTEM, now, "unconditional resource (无条件共享): no review")
        return subscription_view(s, ws, sub, now)


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
    """The provider's decision: approve (possibly fewer fields than requested) or reject."""
    now = now or utcnow()
    with _session(ws) as s:
        sub = _sub(s, subscription_id)
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
    missing = [k for k in resource.primary_key if k not in fields]
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
        sub = _sub(s, subscription_id)
        _require_requester(who, sub, action.replace("_", "-"))
        move(s, sub, action, who, now, reason)
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
        sub = _sub(s, subscription_id)
        _require_requester(who, sub, "evaluate")
        scores = stars.model_dump()
        move(s, sub, "evaluate", who, now, "evaluated", extra={"stars": scores})
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
        sub = _sub(s, subscription_id)
        _require_requester(who, sub, "report on")
        clock = sla.get_clock(s, sub.id, "effectiveness")
        if clock is None or clock.stopped_at is not None:
            why = "already reported" if clock is not None else f"it is {sub.status}, not closed"
            raise IllegalTransition(f"subscription {sub.id} has no effectiveness report due: {why}")
        s.add(EffectivenessReport(subscription_id=sub.id, summary=summary, by=who.name, at=now))
        sla.stop_clock(s, sub.id, "effectiveness", now)
        audit.append(
            s, "subscription.effectiveness_reported", f"subscription:{sub.id}",
            {"due": clock.due_at, "late": now > clock.due_at}, actor=who.name,
        )  # fmt: skip
        for susp in s.execute(
            sa.select(DepartmentSuspension).where(
                DepartmentSuspension.subscription_id == sub.id,
                DepartmentSuspension.lifted_at.is_(None),
            )
        ).scalars():
            susp.lifted_at = now
            audit.append(
                s, "department.resumed", f"department:{susp.department_code}",
                {"subscription": sub.id}, actor=who.name,
            )  # fmt: skip
        return subscription_view(s, ws, sub, now)


def admin_step(
    ws: Workspace,
    who: Principal,
    subscription_id: int,
    action: str,
    reason: str,
    now: dt.datetime | None = None,
) -> SubscriptionView:
    """Platform steps: ``suspend``, ``resume``, or ``deliver`` (an implementation done by hand)."""
    if action not in ("suspend", "resume", "deliver"):
        raise BadInput(f"{action!r} is not a platform step (suspend, resume, deliver)")
    _require_admin(who, action)
    if not reason.strip():
        raise BadInput(f"{action} needs a reason")
    now = now or utcnow()
    with _session(ws) as s:
        sub = _sub(s, subscription_id)
        move(s, sub, action, who, now, reason)
        return subscription_view(s, ws, sub, now)


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
        sub = _sub(s, subscription_id)
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
