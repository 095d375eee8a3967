"""The hash-chained audit log: every state change and delivery appends one event.

hash = sha256(prev_hash + canonical JSON of the event), so altering any stored event breaks
every later link; ``verify`` names the first broken one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from exchange.kernel.clock import utcnow
from exchange.store.locks import serialize
from exchange.store.models import AuditEvent

GENESIS = "0" * 64


def _canonical(
    at: dt.datetime, actor: str, kind: str, subject: str, payload: dict[str, Any]
) -> str:
    doc = {
        "at": at.isoformat(),
        "actor": actor,
        "kind": kind,
        "subject": subject,
        "payload": payload,
    }
    return json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def _link(prev_hash: str, canonical: str) -> str:
    return hashlib.sha256((prev_hash + canonical).encode("utf-8")).hexdigest()


def append(
    session: Session, kind: str, subject: str, payload: dict[str, Any], actor: str = "engine"
) -> None:
    """Append one event after the current head of the chain (in the caller's transaction)."""
    # Serialise appenders: two that read the same head would fork the chain (the unique
    # prev_hash turns a fork into an error, but the second writer should wait, not fail).
    serialize(session)
    head = session.execute(
        sa.select(AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1).with_for_update()
    ).scalar()
    prev = head or GENESIS
    at = utcnow()
    payload = json.loads(json.dumps(payload, default=str))
    event = AuditEvent(
        at=at,
        actor=actor,
        kind=kind,
        subject=subject,
        payload=payload,
        prev_hash=prev,
        hash=_link(prev, _canonical(at, actor, kind, subject, payload)),
    )
    session.add(event)
    session.flush()


@dataclass(frozen=True)
class ChainCheck:
    """The result of verifying the chain: events checked and the first broken one, if any."""

    events: int
    broken_id: int | None = None
    reason: str = ""


def verify(session: Session) -> ChainCheck:
    """Recompute every link in order; stop at the first that does not match."""
    prev = GENESIS
    n = 0
    for ev in session.execute(sa.select(AuditEvent).order_by(AuditEvent.id)).scalars():
        n += 1
        if ev.prev_hash != prev:
            return ChainCheck(n, ev.id, "its prev_hash does not match the previous event's hash")
        expected = _link(prev, _canonical(ev.at, ev.actor, ev.kind, ev.subject, ev.payload))
        if ev.hash != expected:
            return ChainCheck(n, ev.id, "its content does not match its hash")
        prev = ev.hash
    return ChainCheck(n)
