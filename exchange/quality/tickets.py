"""Quality tickets: flag → quarantine → review → handle (source document 004 §9d).

Each run with bad rows (or a held-back delivery, or stale data) opens a ticket for the
provider, or updates the one still open: counts by rule, sample keys, findings. The provider
answers within 3 working days — fixed at the source, accepted as correct, or will not fix, with
a reason — and the platform closes it. Deadlines are on the project's one working-day calendar.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from exchange import audit
from exchange.catalog.model import Resource
from exchange.kernel.clock import utcnow
from exchange.kernel.errors import BadInput, NotFound
from exchange.kernel.workdays import add_working_days
from exchange.quality.access import PLATFORM, require_admin, require_provider
from exchange.quality.models import QualityTicket
from exchange.quality.retention import scrub_after_commit
from exchange.workflow.users import Principal
from exchange.workspace import Workspace

ANSWER_DAYS = 3
RESOLUTIONS = ("fixed_at_source", "accepted", "will_not_fix")
SAMPLE_KEYS = 10
PLATFORM_ACTOR = PLATFORM.name  # no user named: the platform itself (the demo, a test)


def note_run(
    s: Session,
    resource: Resource,
    run_id: str,
    counts: dict[str, int],
    rows: int,
    sample_keys: Sequence[str],
    findings: Sequence[str],
) -> QualityTicket:
    """Open a ticket for this run's findings, or add them to the resource's open ticket.
    Noting the same run twice changes nothing (a redone validate step)."""
    ticket = s.execute(
        sa.select(QualityTicket)
        .where(QualityTicket.resource_code == resource.code, QualityTicket.status == "open")
        .order_by(QualityTicket.id.desc())
        .limit(1)
    ).scalar()
    now = utcnow()
    if ticket is None:
        due = add_working_days(now, ANSWER_DAYS)
        ticket = QualityTicket(
            resource_code=resource.code,
            provider=resource.provider,
            status="open",
            opened_at=now,
            due_at=due.utc,
            due_provisional=due.provisional,
            runs=[],
            counts={},
            sample_keys=[],
            findings=[],
            rows=0,
        )
        s.add(ticket)
        kind = "quality.ticket.opened"
    elif run_id in ticket.runs:
        return ticket
    else:
        kind = "quality.ticket.updated"
    merged = dict(ticket.counts)
    for rule, n in counts.items():
        merged[rule] = merged.get(rule, 0) + n
    ticket.counts = merged
    ticket.runs = [*ticket.runs, run_id]
    ticket.rows += rows
    ticket.sample_keys = [*ticket.sample_keys, *sample_keys][-SAMPLE_KEYS:]
    ticket.findings = [*ticket.findings, *findings][-20:]
    ticket.updated_at = now
    s.flush()
    audit.append(
        s,
        kind,
        f"ticket:{ticket.id}",
        {
            "resource": resource.code,
            "run": run_id,
            "rows": rows,
            "counts": counts,
            "findings": list(findings),
            "due": ticket.due_at,
        },
    )
    return ticket


def list_tickets(
    s: Session,
    resource_code: str | None = None,
    *,
    status: str | None = None,
    overdue_at: dt.datetime | None = None,
) -> list[QualityTicket]:
    """Tickets, newest first; ``overdue_at`` keeps the open ones past their deadline then."""
    q = sa.select(QualityTicket).order_by(QualityTicket.id.desc())
    if resource_code:
        q = q.where(QualityTicket.resource_code == resource_code)
    if status:
        q = q.where(QualityTicket.status == status)
    if overdue_at is not None:
        q = q.where(QualityTicket.status == "open", QualityTicket.due_at < overdue_at)
    return list(s.execute(q).scalars())


def overdue(ticket: QualityTicket, now: dt.datetime | None = None) -> bool:
    """Open after its deadline (times are naive UTC, as in the store)."""
    return ticket.status == "open" and (now or utcnow()) > ticket.due_at


def _get(s: Session, ticket_id: int) -> QualityTicket:
    ticket = s.get(QualityTicket, ticket_id)
    if ticket is None:
        raise NotFound(f"no quality ticket {ticket_id}")
    return ticket


def checked_answer(resolution: str, reason: str) -> str:
    """A provider's answer (to a ticket or an error report) is one of the resolutions and
    says why; return the reason, trimmed."""
    if resolution not in RESOLUTIONS:
        raise BadInput(f"resolution must be one of {', '.join(RESOLUTIONS)}, not {resolution!r}")
    if not reason.strip():
        raise BadInput("an answer needs a reason")
    return reason.strip()


def answer_ticket(
    s: Session, ticket_id: int, resolution: str, reason: str, actor: str = PLATFORM_ACTOR
) -> QualityTicket:
    """The provider's answer: fixed at the source, accepted as correct, or will not fix.
    ``actor`` is the user who answers (``answer_as`` checks that it may)."""
    reason = checked_answer(resolution, reason)
    ticket = _get(s, ticket_id)
    if ticket.status != "open":
        raise BadInput(f"ticket {ticket_id} is {ticket.status}; only an open ticket is answered")
    now = utcnow()
    ticket.status, ticket.resolution, ticket.answer = "answered", resolution, reason
    ticket.answered_at, ticket.answered_by, ticket.updated_at = now, actor, now
    audit.append(
        s,
        "quality.ticket.answered",
        f"ticket:{ticket.id}",
        {"resolution": resolution, "reason": ticket.answer, "late": now > ticket.due_at},
        actor,
    )
    return ticket


def close_ticket(s: Session, ticket_id: int, actor: str = PLATFORM_ACTOR) -> QualityTicket:
    """Close an answered ticket (the platform's review of the answer). Once the close commits,
    the review of its finished runs that no other unclosed ticket lists is over: their
    quarantine files keep only the masked reasons and their extract and valid copies are
    removed (the raw rows were kept for the review: ``exchange.quality.retention``). A file
    that cannot be rewritten then is logged; the close stands."""
    ticket = _get(s, ticket_id)
    if ticket.status != "answered":
        raise BadInput(f"ticket {ticket_id} is {ticket.status}; answer it before closing")
    ticket.status, ticket.closed_at = "closed", utcnow()
    ticket.updated_at = ticket.closed_at
    audit.append(s, "quality.ticket.closed", f"ticket:{ticket.id}", {}, actor)
    s.flush()  # the closed status is what ``scrub_after_commit`` reads
    scrub_after_commit(s, ticket.runs)
    return ticket


def answer_as(
    ws: Workspace, who: Principal, ticket_id: int, resolution: str, reason: str
) -> QualityTicket:
    """``answer_ticket`` by ``who``, who must be of the resource's provider department (or an
    admin); checked before the answer itself, and audited under ``who``'s name."""
    with ws.store.session() as s:
        ticket = _get(s, ticket_id)
        require_provider(ws, who, ticket.resource_code, f"answer ticket {ticket_id}")
        return answer_ticket(s, ticket_id, resolution, reason, who.name)


def close_as(ws: Workspace, who: Principal, ticket_id: int) -> QualityTicket:
    """``close_ticket`` by ``who``, who must be a platform admin (the platform reviews the
    provider's answer and closes the ticket)."""
    require_admin(who, f"close ticket {ticket_id}")
    with ws.store.session() as s:
        return close_ticket(s, ticket_id, who.name)
