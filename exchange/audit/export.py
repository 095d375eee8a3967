"""The audit log exported for an outside auditor: JSON lines carrying every proof needed to
verify it without the engine's code (docs/tools/verify_audit_export.py does, with Python's
standard library and ``cryptography``; docs/audit.md specifies the format).

Line 1 is a header (installation, public key, window, the hash and signature schemes, counts);
then the events in chain order, each whole checkpoint's events followed by the checkpoint that
signs them, so that every exported event is proven by a signed head; events chained after the
last checkpoint come last, marked ``"sealed": false``. When the first exported event is not the
log's first, an ``anchor`` line before it is the checkpoint just before the range: its head hash
is the first event's prev_hash and its signature the first checkpoint's prev_signature.

The export reads keyset pages of the chain (by ``seq``, unique) and of the checkpoints, so its
memory stays flat however long the window.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO

import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.orm import Session

from exchange.audit.checkpoints import Checkpoint, iso_z
from exchange.audit.keys import key_id
from exchange.kernel.clock import utcnow
from exchange.kernel.errors import BadInput
from exchange.store.models import AuditCheckpoint, AuditEvent

FORMAT = 1
_PAGE = 1000
HASH_SCHEME = (
    "hash = sha256 hex of UTF-8 (prev_hash + canonical), canonical = JSON of "
    '{"at","actor","kind","subject","payload"} of the event as exported, keys sorted, '
    'separators (",", ":"), non-ASCII unescaped; the first event of the log has '
    "prev_hash \"0\"*64; each event's prev_hash is the previous event's hash"
)
SIGNATURE_SCHEME = (
    "signature = base64 (standard, padded) of the Ed25519 signature, by public_key, over "
    "the UTF-8 JSON of the checkpoint's document (its line without type and signature), keys "
    'sorted, separators (",", ":"), non-ASCII unescaped; key_id = the first 16 hex of '
    "sha256 of the raw 32-byte public key"
)


@dataclass(frozen=True)
class ExportSummary:
    """What an export holds: events (of which ``unsealed`` after the last checkpoint), whole
    checkpoints, the chain's range and whether an anchor checkpoint precedes it."""

    events: int
    checkpoints: int
    unsealed: int
    first_seq: int | None
    last_seq: int | None
    anchored: bool
    unchained: int


@dataclass(frozen=True)
class _Range:
    start: int
    end: int
    anchor: Checkpoint | None
    checkpoints: int
    sealed_to: int  # the last checkpoint's seq_to within the range (start - 1: none)


def export(
    session: Session,
    out: TextIO,
    *,
    since: dt.datetime,
    until: dt.datetime,
    installation: str,
    public_key: Ed25519PublicKey | None,
) -> ExportSummary:
    """Write the export of the events of ``[since, until)`` (stored, naive UTC) to ``out``:
    the whole checkpoints holding them, and the unsealed events after the last one.
    ``public_key`` is None only while no checkpoint was ever signed (no key exists yet)."""
    if since >= until:
        raise BadInput(f"--since {since} is not before --until {until}")
    window = _window(session, since, until)
    rng = None if window is None else _range(session, installation, *window)
    unchained = _unchained(session, since, until)
    header: dict[str, Any] = {
        "type": "header",
        "format": FORMAT,
        "installation": installation,
        "key_id": key_id(public_key) if public_key else None,
        "public_key": _pem(public_key) if public_key else None,
        "since": iso_z(since),
        "until": iso_z(until),
        "exported_at": iso_z(utcnow()),
        "hash": HASH_SCHEME,
        "signature": SIGNATURE_SCHEME,
        "genesis": "0" * 64,
        "first_seq": rng.start if rng else None,
        "last_seq": rng.end if rng else None,
        "events": rng.end - rng.start + 1 if rng else 0,
        "checkpoints": rng.checkpoints if rng else 0,
        "unsealed": rng.end - rng.sealed_to if rng else 0,
        "unchained": unchained,
    }
    _write(out, header)
    if rng is None:
        return ExportSummary(0, 0, 0, None, None, False, unchained)
    if rng.anchor is not None:
        _write(out, {"type": "anchor", **rng.anchor.line()})
    events = checkpoints = 0
    pos = rng.start
    for cp in _checkpoints(session, installation, rng.start, rng.sealed_to):
        for line in _events(session, cp.seq_from, cp.seq_to, sealed=True):
            _write(out, line)
            events += 1
        _write(out, {"type": "checkpoint", **cp.line()})
        checkpoints += 1
        pos = cp.seq_to + 1
    for line in _events(session, pos, rng.end, sealed=False):
        _write(out, line)
        events += 1
    return ExportSummary(
        events, checkpoints, rng.end - rng.sealed_to, rng.start, rng.end,
        rng.anchor is not None, unchained,
    )  # fmt: skip


def _pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def _write(out: TextIO, doc: dict[str, Any]) -> None:
    out.write(json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n")


def has_checkpoints(session: Session) -> bool:
    """Whether a checkpoint was ever signed (then the signing key must exist)."""
    return session.execute(sa.select(AuditCheckpoint.id).limit(1)).first() is not None


def _in_window(since: dt.datetime, until: dt.datetime) -> sa.ColumnElement[bool]:
    """The events of the window (read by the index on their time)."""
    return sa.and_(AuditEvent.at >= since, AuditEvent.at < until)


def _window(session: Session, since: dt.datetime, until: dt.datetime) -> tuple[int, int] | None:
    """The chain positions of the window's first and last chained events, if any."""
    lo, hi = session.execute(
        sa.select(sa.func.min(AuditEvent.seq), sa.func.max(AuditEvent.seq)).where(
            _in_window(since, until), AuditEvent.seq.is_not(None)
        )
    ).one()
    return None if lo is None or hi is None else (int(lo), int(hi))


def _unchained(session: Session, since: dt.datetime, until: dt.datetime) -> int:
    """Events of the window appended but not chained yet: not in this export."""
    return int(
        session.execute(
            sa.select(sa.func.count()).where(_in_window(since, until), AuditEvent.seq.is_(None))
        ).scalar_one()
    )


def _holding(session: Session, seq: int) -> AuditCheckpoint | None:
    return session.execute(
        sa.select(AuditCheckpoint).where(
            AuditCheckpoint.seq_from <= seq, AuditCheckpoint.seq_to >= seq
        )
    ).scalar()


def _range(session: Session, installation: str, first: int, last: int) -> _Range:
    """Whole checkpoints from the one holding ``first`` to the one holding ``last``; when
    ``first`` is after the last checkpoint, from the event after it (so that the anchor
    proves the first link); up to ``last`` when no checkpoint holds it."""
    head = session.execute(sa.select(sa.func.max(AuditCheckpoint.seq_to))).scalar()
    sealed_to = int(head) if head is not None else 0
    first_cp = _holding(session, first)
    if first_cp is not None:
        start = first_cp.seq_from
    else:
        start = sealed_to + 1 if first > sealed_to else first
    last_cp = _holding(session, last)
    end = last_cp.seq_to if last_cp is not None else last
    anchor_row = (
        session.execute(
            sa.select(AuditCheckpoint).where(AuditCheckpoint.seq_to == start - 1)
        ).scalar()
        if start > 1
        else None
    )
    counted = session.execute(
        sa.select(sa.func.count(), sa.func.max(AuditCheckpoint.seq_to)).where(
            AuditCheckpoint.seq_from >= start, AuditCheckpoint.seq_to <= end
        )
    ).one()
    return _Range(
        start=start,
        end=end,
        anchor=Checkpoint.from_row(anchor_row, installation) if anchor_row else None,
        checkpoints=int(counted[0]),
        sealed_to=int(counted[1]) if counted[1] is not None else start - 1,
    )


def _checkpoints(session: Session, installation: str, start: int, end: int) -> Iterator[Checkpoint]:
    """The checkpoints within ``start..end``, in chain order, a page at a time."""
    pos = start
    while pos <= end:
        page = list(
            session.execute(
                sa.select(AuditCheckpoint)
                .where(AuditCheckpoint.seq_from >= pos, AuditCheckpoint.seq_to <= end)
                .order_by(AuditCheckpoint.seq_from)
                .limit(max(1, _PAGE // 10))
            ).scalars()
        )
        if not page:
            return
        for row in page:
            yield Checkpoint.from_row(row, installation)
        pos = page[-1].seq_to + 1
        session.expunge_all()  # what was yielded is copied out: keep the session small


def _events(session: Session, start: int, end: int, *, sealed: bool) -> Iterator[dict[str, Any]]:
    """The event lines of ``start..end`` in chain order, a page at a time."""
    pos = start
    while pos <= end:
        page = session.execute(
            sa.select(
                AuditEvent.seq, AuditEvent.id, AuditEvent.at, AuditEvent.actor, AuditEvent.kind,
                AuditEvent.subject, AuditEvent.payload, AuditEvent.prev_hash, AuditEvent.hash,
            )
            .where(AuditEvent.seq >= pos, AuditEvent.seq <= end)
            .order_by(AuditEvent.seq)
            .limit(_PAGE)
        ).all()  # fmt: skip
        if not page:
            return
        for row in page:
            yield {
                "type": "event",
                "seq": row.seq,
                "id": row.id,
                "at": row.at.isoformat(),  # as stored and hashed: naive UTC
                "actor": row.actor,
                "kind": row.kind,
                "subject": row.subject,
                "payload": row.payload,
                "prev_hash": row.prev_hash,
                "hash": row.hash,
                "sealed": sealed,
            }
        pos = int(page[-1].seq) + 1
