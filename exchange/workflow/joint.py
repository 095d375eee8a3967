"""Joint authorization and dedicated resources (003 §15).

A resource that fuses several departments' data lists them as its ``sources``. A conditional
request for it is reviewed by every one of them at once (同步审核), each on its own SLA clock
(``review.1``, ``review.2``, … of the subscription, started by ``transitions`` on entering
review: 5 working days from the request, with the reviewers' reminders): it is approved only
when all of them have approved, and then granted the fields every one of them granted (the
intersection: each may grant fewer than requested); one rejection rejects it, with that
provider's reason. Every source provider is told the outcome
(平台同步将授权结果告知各原始数据提供部门).

A source provider that does not answer in time is decided for by the platform's review-timeout
policy, the one a single provider's silence meets (``EXCHANGE_REVIEW_TIMEOUT_POLICY``):
``approve`` counts its silence as consent to the fields requested (视为同意, Hubei 003 §14),
``reject`` as a refusal (超时拒绝, Guangdong 000). A platform admin reviewing a joint request
decides for every source provider that has not answered (委托代为审核).

A dedicated resource (``dedicated_to``, the "-xx 专用" resources) is requested only by its
department (``grants.check_dedicated``): another department asks the original provider
instead (a data demand).
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Session

from exchange import audit
from exchange.catalog.model import Resource
from exchange.kernel.clock import utcnow
from exchange.kernel.errors import BadInput, Forbidden, IllegalTransition
from exchange.store.locks import locked_session
from exchange.store.models import Subscription
from exchange.workflow import notifications, sla
from exchange.workflow import states as st
from exchange.workflow.joint_models import APPROVED, PENDING, REJECTED, JointReview
from exchange.workflow.models import SlaClock
from exchange.workflow.transitions import AUTO, move
from exchange.workflow.users import SYSTEM, Principal
from exchange.workflow.views import SubscriptionView, subscription_view
from exchange.workspace import Workspace


def reviewers(resource: Resource) -> tuple[str, ...]:
    """The departments that review a conditional request for ``resource`` together (none: a
    single provider reviews it)."""
    return resource.sources


def is_source(resource: Resource, department: str | None) -> bool:
    """Whether ``department`` is one of the resource's source providers."""
    return department is not None and department in resource.sources


def parts(s: Session, subscription_id: int) -> list[JointReview]:
    """The source providers' parts of a joint review, in the order of the resource's sources
    (empty: the subscription is not under joint review)."""
    return list(
        s.execute(
            sa.select(JointReview)
            .where(JointReview.subscription_id == subscription_id)
            .order_by(JointReview.id)
        ).scalars()
    )


def review(
    ws: Workspace,
    who: Principal,
    subscription_id: int,
    *,
    approve: bool,
    fields: list[str] | None = None,
    reason: str | None = None,
    now: dt.datetime | None = None,
) -> SubscriptionView | None:
    """A source provider's decision on a joint request (an admin's: for every one that has not
    answered); None when the subscription is not under joint review (a single provider's)."""
    now = now or utcnow()
    with locked_session(ws.store) as s:
        sub = s.get(Subscription, subscription_id)
        mine = parts(s, subscription_id) if sub is not None else []
        if sub is None or not mine:
            return None
        st.next_state(sub.status, "approve", who.role, subject=f"subscription {sub.id}")
        pending = [p for p in mine if p.decision == PENDING]
        if who.role == "provider":
            pending = _own_part(ws, who, sub, mine)
        if not approve and not (reason or "").strip():
            raise BadInput("a rejection needs a reason (审批不通过的应说明理由)")
        granted = _granted(ws, sub, fields) if approve else None
        for part in pending:
            _decide(s, sub, part, who, now, granted, reason)
        conclude(s, sub, who, now)
        return subscription_view(s, ws, sub, now)


def _own_part(
    ws: Workspace, who: Principal, sub: Subscription, mine: list[JointReview]
) -> list[JointReview]:
    part = next((p for p in mine if p.department_code == who.department), None)
    if part is None:
        names = ", ".join(ws.catalog.describe_department(p.department_code) for p in mine)
        raise Forbidden(
            f"{who.describe()} may not review subscription {sub.id}: its source providers "
            f"are {names}"
        )
    if part.decision != PENDING:
        raise IllegalTransition(
            f"subscription {sub.id}: department {part.department_code} has already "
            f"{part.decision} it"
        )
    return [part]


def _granted(ws: Workspace, sub: Subscription, fields: list[str] | None) -> list[str]:
    """The fields one provider grants: the requested ones, or fewer (the key kept)."""
    requested = list(sub.requested_fields or sub.fields)
    if not fields:
        return requested
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
    return [f for f in requested if f in fields]


def _decide(
    s: Session,
    sub: Subscription,
    part: JointReview,
    who: Principal,
    at: dt.datetime,
    granted: list[str] | None,
    reason: str | None,
    *,
    timed_out: bool = False,
) -> None:
    """Record one provider's decision, stop its clock, and audit it."""
    part.decision = APPROVED if granted is not None else REJECTED
    part.fields, part.reason = granted, reason
    part.decided_by, part.decided_at, part.timed_out = who.name, at, timed_out
    clock = sla.stop_clock(s, sub.id, part.clock_kind, at)
    if clock is not None and timed_out:
        clock.outcome = "timeout"
    audit.append(
        s, f"subscription.joint_{part.decision[:-1]}", f"subscription:{sub.id}",
        {"department": part.department_code, "fields": granted, "reason": reason, "at": at,
         "timeout": timed_out},
        actor=who.name,
    )  # fmt: skip


def conclude(s: Session, sub: Subscription, who: Principal, at: dt.datetime) -> None:
    """Take the subscription's step once the parts decide it: one rejection rejects it, all
    approvals approve the fields every provider granted; each source provider is told."""
    mine = parts(s, sub.id)
    rejected = next((p for p in mine if p.decision == REJECTED), None)
    if rejected is not None:
        auto = AUTO if rejected.timed_out else ""
        move(s, sub, "reject", who, at, f"{auto}rejected by source provider "
             f"{rejected.department_code}: {rejected.reason}")  # fmt: skip
    elif all(p.decision == APPROVED for p in mine):
        auto = AUTO if all(p.timed_out for p in mine) else ""
        granted = set.intersection(*(set(p.fields or ()) for p in mine))
        sub.fields = [f for f in (sub.requested_fields or sub.fields) if f in granted]
        sources = [p.department_code for p in mine]
        move(s, sub, "approve", who, at,
             f"{auto}approved by every source provider ({', '.join(sources)})",
             extra={"fields": sub.fields, "sources": sources})  # fmt: skip
    else:
        return
    for p in mine:
        notifications.notify(
            s, "review.joint_result", f"provider:{p.department_code}",
            {"resource": sub.resource_code, "state": sub.status, "fields": sub.fields,
             "reason": sub.decision_reason},
            key=f"review.joint_result:{sub.id}:{p.department_code}", subscription_id=sub.id,
        )  # fmt: skip


def tick(s: Session, now: dt.datetime, policy: str) -> dict[str, int]:
    """The joint reviews' clocks at ``now``: reminders to pending providers, and each silent
    provider decided for by ``policy`` at its deadline (a breach by it). Returns counts by
    the ``TickReport`` field they add to."""
    counts = {"breaches": 0, "reminders": 0, "joint_timeouts": 0,
              "approved_on_timeout": 0, "rejected_on_timeout": 0}  # fmt: skip
    rows = s.execute(
        sa.select(SlaClock, Subscription, JointReview)
        .join(Subscription, Subscription.id == SlaClock.subscription_id)
        .join(
            JointReview,
            sa.and_(
                JointReview.subscription_id == SlaClock.subscription_id,
                JointReview.clock_kind == SlaClock.kind,
            ),
        )
        .where(SlaClock.stopped_at.is_(None), JointReview.decision == PENDING)
        .order_by(SlaClock.due_at, SlaClock.id)
    ).all()
    for clock, sub, part in rows:
        if sub.status != st.UNDER_REVIEW or part.decision != PENDING:
            continue
        if now > clock.due_at:
            if sla.record_breach(s, clock):
                counts["breaches"] += 1
            at = clock.due_at
            if policy == "approve":
                why = "no answer within 5 working days: approved (视为同意, Hubei 003 §14)"
                granted: list[str] | None = list(sub.requested_fields or sub.fields)
            else:
                why = "no answer within 5 working days: rejected (超时拒绝, Guangdong 000)"
                granted = None
            _decide(s, sub, part, SYSTEM, at, granted, why, timed_out=True)
            counts["joint_timeouts"] += 1
            conclude(s, sub, SYSTEM, at)
            if sub.status == st.FILING or sub.status in st.DELIVERABLE:
                counts["approved_on_timeout"] += 1
            elif sub.status == st.REJECTED:
                counts["rejected_on_timeout"] += 1
            continue
        interval = sla.REMINDER_INTERVAL.get(sub.urgency, sla.REMINDER_INTERVAL["normal"])
        slot = int((now - clock.started_at) / interval)
        if slot >= 1 and slot > clock.reminders_sent:
            clock.reminders_sent = slot
            notifications.notify(
                s, "review.reminder", f"provider:{clock.party}",
                {"resource": sub.resource_code, "urgency": sub.urgency, "reminder": slot,
                 "due": sla.show(clock.due_at, clock.provisional)},
                key=f"review.reminder:{sub.id}:{part.department_code}:{slot}",
                subscription_id=sub.id,
            )  # fmt: skip
            counts["reminders"] += 1
    return counts
