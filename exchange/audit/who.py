"""Who received or called what, when: the deliveries and gateway calls of the audit log for one
resource, subscription or department, over a time window.

It reads two things. The audit log's ``delivery.*`` events (a run's rows or files delivered to,
failed for, held back from or skipped for a subscription) and ``gateway.call`` events (one per
call of the API gateway, grouped here per Asia/Shanghai day, operation and status). And the
subscriptions' rows, for what a delivery event does not carry itself: the resource and the
department of its subscription.

The window is read by the index on the events' time (``ix_audit_events_at``), streamed; a
gateway call is recorded when the gateway's flusher stores it, up to ``GATEWAY_LAG`` after it
was made (never before), so the range reaches that much past the window's end, and a call
counts by its own time, which its event carries.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from exchange.kernel.clock import local_naive
from exchange.kernel.errors import BadInput
from exchange.store.models import AuditEvent, Subscription

DELIVERY_KINDS = ("delivery.delivered", "delivery.failed", "delivery.held", "delivery.skipped")
GATEWAY_CALL = "gateway.call"
GATEWAY_LAG = dt.timedelta(hours=1)
_BATCH = 1000


@dataclass(frozen=True)
class Subject:
    """What ``who`` is asked about: a ``resource`` code, a ``subscription`` id or a
    ``department`` code."""

    kind: str
    value: str

    def __str__(self) -> str:
        return f"{self.kind} {self.value}"


@dataclass(frozen=True)
class Receipt:
    """One answer: a delivery of a run to a subscription, or a group of gateway calls (one
    subscription's calls of one operation with one status on one Shanghai day).

    Times are stored (naive UTC); ``last_at`` is the group's last call (a delivery: ``at``)."""

    at: dt.datetime
    last_at: dt.datetime
    channel: str  # table | files | api
    status: str  # delivered, failed, held, skipped; for calls the HTTP status and outcome
    subscription_id: int | None
    resource: str
    department: str
    department_name: str
    node: str = ""
    target: str = ""  # the table or directory delivered into
    run: str = ""
    rows: int = 0  # rows merged, files put or deleted, or calls answered
    operation: str = ""
    calls: int = 0
    bytes: int = 0
    code_id: int | None = None
    actor: str = ""
    error: str = ""

    @property
    def how(self) -> str:
        """What happened, in words: ``delivered 3,000 rows in run R`` or ``GET by_uscc: …``."""
        if self.channel == "api":
            plural = "" if self.calls == 1 else "s"
            return f"{self.calls:,} call{plural} of {self.operation}: {self.status}"
        unit = "files" if self.channel == "files" else "rows"
        if self.status == "delivered":
            said = f"delivered {self.rows:,} {unit} in run {self.run}"
        else:
            said = f"{self.status} in run {self.run}"
        return f"{said}: {self.error}" if self.error else said

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat() + "Z",
            "last_at": self.last_at.isoformat() + "Z",
            "at_shanghai": local_naive(self.at).isoformat(),
            "channel": self.channel,
            "status": self.status,
            "subscription_id": self.subscription_id,
            "resource": self.resource,
            "department": self.department,
            "department_name": self.department_name,
            "node": self.node,
            "target": self.target,
            "run": self.run,
            "rows": self.rows,
            "operation": self.operation,
            "calls": self.calls,
            "bytes": self.bytes,
            "code_id": self.code_id,
            "actor": self.actor,
            "error": self.error,
            "how": self.how,
        }


@dataclass(frozen=True)
class WhoReport:
    """The answers for a subject over ``[since, until)`` (stored times), oldest first, and how
    many audit events were read to find them."""

    subject: Subject
    since: dt.datetime
    until: dt.datetime
    receipts: list[Receipt] = field(default_factory=list)
    events_read: int = 0


def parse_subject(text: str, departments: Mapping[str, str]) -> Subject:
    """``subscription:N`` or a bare number; ``department:CODE``, a declared department's code
    or its name; ``resource:CODE`` or any other text, a resource code."""
    text = text.strip()
    if not text:
        raise BadInput("who needs a resource code, a subscription (subscription:N) or a department")
    prefix, _, rest = text.partition(":")
    if prefix in ("subscription", "resource", "department") and rest.strip():
        text, kind = rest.strip(), prefix
    elif text.isdigit():
        kind = "subscription"
    elif text in departments:
        kind = "department"
    else:
        named = [code for code, name in departments.items() if name == text]
        if named:
            return Subject("department", named[0])
        kind = "resource"
    if kind == "subscription" and not text.isdigit():
        raise BadInput(f"subscription {text!r} is not a subscription id (a whole number)")
    return Subject(kind, text)


@dataclass(frozen=True)
class _Sub:
    resource: str
    department: str
    department_name: str
    node: str


def who(
    session: Session,
    subject: Subject,
    since: dt.datetime,
    until: dt.datetime,
    departments: Mapping[str, str] | None = None,
) -> WhoReport:
    """Every delivery to and gateway call of ``subject`` in ``[since, until)`` (stored,
    naive UTC times), oldest first."""
    if since >= until:
        raise BadInput(f"--since {since} is not before --until {until}")
    names = dict(departments or {})
    subs = _subscriptions(session, subject)
    report = WhoReport(subject, since, until)
    query = sa.select(
        AuditEvent.id, AuditEvent.at, AuditEvent.actor, AuditEvent.kind, AuditEvent.subject,
        AuditEvent.payload,
    ).where(
        AuditEvent.at >= since, AuditEvent.at < until + GATEWAY_LAG, _narrowed(subject, subs)
    )  # fmt: skip
    deliveries: list[Receipt] = []
    calls: dict[tuple[Any, ...], Receipt] = {}
    read = 0
    for row in _stream(session, query.order_by(AuditEvent.at, AuditEvent.id)):
        read += 1
        payload = row.payload if isinstance(row.payload, dict) else {}
        if row.kind == GATEWAY_CALL:
            _add_call(calls, row, payload, subject, subs, names, since, until)
        elif since <= row.at < until:
            got = _delivery(row, payload, subs, names)
            if got is not None and _about(got, subject):
                deliveries.append(got)
    receipts = sorted([*deliveries, *calls.values()], key=lambda r: (r.at, r.channel))
    return replace(report, receipts=receipts, events_read=read)


def _stream(session: Session, query: sa.Select[Any]) -> Iterator[Any]:
    """Rows in batches (a server-side cursor on PostgreSQL): memory stays flat."""
    result = session.execute(query.execution_options(yield_per=_BATCH))
    yield from result


def _subscriptions(session: Session, subject: Subject) -> dict[int, _Sub]:
    """The subscriptions the subject covers, by the indexed columns of their rows."""
    cols = (
        Subscription.id, Subscription.resource_code, Subscription.department_code,
        Subscription.department_name, Subscription.subscriber_node,
    )  # fmt: skip
    if subject.kind == "subscription":
        where = Subscription.id == int(subject.value)
    elif subject.kind == "resource":
        where = Subscription.resource_code == subject.value
    else:
        where = Subscription.department_code == subject.value
    return {
        r.id: _Sub(
            r.resource_code,
            r.department_code or "",
            r.department_name or "",
            r.subscriber_node or "",
        )  # fmt: skip
        for r in session.execute(sa.select(*cols).where(where))
    }


def _narrowed(subject: Subject, subs: Mapping[int, _Sub]) -> sa.ColumnElement[bool]:
    """The events that may concern the subject: the deliveries to its subscriptions and the
    gateway calls of its resource, department or subscription's department (exact filtering
    on the calls' payload follows in Python: JSON is read differently on every dialect)."""
    delivered = sa.and_(
        AuditEvent.kind.in_(DELIVERY_KINDS),
        AuditEvent.subject.in_([f"subscription:{i}" for i in sorted(subs)]),
    )
    called: sa.ColumnElement[bool] = AuditEvent.kind == GATEWAY_CALL
    if subject.kind == "resource":
        called = sa.and_(
            called, AuditEvent.subject.startswith(f"/{subject.value}/", autoescape=True)
        )
    elif subject.kind == "department":
        called = sa.and_(called, AuditEvent.actor == f"department:{subject.value}")
    else:
        dept = next((s.department for s in subs.values() if s.department), None)
        if dept is not None:  # a call carries its department as the actor
            called = sa.and_(called, AuditEvent.actor == f"department:{dept}")
    return sa.or_(delivered, called) if subs else called


def _sub_id(subject: str) -> int | None:
    prefix, _, rest = subject.partition(":")
    return int(rest) if prefix == "subscription" and rest.isdigit() else None


def _delivery(
    row: Any, payload: dict[str, Any], subs: Mapping[int, _Sub], names: Mapping[str, str]
) -> Receipt | None:
    sid = _sub_id(row.subject)
    if sid is None:
        return None
    sub = subs.get(sid)
    # What the event carries wins over the subscription's row (a later event may carry more).
    resource = str(payload.get("resource") or (sub.resource if sub else ""))
    dept = str(payload.get("department") or (sub.department if sub else ""))
    target = str(payload.get("table") or "")
    node = str(payload.get("node") or (sub.node if sub else ""))
    return Receipt(
        at=row.at,
        last_at=row.at,
        channel="files" if target.startswith("/") else "table",
        status=row.kind.removeprefix("delivery."),
        subscription_id=sid,
        resource=resource,
        department=dept,
        department_name=names.get(dept) or (sub.department_name if sub else "") or dept,
        node=node,
        target=target,
        run=str(payload.get("run") or ""),
        rows=int(payload.get("rows") or 0),
        actor=row.actor,
        error=str(payload.get("error") or ""),
    )


def _about(r: Receipt, subject: Subject) -> bool:
    if subject.kind == "subscription":
        return str(r.subscription_id) == subject.value
    if subject.kind == "resource":
        return r.resource == subject.value
    return r.department == subject.value


def _add_call(
    groups: dict[tuple[Any, ...], Receipt],
    row: Any,
    payload: dict[str, Any],
    subject: Subject,
    subs: Mapping[int, _Sub],
    names: Mapping[str, str],
    since: dt.datetime,
    until: dt.datetime,
) -> None:
    """Count the call into its group if it concerns the subject and was made in the window
    (the call's own time, which the event carries, not when the flusher stored it)."""
    at = _call_at(payload.get("at")) or row.at
    if not since <= at < until:
        return
    sid = payload.get("subscription_id")
    sid = int(sid) if isinstance(sid, int) else None
    sub = subs.get(sid) if sid is not None else None
    dept = str(payload.get("department") or (sub.department if sub else ""))
    resource = str(payload.get("resource") or (sub.resource if sub else ""))
    status = f"{payload.get('status')} {payload.get('outcome') or ''}".strip()
    call = Receipt(
        at=at,
        last_at=at,
        channel="api",
        status=status,
        subscription_id=sid,
        resource=resource,
        department=dept,
        department_name=names.get(dept) or (sub.department_name if sub else "") or dept,
        operation=str(payload.get("operation") or ""),
        calls=1,
        rows=1,
        bytes=int(payload.get("bytes") or 0),
        code_id=payload.get("code_id") if isinstance(payload.get("code_id"), int) else None,
        actor=row.actor,
    )
    if not _about(call, subject):
        return
    key = (local_naive(at).date(), sid, dept, resource, call.operation, status, call.code_id)
    seen = groups.get(key)
    if seen is None:
        groups[key] = call
        return
    groups[key] = replace(
        seen,
        at=min(seen.at, at),
        last_at=max(seen.last_at, at),
        calls=seen.calls + 1,
        rows=seen.rows + 1,
        bytes=seen.bytes + call.bytes,
    )


def _call_at(text: object) -> dt.datetime | None:
    """The call's time in the event (ISO, stored UTC); None if it has none readable."""
    if not isinstance(text, str):
        return None
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return t.replace(tzinfo=None) if t.tzinfo is None else t.astimezone(dt.UTC).replace(tzinfo=None)
