"""Verifying the audit log: the hash chain, every signed checkpoint, and the witness against the
store, naming each thing found and where it is.

What each check catches, by someone with write access to the store (or to the witness file):
an edited event breaks its own hash; a deleted or reordered event breaks the sequence or a
``prev_hash`` link; a log re-chained after an edit (every later hash recomputed) no longer ends
a checkpoint's range on the head hash that checkpoint signed, and the attacker cannot re-sign
without the key, which lives outside the store; a checkpoint replaced in the store differs from
the witness's copy or fails its signature; a deleted witness line breaks the witness's own
chain of signatures (or leaves a checkpoint marked witnessed that the witness lacks); a
truncated tail leaves the store's head behind the last checkpoint the witness holds. An event
inserted behind the engine's back before the next seal is chained and signed like the engine's
own: only its time can give it away, when it goes back well before the events before it
(``EXCHANGE_AUDIT_MAX_LATENESS_S``) or ahead of its seal. What is not tampering but needs
doing (events long unsealed, the signing key gone) is a warning, not a finding.

Events are read in ``seq`` order in pages (keyset, not offset), so memory stays flat however
long the log; checkpoints (one per thousand events or so) are read at once.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from exchange.audit import keys
from exchange.audit.chain import GENESIS, canonical_event, link
from exchange.audit.checkpoints import Checkpoint, verify_signature
from exchange.audit.settings import KEY_ENV, LATENESS_ENV, SECONDS_ENV, AuditSettings
from exchange.audit.settings import max_lateness_s as max_lateness
from exchange.kernel.clock import utcnow
from exchange.kernel.errors import BadInput
from exchange.store import Store
from exchange.store.models import AuditCheckpoint, AuditEvent

PAGE = 5000  # events read per query: memory per page, not per log
#: Findings of one kind about single events, beyond which they are summed up in one more: a
#: log rewritten wholesale would otherwise print a million lines.
EVENT_FINDINGS_MAX = 20

_EVENTS = cast(sa.Table, AuditEvent.__table__)
_CHECKPOINTS = cast(sa.Table, AuditCheckpoint.__table__)
_INSTALLATION = "installation"

#: How much earlier than an event before it in the chain an event may be dated. An event's
#: time is taken when it is appended and it is chained once its transaction commits, so a
#: transaction that stays open this long commits an event behind others; anything dated
#: earlier was inserted with a back date (or a clock was set back that far).
#: Beyond the checkpoint interval, how long events may wait for their checkpoint before
#: verify warns: an idle installation checkpoints only at its next commit that appends an
#: event (a run, ``exchange tick``, an API call) or at ``exchange audit seal``.
UNSEALED_GRACE_S = 600.0


@dataclass(frozen=True)
class Finding:
    """One thing found wrong: its kind (a stable word for tests and scripts), where it is (an
    event, a checkpoint, a witness line) and what it means, in plain words."""

    kind: str
    where: str
    message: str


@dataclass
class Report:
    """What ``verify`` checked and found. ``findings`` empty: the log is intact.

    ``unchained``: events appended but not yet chained (pending); ``unsealed``: chained after
    the last checkpoint; ``unwitnessed``: checkpoints in the store that a seal has not yet
    written to the witness (a seal interrupted: the next one writes them). None of these is a
    finding."""

    findings: list[Finding] = field(default_factory=list)
    events: int = 0
    checkpoints: int = 0
    witnessed: int = 0
    unchained: int = 0
    unsealed: int = 0
    unwitnessed: int = 0
    key_id: str = ""
    witness: Path | None = None
    #: witness lines of other installations sharing the file (not this store's to check)
    other_installations: int = 0
    #: the time of the oldest event not sealed by a checkpoint (pending or chained after it)
    oldest_unsealed: dt.datetime | None = None
    #: what is not tampering but needs doing (events long unsealed, the signing key gone)
    warnings: list[str] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.findings


@dataclass(frozen=True)
class _StoredCheckpoint:
    """A checkpoint row and its place: ``number`` counts from 1 in sequence order."""

    number: int
    checkpoint: Checkpoint
    witnessed: bool

    @property
    def where(self) -> str:
        cp = self.checkpoint
        return f"checkpoint {self.number} ({_span(cp.seq_from, cp.seq_to)})"


#: What the walk reads of each event (``at`` and ``payload`` as stored: what was hashed).
_WALKED = ("id", "seq", "at", "actor", "kind", "subject", "payload", "prev_hash", "hash")


def verify(
    store: Store,
    settings: AuditSettings,
    public_key: Ed25519PublicKey | None = None,
    *,
    max_lateness_s: float | None = None,
) -> Report:
    """Check the whole log; ``public_key`` (an auditor's copy) overrides the configured key's
    public half; ``max_lateness_s`` (default ``$EXCHANGE_AUDIT_MAX_LATENESS_S``, 900) bounds
    how much earlier than the events before it an event may be dated. Raises ``BadInput``
    when checkpoints exist but no public key is at hand. A missing or unreadable audit table
    is a finding naming it."""
    report = Report(witness=settings.witness)
    lateness = dt.timedelta(seconds=max_lateness() if max_lateness_s is None else max_lateness_s)
    missing = _missing_tables(store)
    for table in missing:
        report.findings.append(
            Finding(
                "table-missing",
                f"table {table}",
                f"the store has no table {table}: it was dropped (or this store was never "
                "migrated); the audit log cannot be verified without it",
            )
        )
    if missing:
        return report
    try:
        _verify(store, settings, public_key, lateness, report)
    except _Unreadable as exc:
        report.findings.append(Finding("table-unreadable", f"table {exc.table}", str(exc)))
    return report


def _verify(
    store: Store,
    settings: AuditSettings,
    public_key: Ed25519PublicKey | None,
    lateness: dt.timedelta,
    report: Report,
) -> None:
    with _reading(_INSTALLATION):
        ours = store.installation_id
    with _reading(_CHECKPOINTS.name):
        stored = _stored_checkpoints(store, ours)
    report.checkpoints = len(stored)
    report.witnessed = sum(1 for c in stored if c.witnessed)
    if public_key is None:
        public_key = _configured_key(settings, required=bool(stored))
    report.key_id = keys.key_id(public_key) if public_key is not None else ""
    installation = _signed_installation(stored, settings.witness, public_key, ours, report)
    if installation != ours:
        with _reading(_CHECKPOINTS.name):
            stored = _stored_checkpoints(store, installation)
    with _reading(_EVENTS.name):
        head = _check_events(store, stored, lateness, report)
    _check_checkpoints(store, stored, public_key, head, report)
    with _reading(f"{_EVENTS.name} or {_CHECKPOINTS.name}"):
        _check_witness(store, installation, settings.witness, stored, public_key, head, report)
    _warn(settings, stored, report)


# -- the store's tables -----------------------------------------------------------------------


class _Unreadable(Exception):
    """A table of the audit log that could not be read, and the database's reason."""

    def __init__(self, table: str, exc: sa.exc.SQLAlchemyError) -> None:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        super().__init__(
            f"the store's table {table} could not be read ({reason}): it was altered or its "
            "permissions changed; the audit log cannot be verified"
        )
        self.table = table


@contextmanager
def _reading(table: str) -> Iterator[None]:
    try:
        yield
    except sa.exc.SQLAlchemyError as exc:
        raise _Unreadable(table, exc) from None


def _missing_tables(store: Store) -> list[str]:
    inspector = sa.inspect(store.engine)
    names = (_EVENTS.name, _CHECKPOINTS.name, _INSTALLATION)
    return [name for name in names if not inspector.has_table(name)]


# -- the chain of events ----------------------------------------------------------------------


def _rows(store: Store) -> Iterator[sa.Row[Any]]:
    """Every chained event in ``seq`` order, a page at a time."""
    after = 0
    columns = [_EVENTS.c[name] for name in _WALKED]
    while True:
        query = (
            sa.select(*columns)
            .where(_EVENTS.c.seq.is_not(None), _EVENTS.c.seq > after)
            .order_by(_EVENTS.c.seq)
            .limit(PAGE)
        )
        with store.engine.connect() as conn:
            page = conn.execute(query).all()
        yield from page
        if len(page) < PAGE:
            return
        after = page[-1].seq


class _Events:
    """Findings about single events, counted per kind and capped (``EVENT_FINDINGS_MAX``)."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self.counts: dict[str, int] = {}

    def add(self, kind: str, where: str, message: str) -> None:
        n = self.counts.get(kind, 0) + 1
        self.counts[kind] = n
        if n <= EVENT_FINDINGS_MAX:
            self.report.findings.append(Finding(kind, where, message))

    def close(self) -> None:
        for kind, n in self.counts.items():
            if n > EVENT_FINDINGS_MAX:
                more = n - EVENT_FINDINGS_MAX
                what = _MORE.get(kind, f"findings '{kind}'")
                self.report.findings.append(Finding(kind, "events", f"... and {more:,} {what}"))


_MORE = {
    "edited": "more events edited",
    "deleted": "more gaps in the sequence",
    "link": "more events not following the event before them",
}


def _where(row: sa.Row[Any]) -> str:
    return f"event {row.seq} (id {row.id})"


def _check_events(
    store: Store, stored: list[_StoredCheckpoint], lateness: dt.timedelta, report: Report
) -> int:
    """Walk the chain: contiguous ``seq`` from 1, each ``prev_hash`` the previous event's hash,
    each hash recomputed, each time not well before the events before it (nor after the
    checkpoint that seals it); compare the hash of every checkpoint's last event with the head
    hash it signed. Returns the head ``seq`` (0 for an empty chain)."""
    ends = {c.checkpoint.seq_to: c for c in stored}
    found = _Events(report)
    expected_seq, prev_hash, head = 1, GENESIS, 0
    latest: tuple[dt.datetime, int] | None = None  # the latest time so far, and its event
    covering = 0  # index in ``stored`` of the checkpoint that may seal the current event
    rewritten_before = False  # whether the previous checkpoint's head was rewritten
    last_sealed = stored[-1].checkpoint.seq_to if stored else 0
    now = utcnow()
    for row in _rows(store):
        report.events += 1
        if row.seq != expected_seq:
            found.add(
                "deleted",
                _where(row),
                f"{_span(expected_seq, row.seq - 1)} missing before event {row.seq} (id "
                f"{row.id}): deleted from the store, or the sequence was renumbered",
            )
        elif row.prev_hash != prev_hash:
            # after a gap the link is broken anyway: the gap says why
            found.add(
                "link",
                _where(row),
                f"event {row.seq} (id {row.id}) does not follow event {row.seq - 1}: its "
                "prev_hash is not that event's hash, so events were deleted, reordered or "
                "inserted here",
            )
        edited = True
        if row.hash is None or row.prev_hash is None:
            found.add("edited", _where(row), f"event {row.seq} (id {row.id}) has a seq but no hash")
        else:
            canonical = canonical_event(row.at, row.actor, row.kind, row.subject, row.payload)
            edited = link(row.prev_hash, canonical) != row.hash
            if edited:
                found.add(
                    "edited",
                    _where(row),
                    f"event {row.seq} (id {row.id}) was edited: its content "
                    f"({row.kind} {row.subject}) does not match its hash",
                )
        while covering < len(stored) and stored[covering].checkpoint.seq_to < row.seq:
            covering += 1
        sealer = stored[covering] if covering < len(stored) else None
        # An edited event's time is not the one it was chained with (the edit says it all),
        # and a time ahead of its seal is not the bound the events after it are held to.
        if not edited and not _dated_forward(row, sealer, now, lateness, found):
            if latest is not None and row.at < latest[0] - lateness:
                found.add(
                    "backdated",
                    _where(row),
                    f"event {row.seq} (id {row.id}) is dated {_time(row.at)}, "
                    f"{_duration(latest[0] - row.at)} before event {latest[1]} earlier in the "
                    f"chain ({_time(latest[0])}): it was inserted with a back date (an event "
                    "is dated when it is appended; only a transaction open longer than "
                    f"{_duration(lateness)}, {LATENESS_ENV}, commits one that late)",
                )
            if latest is None or row.at > latest[0]:
                latest = (row.at, row.seq)
        if row.seq > last_sealed and (
            report.oldest_unsealed is None or row.at < report.oldest_unsealed
        ):
            report.oldest_unsealed = row.at
        cp = ends.get(row.seq)
        if cp is not None:
            rewritten = row.hash != cp.checkpoint.head_hash
            if rewritten:
                report.findings.append(_rewritten(cp, row, whole_range=rewritten_before))
            rewritten_before = rewritten
        expected_seq, prev_hash, head = row.seq + 1, row.hash or "", row.seq
    found.close()
    report.unchained = _count_unchained(store)
    if report.unchained:
        oldest = _oldest_unchained(store)
        if oldest is not None and (
            report.oldest_unsealed is None or oldest < report.oldest_unsealed
        ):
            report.oldest_unsealed = oldest
    report.unsealed = max(head - last_sealed, 0)
    return head


def _dated_forward(
    row: sa.Row[Any],
    sealer: _StoredCheckpoint | None,
    now: dt.datetime,
    lateness: dt.timedelta,
    found: _Events,
) -> bool:
    """Whether the event is dated after the checkpoint that seals it was signed (or, unsealed,
    after now), beyond the clocks' tolerance: found so if it is."""
    if sealer is not None and sealer.checkpoint.seq_from <= row.seq:
        bound, what = sealer.checkpoint.at, f"{sealer.where} that seals it was signed"
    else:
        bound, what = now, "now"
    if row.at <= bound + lateness:
        return False
    found.add(
        "dated-forward",
        _where(row),
        f"event {row.seq} (id {row.id}) is dated {_time(row.at)}, after {what} "
        f"({_time(bound)}): it was inserted or edited with a time ahead",
    )
    return True


def _rewritten(cp: _StoredCheckpoint, row: sa.Row[Any], *, whole_range: bool) -> Finding:
    """A checkpoint's head hash no longer the hash of its last event. After a checkpoint whose
    head still matches, the rewrite starts somewhere in this one's range (its signed head alone
    cannot say where); after one rewritten too, every hash of this range changed."""
    first, last = cp.checkpoint.seq_from, row.seq
    where = ""
    if whole_range or first == last:
        what = f"{_span(first, last)} {'was' if first == last else 'were'} rewritten"
    else:
        what = f"events up to {last} were rewritten"
        where = (
            f" (the rewrite starts at one of events {first}-{last}: a signed head hash "
            "cannot tell which)"
        )
    return Finding(
        "rechained",
        cp.where,
        f"{what} after {cp.where} was signed: its head hash {cp.checkpoint.head_hash[:16]}... "
        f"does not match event {last}'s {(row.hash or '')[:16]}...{where}",
    )


def _span(first: int, last: int) -> str:
    """``event 7`` or ``events 7-9``."""
    return f"event {first}" if first == last else f"events {first}-{last}"


def _time(at: dt.datetime) -> str:
    return at.replace(tzinfo=None).isoformat(sep=" ", timespec="seconds") + " UTC"


def _duration(delta: dt.timedelta) -> str:
    seconds = delta.total_seconds()
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n:,} {unit}{'' if n == 1 else 's'}"
    return f"{int(seconds)} s"


def _oldest_unchained(store: Store) -> dt.datetime | None:
    with store.engine.connect() as conn:
        query = sa.select(sa.func.min(_EVENTS.c.at)).where(_EVENTS.c.seq.is_(None))
        found = conn.execute(query).scalar()
    return found if isinstance(found, dt.datetime) else None


def _head_now(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.max(_EVENTS.c.seq))).scalar() or 0)


def _count_unchained(store: Store) -> int:
    with store.engine.connect() as conn:
        query = sa.select(sa.func.count()).select_from(_EVENTS).where(_EVENTS.c.seq.is_(None))
        return int(conn.execute(query).scalar_one())


# -- the store's checkpoints ------------------------------------------------------------------


def _stored_checkpoints(store: Store, installation: str) -> list[_StoredCheckpoint]:
    """The store's checkpoints in sequence order; a row does not repeat the installation it
    signed: it is the store's own (``installation``)."""
    query = sa.select(AuditCheckpoint).order_by(AuditCheckpoint.seq_from, AuditCheckpoint.id)
    with store.session() as s:
        rows = list(s.scalars(query))
        return [
            _StoredCheckpoint(n, Checkpoint.from_row(r, installation), r.witnessed)
            for n, r in enumerate(rows, start=1)
        ]


def _configured_key(settings: AuditSettings, *, required: bool) -> Ed25519PublicKey | None:
    """The configured key's public half; without checkpoints there is nothing to check
    with it, and a missing key is no problem yet."""
    try:
        return keys.public_key(settings)
    except BadInput as exc:
        if required:
            raise BadInput(
                f"no public key to check the checkpoints' signatures with ({exc}); an auditor "
                "gives their own copy with --public-key FILE"
            ) from None
        return None


def _signed_installation(
    stored: list[_StoredCheckpoint],
    path: Path,
    public_key: Ed25519PublicKey | None,
    ours: str,
    report: Report,
) -> str:
    """The installation the store's checkpoints were signed for: the store's own, unless
    they verify only with the installation their witness lines name (the store's installation
    id was changed): then that, found so, and the other checks go on with it."""
    if not stored or public_key is None:
        return ours
    named: dict[str, str] | None = None
    for c in stored:
        cp = c.checkpoint
        if verify_signature(cp, public_key):
            return ours
        if named is None:
            named = _installations_by_signature(path)
        theirs = named.get(cp.signature)
        if theirs is None or theirs == ours:
            continue
        if verify_signature(replace(cp, installation=theirs), public_key):
            report.findings.append(
                Finding(
                    "installation",
                    f"table {_INSTALLATION}",
                    f"{c.where} differs from what it signed in its installation: the store's "
                    f"installation id is {ours}, but its checkpoints were signed for "
                    f"installation {theirs} (their witness lines name it, and the signatures "
                    f"verify with it): the id in the store's table {_INSTALLATION} was "
                    "changed, or this store is another installation's; the checks below use "
                    f"{theirs}",
                )
            )
            return theirs
    return ours


def _installations_by_signature(path: Path) -> dict[str, str]:
    """Each witness line's signature and the installation it names (unreadable lines are
    the witness check's to report)."""
    found: dict[str, str] = {}
    if not path.exists():
        return found
    with open(path, encoding="utf-8", errors="replace") as f:
        for text in f:
            try:
                doc = json.loads(text)
            except json.JSONDecodeError:
                continue
            if isinstance(doc, dict):
                sig, installation = doc.get("signature"), doc.get("installation")
                if isinstance(sig, str) and isinstance(installation, str):
                    found[sig] = installation
    return found


def _check_checkpoints(
    store: Store,
    stored: list[_StoredCheckpoint],
    public_key: Ed25519PublicKey | None,
    head: int,
    report: Report,
) -> None:
    """Each checkpoint: signed under the trusted key, its range following the previous one,
    its count the range's, its ``prev_signature`` the previous one's signature, its range
    present in the chain."""
    prev: _StoredCheckpoint | None = None
    for c in stored:
        cp = c.checkpoint
        _check_signature(cp, public_key, c.where, "checkpoint", report)
        expected_from = prev.checkpoint.seq_to + 1 if prev else 1
        if cp.seq_from != expected_from or cp.seq_to < cp.seq_from:
            after = f"after {prev.where}" if prev else "as the first checkpoint"
            report.findings.append(
                Finding(
                    "checkpoint-range",
                    c.where,
                    f"{c.where} does not follow on {after}: it should start at event "
                    f"{expected_from}; a checkpoint was deleted, or this one was replaced",
                )
            )
        if cp.count != cp.seq_to - cp.seq_from + 1:
            report.findings.append(
                Finding(
                    "checkpoint-count",
                    c.where,
                    f"{c.where} counts {cp.count} events, not the "
                    f"{cp.seq_to - cp.seq_from + 1} of its range: it was altered",
                )
            )
        expected_prev = prev.checkpoint.signature if prev else ""
        if cp.prev_signature != expected_prev:
            report.findings.append(
                Finding(
                    "checkpoint-chain",
                    c.where,
                    f"{c.where} does not carry the signature of the checkpoint before it: "
                    "a checkpoint was deleted, inserted or replaced",
                )
            )
        if cp.seq_to > head:
            first_lost = max(cp.seq_from, head + 1)
            lost = _span(first_lost, cp.seq_to)
            verb = "was" if first_lost == cp.seq_to else "were"
            report.findings.append(
                Finding(
                    "truncated",
                    c.where,
                    f"{c.where} seals events up to {cp.seq_to} but the store's chain ends at "
                    f"event {head}: {lost} {verb} deleted",
                )
            )
        prev = c


def _check_signature(
    cp: Checkpoint, public_key: Ed25519PublicKey | None, where: str, what: str, report: Report
) -> None:
    if public_key is None:
        return
    if verify_signature(cp, public_key):
        return
    trusted = keys.key_id(public_key)
    why = (
        f"it names key {cp.key_id}, not the trusted key {trusted}"
        if cp.key_id != trusted
        else f"it does not verify under the trusted key {trusted}"
    )
    report.findings.append(
        Finding(
            f"{what}-signature",
            where,
            f"{where}: the signature is not valid ({why}): it was forged, replaced or altered "
            "after signing",
        )
    )


# -- the witness ------------------------------------------------------------------------------


def _check_witness(
    store: Store,
    installation: str,
    path: Path,
    stored: list[_StoredCheckpoint],
    public_key: Ed25519PublicKey | None,
    head: int,
    report: Report,
) -> None:
    """The witness's lines: each signed, each carrying the previous line's signature, each the
    same as the store's checkpoint of its range; every checkpoint the store marks witnessed
    present; and the store's head not behind the last checkpoint witnessed.

    The witness is read last: a seal that ran while the chain was walked may have added lines
    for checkpoints (and events) made since; those are looked up in the store again."""
    by_range = {(c.checkpoint.seq_from, c.checkpoint.seq_to): c for c in stored}
    sealed_to = stored[-1].checkpoint.seq_to if stored else 0
    late: dict[tuple[int, int], _StoredCheckpoint] | None = None
    seen: set[tuple[int, int]] = set()
    prev: tuple[int, Checkpoint] | None = None
    last_seq_to = 0
    for number, cp in _witness_checkpoints(path, installation, stored, report):
        where = f"witness {path} line {number}"
        if prev is not None and cp == prev[1]:
            continue  # the same line again: a seal retried after a crash, harmless
        _check_signature(cp, public_key, where, "witness", report)
        expected = prev[1].signature if prev is not None else ""
        if cp.prev_signature != expected:
            before = f"line {prev[0]}'s signature" if prev is not None else "'' (the first line)"
            report.findings.append(
                Finding(
                    "witness-chain",
                    where,
                    f"{where} ({_span(cp.seq_from, cp.seq_to)}) does not follow the line "
                    f"before it: its prev_signature is not {before}, so a witness line before "
                    "it was deleted (or lines were reordered)",
                )
            )
        key = (cp.seq_from, cp.seq_to)
        seen.add(key)
        in_store = by_range.get(key)
        if in_store is None and cp.seq_from > sealed_to:
            if late is None:
                late = {
                    (c.checkpoint.seq_from, c.checkpoint.seq_to): c
                    for c in _stored_checkpoints(store, installation)
                    if c.checkpoint.seq_from > sealed_to
                }
            made_since = late.get(key)
            if made_since is not None and made_since.checkpoint == cp:
                last_seq_to = max(last_seq_to, cp.seq_to)
                prev = (number, cp)
                continue  # sealed while this verify ran: the next one checks it
        if in_store is None:
            report.findings.append(
                Finding(
                    "witness-only",
                    where,
                    f"{where} holds a checkpoint of {_span(cp.seq_from, cp.seq_to)} that the "
                    "store lacks: it was deleted or replaced in the store",
                )
            )
        elif in_store.checkpoint != cp:
            report.findings.append(_mismatch(in_store, cp, where, public_key))
        last_seq_to = max(last_seq_to, cp.seq_to)
        prev = (number, cp)
    missing = [c for c in stored if (c.checkpoint.seq_from, c.checkpoint.seq_to) not in seen]
    lacking = [c for c in missing if c.witnessed]
    if not seen and lacking and path.exists():
        report.findings.append(
            Finding(
                "witness-empty",
                str(path),
                f"the witness {path} holds no checkpoint of this installation ({installation})"
                f" but the store marks {len(lacking):,} witnessed: it was emptied or replaced "
                "(or EXCHANGE_AUDIT_WITNESS names another file than the one the seals wrote)",
            )
        )
    for n, c in enumerate(lacking):
        if n == EVENT_FINDINGS_MAX:
            more = len(lacking) - n
            report.findings.append(
                Finding("unwitnessed", "checkpoints", f"... and {more:,} more checkpoints "
                        f"marked witnessed that the witness {path} lacks")
            )  # fmt: skip
            break
        report.findings.append(
            Finding(
                "unwitnessed",
                c.where,
                f"{c.where} is marked witnessed but the witness {path} lacks it: its "
                "witness line was deleted",
            )
        )
    # A seal witnesses every older checkpoint before it makes a new one, so only the last
    # checkpoint can be awaiting its witness line: any other is a line deleted from the
    # witness and the store's mark undone to hide it.
    for c in missing:
        if c.witnessed:
            continue
        if c is stored[-1]:
            report.unwitnessed += 1
        else:
            report.findings.append(
                Finding(
                    "unwitnessed",
                    c.where,
                    f"{c.where} is not in the witness {path} nor marked witnessed, yet a "
                    "later checkpoint was made (a seal witnesses every checkpoint before "
                    "making the next): its witness line was deleted and its mark in the "
                    "store undone",
                )
            )
    if head < last_seq_to:
        head = max(head, _head_now(store))  # events chained while the chain was walked
    if head < last_seq_to:
        report.findings.append(
            Finding(
                "truncated",
                _span(head + 1, last_seq_to),
                f"the store's chain ends at event {head} but the witness {path} holds a "
                f"checkpoint up to event {last_seq_to}: {_span(head + 1, last_seq_to)} "
                f"{'was' if head + 1 == last_seq_to else 'were'} deleted (the tail truncated)",
            )
        )


# -- what is not tampering but needs doing -----------------------------------------------------


def _warn(settings: AuditSettings, stored: list[_StoredCheckpoint], report: Report) -> None:
    """Warnings: events left unsealed well past the checkpoint interval, the signing key gone
    while checkpoints exist, and a signing key without any checkpoint in the store or the
    witness while old events wait (checkpoints, witness and all, deleted?)."""
    gone = _key_gone(settings)
    if stored and gone is not None:
        report.warnings.append(
            f"{gone}, but the store holds {_plural(len(stored), 'checkpoint')} signed with it "
            f"(key {stored[-1].checkpoint.key_id}): no checkpoint can be signed until it is "
            "restored from a backup (a new key is refused: it would sign a history the old one "
            "never saw); events are chained meanwhile, but not sealed"
        )
    oldest, waiting = report.oldest_unsealed, report.unchained + report.unsealed
    if oldest is None or not waiting:
        return
    now = utcnow()
    interval = settings.checkpoint_seconds
    if now - oldest <= dt.timedelta(seconds=interval + UNSEALED_GRACE_S):
        return
    if stored and gone is not None:
        todo = "restore the signing key, then run `exchange audit seal`"
    else:
        todo = (
            "run `exchange audit seal` (an idle installation checkpoints only at its next "
            "commit that appends an event: a run, `exchange tick`, an API call)"
        )
    report.warnings.append(
        f"{_plural(waiting, 'event')} not sealed by any checkpoint, the oldest dated "
        f"{_time(oldest)} ({_duration(now - oldest)} ago), though one is due every "
        f"{interval:g} s ({SECONDS_ENV}): until one is, only the chain protects them; {todo}"
    )
    key = _key_material(settings)
    if stored or key is None or any(f.kind == "witness-only" for f in report.findings):
        return
    path = settings.witness
    state = "missing" if not path.exists() else "none of this installation's"
    report.warnings.append(
        f"a signing key exists ({key}) but neither the store nor the witness {path} ({state}) "
        f"holds a checkpoint, while events from {_time(oldest)} wait for one: if checkpoints "
        "were ever made, they were deleted from both, and the chain alone cannot show an edit "
        "(compare with a backup of the witness or an earlier export); if none was, run "
        "`exchange audit seal`"
    )


def _key_gone(settings: AuditSettings) -> str | None:
    """What is missing of the private key, or None when it is at hand."""
    if settings.key_env:
        if os.environ.get(settings.key_env):
            return None
        return f"the variable {settings.key_env} named by {KEY_ENV} is not set"
    if settings.key_file.exists():
        return None
    return f"the audit signing key {settings.key_file} is missing"


def _key_material(settings: AuditSettings) -> str | None:
    """Where a signing key (or its public half) is, if anywhere."""
    if settings.key_env and os.environ.get(settings.key_env):
        return f"${settings.key_env}"
    for path in (settings.key_file, keys.public_path(settings.key_file)):
        if path.exists():
            return str(path)
    return None


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _mismatch(
    in_store: _StoredCheckpoint, copy: Checkpoint, where: str, key: Ed25519PublicKey | None
) -> Finding:
    """The store's checkpoint and the witness's copy of its range differ: the side whose
    signature no longer verifies is the one altered (the store's, if both verify: a second
    key signed it)."""
    differs = _differences(in_store.checkpoint, copy)
    if key is not None and verify_signature(in_store.checkpoint, key):
        if not verify_signature(copy, key):
            return Finding(
                "witness-altered",
                where,
                f"{where} differs from {in_store.where} ({differs}): the witness's copy was "
                "altered (the store's verifies)",
            )
    return Finding(
        "replaced",
        in_store.where,
        f"{in_store.where} differs from its copy in {where} ({differs}): it was replaced or "
        "altered in the store",
    )


def _witness_checkpoints(
    path: Path, installation: str, stored: list[_StoredCheckpoint], report: Report
) -> Iterator[tuple[int, Checkpoint]]:
    """This installation's checkpoints in the witness with their line numbers, read line by
    line (lines of other installations sharing the file are counted and skipped); a line
    that is not one is a finding, but for a line torn by a crash (the sealer rewrites it
    whole on the next line, so it is a prefix of that line)."""
    pending = [c for c in stored if not c.witnessed]
    if not path.exists():
        if len(pending) < len(stored):
            report.findings.append(
                Finding(
                    "witness-missing",
                    str(path),
                    f"the witness {path} does not exist but the store holds checkpoints "
                    "written to it: it was deleted, or EXCHANGE_AUDIT_WITNESS names another "
                    "file than the one the seals wrote",
                )
            )
        return
    torn: tuple[int, str] | None = None
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, text in enumerate(f, start=1):
            text = text.rstrip("\n")
            if torn is not None and not text.startswith(torn[1]):
                _unreadable(path, torn[0], "it is not a JSON object", report)
            torn = None
            if not text.strip():
                continue
            try:
                doc = json.loads(text)
                if not isinstance(doc, dict):
                    raise ValueError("it is not a JSON object")
                cp = Checkpoint.from_line(doc)
            except json.JSONDecodeError:
                torn = (number, text)
                continue
            except (BadInput, ValueError, TypeError) as exc:
                _unreadable(path, number, str(exc), report)
                continue
            if cp.installation != installation:
                # Another store's seals share this witness: its lines are its own (one
                # altered to name another installation is missing from ours, and found so).
                report.other_installations += 1
                continue
            yield number, cp
    if torn is not None and not any(_line(c.checkpoint).startswith(torn[1]) for c in pending):
        _unreadable(path, torn[0], "it is not a JSON object", report)
    # else: the last line was torn as a seal was killed writing it, and its checkpoint,
    # not marked witnessed, is written whole by the next seal


def _line(cp: Checkpoint) -> str:
    """The witness line of ``cp``, as ``exchange.audit.witness`` writes it."""
    return json.dumps(cp.line(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _unreadable(path: Path, number: int, why: str, report: Report) -> None:
    where = f"witness {path} line {number}"
    report.findings.append(
        Finding("witness-line", where, f"{where} is not a checkpoint ({why}): it was altered")
    )


def _differences(ours: Checkpoint, theirs: Checkpoint) -> str:
    names = [
        name for name in ours.document() if ours.document()[name] != theirs.document().get(name)
    ]
    if ours.signature != theirs.signature:
        names.append("signature")
    return ", ".join(names) or "?"
