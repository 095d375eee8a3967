"""Change and offline notices of a resource (003 §11): announced with at least 5 working days'
notice, sent to every subscriber through the outbox, applied by the housekeeping tick.

* ``announce``: a provider (of the resource's department) or a platform admin records a
  ``change`` (a description, optionally the fields concerned) or an ``offline`` notice with its
  effective date, which must be on or after the 5th working day after the notice on the one
  calendar (``exchange.kernel.workdays``); an earlier date is refused naming the earliest one.
  Offline is refused while the resource has a deliverable subscription and no replacement
  resource is named.
* From its effective date an offline resource delivers nothing (``offline_on`` is part of
  ``exchange.workflow.engine.deliverable``) and, from the notice on, takes no new
  subscription; subscribers of a replaced resource are offered the replacement.
* ``apply_due`` (the tick) records each notice applied on its effective day and tells the
  subscribers; ``refresh_provisional`` recomputes the earliest date of a notice counted into a
  year the calendar did not know, and postpones a pending notice the real schedule makes too
  early.
* ``effective_change_notice`` is what a schema change that breaks subscribers waits for.

Every step is audited.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.orm import Session

from exchange import audit
from exchange.kernel.clock import stored_day_start, today, utcnow
from exchange.kernel.errors import BadInput, Forbidden
from exchange.kernel.workdays import WorkCalendar, default_calendar
from exchange.store.locks import locked_session
from exchange.store.models import Subscription
from exchange.workflow import notifications
from exchange.workflow import states as st
from exchange.workflow.engine import deliverable
from exchange.workflow.notices_models import (
    CHANGE,
    KINDS,
    OFFLINE,
    ResourceNotice,
    offline_notice,
    offline_on,
)
from exchange.workflow.users import Principal
from exchange.workspace import Workspace

NOTICE_WORKING_DAYS = 5  # 003 §11


class Notice(BaseModel):
    """A notice as the CLI, the API and ``exchange status`` show it (dates Asia/Shanghai)."""

    id: int
    resource: str
    kind: str  # change | offline
    reason: str
    description: str | None
    fields: list[str] | None
    replacement: str | None
    effective_on: dt.date
    earliest_on: dt.date
    earliest_provisional: bool  # counted into a year whose official schedule is not loaded
    announced_at: str
    announced_by: str
    applied_at: str | None
    state: str  # pending | effective (its date reached) | applied (the tick recorded it)

    @classmethod
    def of(cls, n: ResourceNotice, day: dt.date | None = None) -> Notice:
        from exchange.workflow.sla import show

        if n.applied_at is not None:
            state = "applied"
        elif n.effective_on <= (day or today()):
            state = "effective"
        else:
            state = "pending"
        return cls(
            id=n.id, resource=n.resource_code, kind=n.kind, reason=n.reason,
            description=n.description, fields=n.fields, replacement=n.replacement,
            effective_on=n.effective_on, earliest_on=n.earliest_on,
            earliest_provisional=n.earliest_provisional, announced_at=show(n.announced_at),
            announced_by=n.announced_by,
            applied_at=show(n.applied_at) if n.applied_at is not None else None, state=state,
        )  # fmt: skip

    def line(self) -> str:
        """One line of plain text: what happens to the resource, when, and why."""
        what = "goes offline" if self.kind == OFFLINE else "changes"
        if self.state != "pending":
            what = "offline" if self.kind == OFFLINE else "changed"
        text = f"notice {self.id}: resource {self.resource} {what} on {self.effective_on}"
        if self.replacement:
            text += f", replaced by {self.replacement}"
        if self.description:
            text += f": {self.description}"
        if self.fields:
            text += f" (fields {', '.join(self.fields)})"
        text += f" [{self.state}]; reason: {self.reason}"
        return text + f"; by {self.announced_by} at {self.announced_at}"


def earliest_effective(
    at: dt.datetime, calendar: WorkCalendar | None = None
) -> tuple[dt.date, bool]:
    """The first allowed effective date of a notice given at ``at`` (naive UTC), and whether
    it is provisional: the 5th working day after the notice's day."""
    deadline = (calendar or default_calendar()).add_working_days(at, NOTICE_WORKING_DAYS)
    return deadline.at.date(), deadline.provisional


def _subscribers(s: Session, code: str) -> list[Subscription]:
    """Every subscription of the resource that is not over (pending ones too)."""
    return list(
        s.execute(
            sa.select(Subscription)
            .where(Subscription.resource_code == code, Subscription.status.not_in(sorted(st.FINAL)))
            .order_by(Subscription.id)
        ).scalars()
    )


def _recipient(sub: Subscription) -> str:
    return f"requester:{sub.department_code or sub.subscriber_node}"


def _require_announcer(ws: Workspace, who: Principal, code: str) -> None:
    if who.role == "admin":
        return
    provider = ws.catalog.node(ws.catalog.resource(code).provider).department or None
    if who.role == "provider" and provider is not None and who.department == provider:
        return
    by = ws.catalog.describe_department(provider) if provider else "no department"
    raise Forbidden(
        f"{who.describe()} may not announce a notice of resource {code}: it is provided by "
        f"{by} (its provider or a platform admin announces)"
    )


def _offline_notice(s: Session, code: str) -> ResourceNotice | None:
    return s.execute(
        sa.select(ResourceNotice)
        .where(ResourceNotice.resource_code == code, ResourceNotice.kind == OFFLINE)
        .order_by(ResourceNotice.id)
        .limit(1)
    ).scalar()


def _check_replacement(s: Session, ws: Workspace, code: str, replacement: str) -> None:
    if replacement == code:
        raise BadInput(f"--replacement: resource {code} cannot replace itself")
    ws.catalog.resource(replacement)  # NotFound names it
    gone = _offline_notice(s, replacement)
    if gone is not None:
        raise BadInput(
            f"--replacement: resource {replacement} goes offline itself on "
            f"{gone.effective_on} (notice {gone.id})"
        )


def announce(
    ws: Workspace,
    who: Principal,
    kind: str,
    code: str,
    effective_on: dt.date,
    reason: str,
    *,
    replacement: str | None = None,
    description: str | None = None,
    fields: Sequence[str] | None = None,
    now: dt.datetime | None = None,
) -> Notice:
    """Record a ``change`` or ``offline`` notice of resource ``code`` and tell its subscribers
    (see the module docstring for what is refused)."""
    now = now or utcnow()
    if kind not in KINDS:
        raise BadInput(f"notice kind {kind!r} is not one of {', '.join(KINDS)}")
    resource = ws.catalog.resource(code)
    _require_announcer(ws, who, code)
    if not reason.strip():
        raise BadInput("--reason: say why the resource changes or goes offline (003 §11)")
    if kind == CHANGE:
        if replacement is not None:
            raise BadInput("--replacement: only an offline notice names a replacement resource")
        if not (description or "").strip():
            raise BadInput("--description: a change notice says what changes")
        unknown = [f for f in fields or () if f not in resource.field_names]
        if unknown:
            raise BadInput(
                f"--fields: resource {code} has no field {', '.join(map(repr, unknown))} "
                f"(fields: {', '.join(resource.field_names)})"
            )
    elif fields or description:
        raise BadInput("--fields, --description: only a change notice describes a change")
    earliest, provisional = earliest_effective(now)
    if effective_on < earliest:
        marked = " (provisional: the calendar does not know that year yet)" if provisional else ""
        raise BadInput(
            f"--effective {effective_on}: a notice needs {NOTICE_WORKING_DAYS} working days; "
            f"the earliest allowed date is {earliest}{marked}"
        )
    with locked_session(ws.store) as s:
        if kind == OFFLINE:
            _check_offline(s, ws, code, replacement, today(now))
        n = ResourceNotice(
            resource_code=code, kind=kind, reason=reason.strip(),
            description=(description or "").strip() or None,
            fields=[f for f in resource.field_names if f in (fields or ())] or None,
            replacement=replacement, effective_on=effective_on, earliest_on=earliest,
            earliest_provisional=provisional, announced_at=now, announced_by=who.name,
        )  # fmt: skip
        s.add(n)
        s.flush()
        view = Notice.of(n, today(now))
        audit.append(
            s, f"resource.{kind}_announced", f"resource:{code}",
            {"notice": n.id, "effective_on": effective_on, "reason": n.reason,
             "replacement": replacement, "description": n.description, "fields": n.fields,
             "earliest_on": earliest, "provisional": provisional},
            actor=who.name,
        )  # fmt: skip
        for sub in _subscribers(s, code):
            notifications.notify(
                s, f"resource.{kind}_notice", _recipient(sub),
                {"resource": code, "notice": n.id, "effective_on": str(effective_on),
                 "reason": n.reason, "replacement": replacement,
                 "description": n.description, "fields": n.fields},
                key=f"resource.notice:{n.id}:{sub.id}", subscription_id=sub.id,
            )  # fmt: skip
        return view


def _check_offline(
    s: Session, ws: Workspace, code: str, replacement: str | None, day: dt.date
) -> None:
    earlier = _offline_notice(s, code)
    if earlier is not None:
        raise BadInput(
            f"resource {code} already goes offline on {earlier.effective_on} (notice {earlier.id})"
        )
    if replacement is not None:
        _check_replacement(s, ws, code, replacement)
        return
    served = list(
        s.execute(
            sa.select(Subscription.id)
            .where(Subscription.resource_code == code, deliverable(day))
            .order_by(Subscription.id)
        ).scalars()
    )
    if served:
        ids = ", ".join(map(str, served))
        raise BadInput(
            f"resource {code} cannot go offline: it is delivered to subscription(s) {ids} "
            "and no replacement is named (give --replacement CODE, or end those subscriptions "
            "first)"
        )


def list_notices(ws: Workspace, code: str | None = None) -> list[Notice]:
    """The notices (of one resource, or of all), newest effective date first."""
    if code is not None:
        ws.catalog.resource(code)
    day = today()
    with ws.store.session() as s:
        q = sa.select(ResourceNotice).order_by(
            ResourceNotice.effective_on.desc(), ResourceNotice.id.desc()
        )
        if code is not None:
            q = q.where(ResourceNotice.resource_code == code)
        return [Notice.of(n, day) for n in s.execute(q).scalars()]


def effective_change_notice(session: Session, resource: str, on: dt.date) -> Notice | None:
    """The latest change notice of ``resource`` in effect on ``on`` (its date reached), or
    None: a change that breaks subscribers is held until there is one."""
    n = session.execute(
        sa.select(ResourceNotice)
        .where(
            ResourceNotice.resource_code == resource,
            ResourceNotice.kind == CHANGE,
            ResourceNotice.effective_on <= on,
        )
        .order_by(ResourceNotice.effective_on.desc(), ResourceNotice.id.desc())
        .limit(1)
    ).scalar()
    return Notice.of(n, on) if n is not None else None


def offline_since(s: Session, code: str, day: dt.date) -> ResourceNotice | None:
    """The offline notice that has taken ``code`` offline by ``day``, or None."""
    return s.execute(offline_notice(code, day)).scalar()


def offline_reason(s: Session, code: str, day: dt.date) -> str | None:
    """Why ``code`` delivers nothing on ``day`` (an offline notice in effect), or None."""
    n = offline_since(s, code, day)
    if n is None:
        return None
    instead = f"; its subscribers are offered {n.replacement}" if n.replacement else ""
    return f"resource {code} is offline since {n.effective_on} (notice {n.id}: {n.reason}){instead}"


def run_note(ws: Workspace, code: str) -> str | None:
    """What a run of an offline resource says: why nobody receives it."""
    with ws.store.session() as s:
        why = offline_reason(s, code, today())
    return f"{why}: no subscription is delivered" if why else None


def check_subscribable(ws: Workspace, code: str) -> None:
    """Refuse a new subscription to a resource an offline notice takes (or took) offline."""
    with ws.store.session() as s:
        n = _offline_notice(s, code)
        if n is None:
            return
        instead = f"; subscribe to its replacement {n.replacement}" if n.replacement else ""
        tense = "went" if n.effective_on <= today() else "goes"
        raise BadInput(
            f"resource {code} cannot be subscribed: it {tense} offline on {n.effective_on} "
            f"(notice {n.id}){instead}"
        )


def apply_due(s: Session, now: dt.datetime) -> int:
    """The tick: record every notice whose effective day has come as applied (at 00:00 of
    that day, or at the notice if later) and tell the subscribers; subscribers of a resource
    taken offline with a replacement are offered it. Returns how many were applied."""
    day = today(now)
    due = s.execute(
        sa.select(ResourceNotice)
        .where(ResourceNotice.applied_at.is_(None), ResourceNotice.effective_on <= day)
        .order_by(ResourceNotice.effective_on, ResourceNotice.id)
    ).scalars()
    applied = 0
    for n in due:
        n.applied_at = max(stored_day_start(n.effective_on), n.announced_at)
        subs = _subscribers(s, n.resource_code)
        audit.append(
            s, f"resource.{n.kind}_applied", f"resource:{n.resource_code}",
            {"notice": n.id, "effective_on": n.effective_on, "replacement": n.replacement,
             "subscriptions": [x.id for x in subs]},
            actor="housekeeping",
        )  # fmt: skip
        for sub in subs:
            body = {"resource": n.resource_code, "notice": n.id,
                    "effective_on": str(n.effective_on), "reason": n.reason}  # fmt: skip
            if n.kind == CHANGE:
                kind = "resource.changed"
                body |= {"description": n.description, "fields": n.fields}
            elif n.replacement:
                kind = "resource.replacement_offered"
                body |= {"replacement": n.replacement,
                         "offer": f"resource {n.resource_code} is offline: apply for "
                                  f"{n.replacement} instead"}  # fmt: skip
            else:
                kind = "resource.offline"
            notifications.notify(
                s, kind, _recipient(sub), body,
                key=f"{kind}:{n.id}:{sub.id}", subscription_id=sub.id,
            )  # fmt: skip
        applied += 1
    return applied


def refresh_provisional(s: Session, calendar: WorkCalendar | None = None) -> int:
    """Recompute the earliest date of notices counted into a year the calendar did not know;
    a pending notice that the loaded schedule makes too early is postponed to the earliest
    allowed date (audited, and its subscribers told). Returns how many changed."""
    cal = calendar or default_calendar()
    changed = 0
    for n in s.execute(
        sa.select(ResourceNotice)
        .where(ResourceNotice.earliest_provisional.is_(True))
        .order_by(ResourceNotice.id)
    ).scalars():
        earliest, provisional = earliest_effective(n.announced_at, cal)
        if (earliest, provisional) == (n.earliest_on, n.earliest_provisional):
            continue
        n.earliest_on, n.earliest_provisional = earliest, provisional
        changed += 1
        if n.applied_at is None and n.effective_on < earliest:
            was, n.effective_on = n.effective_on, earliest
            audit.append(
                s, "resource.notice_postponed", f"resource:{n.resource_code}",
                {"notice": n.id, "from": was, "to": earliest,
                 "why": "the loaded calendar makes the notice shorter than "
                        f"{NOTICE_WORKING_DAYS} working days"},
                actor="housekeeping",
            )  # fmt: skip
            for sub in _subscribers(s, n.resource_code):
                notifications.notify(
                    s, "resource.notice_postponed", _recipient(sub),
                    {"resource": n.resource_code, "notice": n.id, "from": str(was),
                     "effective_on": str(earliest)},
                    key=f"resource.notice_postponed:{n.id}:{earliest}:{sub.id}",
                    subscription_id=sub.id,
                )  # fmt: skip
    return changed


def offline_codes(s: Session, day: dt.date) -> set[str]:
    """The resources offline on ``day``."""
    return set(s.execute(offline_on(day)).scalars())
