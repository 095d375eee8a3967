"""The hash chain of the audit log: every state change and delivery appends one event.

hash = sha256(prev_hash + canonical JSON of the event), so altering any stored event breaks
every later link. Appending takes no lock: ``append``/``append_many`` insert the events
unchained (``seq``, ``prev_hash`` and ``hash`` NULL) in the caller's transaction, and the
sealer (``exchange.audit.seal``) links them in batches once that transaction has committed.
The chain runs in ``seq`` order; ``verify`` names its first broken link.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from exchange.kernel.clock import utcnow
from exchange.store.models import AuditEvent

GENESIS = "0" * 64
_AUDIT_TABLE = cast(sa.Table, AuditEvent.__table__)
_INSERT = sa.insert(_AUDIT_TABLE)
SUBJECT_MAX = 200  # AuditEvent.subject's column
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# What a session appended, for the sealer's after-commit hook (exchange.audit.seal).
APPENDED = "exchange.audit.appended"
FORCE_CHECKPOINT = "exchange.audit.checkpoint"


def bounded_subject(subject: str) -> str:
    """``subject`` as it can be stored on every dialect: control characters escaped (PostgreSQL
    refuses NUL) and cut to the column's length, so that writing the event cannot fail after
    the action it records (a long URL path, say)."""
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", subject)
    return text if len(text) <= SUBJECT_MAX else text[: SUBJECT_MAX - 1] + "…"


def canonical_event(
    at: dt.datetime, actor: str, kind: str, subject: str, payload: dict[str, Any]
) -> str:
    """The event as hashed: compact JSON with sorted keys of its stored values."""
    doc = {
        "at": at.isoformat(),
        "actor": actor,
        "kind": kind,
        "subject": subject,
        "payload": payload,
    }
    return json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def link(prev_hash: str, canonical: str) -> str:
    """An event's hash: sha256 hex of the previous hash followed by its canonical form."""
    return hashlib.sha256((prev_hash + canonical).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Event:
    """One event to append: what happened, to what, who did it."""

    kind: str
    subject: str
    payload: dict[str, Any]
    actor: str = "engine"


def append(
    session: Session,
    kind: str,
    subject: str,
    payload: dict[str, Any],
    actor: str = "engine",
    *,
    checkpoint: bool = False,
) -> None:
    """Append one event in the caller's transaction; with ``checkpoint``, the sealer writes
    a checkpoint once that transaction commits (the end of a run)."""
    append_many(session, [Event(kind, subject, payload, actor)], checkpoint=checkpoint)


def append_many(session: Session, events: list[Event], *, checkpoint: bool = False) -> None:
    """Append events, in order, in the caller's transaction. No lock is taken: they are
    chained after it commits (in the order of their ids), so concurrent appenders never wait
    on each other."""
    rows: list[dict[str, Any]] = []
    for e in events:
        rows.append(
            {"at": utcnow(), "actor": e.actor, "kind": e.kind,
             "subject": bounded_subject(e.subject),
             "payload": json.loads(json.dumps(e.payload, default=str))}
        )  # fmt: skip
    # A Core INSERT on the session's connection, not an ORM object (nor the ORM's bulk
    # insert, nor ``session.execute``'s ORM dispatch) per event: a batch of reads' events (the
    # API appends them together) costs one executemany, a single event one execute; nothing
    # reads these rows back as objects.
    if rows:
        session.connection().execute(_INSERT, rows[0] if len(rows) == 1 else rows)
        session.info[APPENDED] = session.info.get(APPENDED, 0) + len(rows)
    if checkpoint:
        session.info[FORCE_CHECKPOINT] = True


@dataclass(frozen=True)
class ChainCheck:
    """The result of verifying the chain: events checked and the first broken one, if any."""

    events: int
    broken_id: int | None = None
    reason: str = ""


def check_chain(session: Session) -> ChainCheck:
    """Recompute every link in ``seq`` order (events not chained yet are skipped); stop at
    the first that does not match. The chain alone: ``exchange.audit.verify`` checks the
    checkpoints and the witness too."""
    prev = GENESIS
    n = 0
    chained = sa.select(AuditEvent).where(AuditEvent.seq.is_not(None)).order_by(AuditEvent.seq)
    for ev in session.execute(chained).scalars():
        n += 1
        if ev.prev_hash != prev:
            return ChainCheck(n, ev.id, "its prev_hash does not match the previous event's hash")
        expected = link(prev, canonical_event(ev.at, ev.actor, ev.kind, ev.subject, ev.payload))
        if ev.hash != expected:
            return ChainCheck(n, ev.id, "its content does not match its hash")
        prev = expected
    return ChainCheck(n)
