"""Taking one step of the state machine: the new state, its history row, its audit event, the
SLA clocks it starts and stops, and the notifications it sends — all in the caller's session.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from exchange import audit
from exchange.store.models import Subscription
from exchange.workflow import notifications, sla
from exchange.workflow import states as st
from exchange.workflow.joint_models import PENDING, JointReview, clock_kind
from exchange.workflow.models import SubscriptionTransition
from exchange.workflow.users import SYSTEM, Principal

PLATFORM = "platform"


def requester_party(sub: Subscription) -> str:
    return sub.department_code or sub.subscriber_node


def record(
    s: Session,
    sub: Subscription,
    action: str,
    source: str | None,
    who: Principal,
    reason: str | None,
    at: dt.datetime,
    extra: dict[str, Any] | None = None,
) -> None:
    """The history row and the audit event of a step already taken."""
    s.add(
        SubscriptionTransition(
            subscription_id=sub.id,
            action=action,
            from_state=source,
            to_state=sub.status,
            actor=who.name,
            actor_kind=who.role,
            reason=reason,
            at=at,
        )
    )
    audit.append(
        s,
        f"subscription.{action}",
        f"subscription:{sub.id}",
        {"from": source, "to": sub.status, "reason": reason, "at": at, **(extra or {})},
        actor=who.name,
    )


def move(
    s: Session,
    sub: Subscription,
    action: str,
    who: Principal,
    at: dt.datetime,
    reason: str | None = None,
    *,
    provider: str | None = None,
    extra: dict[str, Any] | None = None,
    reviewers: Sequence[str] = (),
) -> None:
    """Take ``action`` on ``sub`` (refused with IllegalTransition if the machine forbids it);
    ``reviewers``: the source providers of a joint review (``exchange.workflow.joint``)."""
    source = sub.status
    target = st.next_state(
        source, action, who.role, resume_to=sub.suspended_from, subject=f"subscription {sub.id}"
    )
    sub.status, sub.state_changed_at = target, at
    record(s, sub, action, source, who, reason, at, extra)
    _entered(s, sub, action, source, at, reason, provider, reviewers)


def _note(s: Session, sub: Subscription, kind: str, recipient: str, **payload: Any) -> None:
    body = {"resource": sub.resource_code, "state": sub.status, **payload}
    notifications.notify(s, kind, recipient, body, key=f"{kind}:{sub.id}", subscription_id=sub.id)


def _entered(
    s: Session,
    sub: Subscription,
    action: str,
    source: str,
    at: dt.datetime,
    reason: str | None,
    provider: str | None,
    reviewers: Sequence[str] = (),
) -> None:
    """What entering the new state sets going (clocks, notifications, follow-on steps)."""
    requester = requester_party(sub)
    state = sub.status
    if state == st.UNDER_REVIEW and reviewers:
        _request_joint_review(s, sub, at, reviewers)
    elif state == st.UNDER_REVIEW:
        assert provider is not None, "a review needs the provider's department"
        _request_review(s, sub, at, provider)
    elif state == st.FILING:
        sla.stop_clock(s, sub.id, "review", at)
        sub.approved_at = at
        if sub.usage_days:
            sub.valid_until = sla.local_day(at) + dt.timedelta(days=sub.usage_days)
        move(s, sub, "start_implementation", SYSTEM, at, "filed: the platform records the grant")
    elif state == st.IMPLEMENTATION and action == "start_implementation":
        _start_delivery(s, sub, at, requester)
    elif state == st.SIGN_OFF:
        sla.stop_clock(s, sub.id, "delivery", at)
        clock = sla.start_clock(
            s, sub.id, "sign_off", "requester", requester, at, period=sla.SIGN_OFF_PERIOD
        )
        _note(s, sub, "subscription.delivered", f"requester:{requester}",
              sign_off_due=sla.show(clock.due_at))  # fmt: skip
    elif state == st.EVALUATION:
        _stop_auto(s, sub.id, "sign_off", at, auto=action == "sign_off" and reason_is_auto(reason))
        sla.start_clock(
            s, sub.id, "evaluation", "requester", requester, at, period=sla.EVALUATION_PERIOD
        )
    elif state == st.CLOSED:
        _stop_auto(s, sub.id, "evaluation", at, auto=reason_is_auto(reason))
        sub.closed_at = at
        if sub.department_code:
            clock = sla.start_clock(
                s, sub.id, "effectiveness", "requester", requester, at,
                period=sla.EFFECTIVENESS_PERIOD,
            )  # fmt: skip
            _note(s, sub, "subscription.closed", f"requester:{requester}",
                  effectiveness_due=sla.show(clock.due_at))  # fmt: skip
    elif state in (st.REJECTED, st.WITHDRAWN):
        for clock in sla.open_clocks(s, sub.id):
            if clock.kind == "review" and state == st.REJECTED:
                sla.stop_clock(s, sub.id, "review", at)
            else:
                sla.stop_clock(s, sub.id, clock.kind, at, cancelled=True)
        sub.decision_reason = reason
        kind = "subscription.rejected" if state == st.REJECTED else "subscription.withdrawn"
        _note(s, sub, kind, f"requester:{requester}", reason=reason)
    elif state == st.EXPIRED:
        _cancel_clocks(s, sub.id, at, keep="effectiveness")  # the report stays due after it
        sub.suspended_from = None
        _note(s, sub, "subscription.expired", f"requester:{requester}",
              valid_until=str(sub.valid_until))  # fmt: skip
    elif state == st.REMOVED:
        # Removed by mistake: nothing more is due from anyone, not even the effectiveness report.
        _cancel_clocks(s, sub.id, at)
        sub.decision_reason = reason
        sub.suspended_from = None
    elif state == st.SUSPENDED:
        sub.suspended_from = source
    elif action == "resume":
        sub.suspended_from = None


def _request_review(s: Session, sub: Subscription, at: dt.datetime, provider: str) -> None:
    """The provider's 5-working-day review clock, and the request in its outbox."""
    clock = sla.start_clock(
        s, sub.id, "review", "provider", provider, at, working_days=sla.REVIEW_WORKING_DAYS
    )
    _note(
        s, sub, "review.requested", f"provider:{provider}",
        urgency=sub.urgency, due=sla.show(clock.due_at, clock.provisional),
    )  # fmt: skip


def _request_joint_review(
    s: Session, sub: Subscription, at: dt.datetime, departments: Sequence[str]
) -> None:
    """A joint resource's review (``exchange.workflow.joint``): a pending part, a 5-working-
    day clock and the request in the outbox of each source provider."""
    for i, department in enumerate(departments, 1):
        kind = clock_kind(i)
        s.add(JointReview(subscription_id=sub.id, department_code=department, clock_kind=kind,
                          decision=PENDING, timed_out=False))  # fmt: skip
        clock = sla.start_clock(
            s, sub.id, kind, "provider", department, at, working_days=sla.REVIEW_WORKING_DAYS
        )
        notifications.notify(
            s, "review.requested", f"provider:{department}",
            {"resource": sub.resource_code, "state": sub.status, "urgency": sub.urgency,
             "joint": list(departments), "due": sla.show(clock.due_at, clock.provisional)},
            key=f"review.requested:{sub.id}:{department}", subscription_id=sub.id,
        )  # fmt: skip


def _start_delivery(s: Session, sub: Subscription, at: dt.datetime, requester: str) -> None:
    """001: delivered within 3 working days of the request (unconditional) or the approval;
    the requester is told what was granted."""
    anchor = sub.applied_at if sub.share == "unconditional" and sub.applied_at else at
    clock = sla.start_clock(
        s, sub.id, "delivery", "platform", PLATFORM, anchor,
        working_days=sla.DELIVERY_WORKING_DAYS,
    )  # fmt: skip
    _note(
        s, sub, "subscription.approved", f"requester:{requester}",
        fields=sub.fields, delivery_due=sla.show(clock.due_at, clock.provisional),
        valid_until=str(sub.valid_until),
    )  # fmt: skip


def _cancel_clocks(
    s: Session, subscription_id: int, at: dt.datetime, keep: str | None = None
) -> None:
    """Cancel every open clock of the subscription but the ``keep`` kind."""
    for clock in sla.open_clocks(s, subscription_id):
        if clock.kind != keep:
            sla.stop_clock(s, subscription_id, clock.kind, at, cancelled=True)


AUTO = "auto-completed: "


def reason_is_auto(reason: str | None) -> bool:
    return bool(reason and reason.startswith(AUTO))


def _stop_auto(s: Session, subscription_id: int, kind: str, at: dt.datetime, auto: bool) -> None:
    clock = sla.stop_clock(s, subscription_id, kind, at)
    if clock is not None and auto:
        clock.outcome = "auto"
