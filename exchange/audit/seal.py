"""The sealer: chains the events appenders left unchained and checkpoints the chain.

Appenders insert events with ``seq``, ``prev_hash`` and ``hash`` NULL and take no lock
(``exchange.audit.chain``). After a session that appended commits, its ``after_commit`` hook
calls the sealer, which, in a transaction of its own on the same engine, holds the sealer lock
(PostgreSQL: an advisory transaction lock of its own key, taken with ``pg_try_advisory_xact_lock``;
SQLite: its one write lock), gives the committed unchained events the next positions in id
order, links them after the head and commits. A checkpoint is made when due: ``N`` events
chained since the last one, ``T`` seconds since it, or forced (the end of a run): the document
is signed and its row stored (witnessed false) and committed; the next round appends its line
to the witness (fsync'd) and marks it witnessed. Every round first writes the checkpoints not
witnessed yet, so a new checkpoint never overtakes an older one in the witness.

Coalescing: sealing after every commit would cost every appender a sealing round (and,
with many writers, a failed try of the lock each), so a process seals inline only when no seal
of its own has started within ``COALESCE_S`` (50 ms) and none is running; otherwise the commit
is handed to the store's timer thread in this process (``_Sealer``), which makes one attempt
for all the commits handed to it once that interval has passed. Every attempt (inline or the
thread's) is one round (``_attempt``); what may be left after it (events others committed
meanwhile, a full batch, a checkpoint to witness) is handed to the thread's next attempt, one
interval later, so that neither an appender nor the thread becomes a sealer that never stops
while commits keep coming. While its process lives, an event is thus chained within
``COALESCE_S`` plus the length of a round or two of its commit (under 0.1 s but on a machine
starved of CPU); ``settle`` waits until this process's timer thread has nothing left, and an
``atexit`` hook seals what it still holds. A forced checkpoint (the end of a run) is sealed at
once, in the committing thread, waiting for the lock.

On PostgreSQL one process at a time seals for all (``_lease``): a commit never seals inline,
and the timer thread whose attempt gets the lock keeps it (at session level, on a connection
of its own) and runs a round every ``COALESCE_S`` for every process's commits until
``LEASE_IDLE_S`` passes with nothing to chain; the others' attempts fail at once (one
statement, no round), and every round of the holder starts by handing the lock to a seal
waiting for it (a forced checkpoint). The holder's rounds read the events each commit left,
so the argument below holds with "the holder re-checks" read as "the holder's next round, or
its look after it lets go". The writers pay no inline round and few failed tries (8 writers,
one event a transaction: their CPU fell from 33 s to 26 s over 16,000 events, bench.audit).

Why no event is left unchained while its writer lives (PostgreSQL, where the lock is tried):
after an appender A commits, a seal attempt of A's process starts: inline, or the timer
thread's next attempt, which counts the requests to cover before it starts, so it starts after
A's commit. If the attempt gets the lock, its round (whose statements start after A's commit,
so they see A's events) chains them. If the lock is taken, the holder H may have read the
unchained events before A's commit and missed them; but the failed try happened after A's
commit and before H released the lock, and H re-checks after its commit (which releases the
lock): if its round chained nothing, it looks for unchained events at once; if it chained
some, it does not look (under load there always are more) but hands another attempt to its
timer thread, which makes it one interval later. Either way an attempt starts after H's
commit, so after A's: it chains A's events, or finds the lock held by a sealer that took it
after A's commit and so sees them, and re-checks after its own commit in turn. The re-check
repeats until a round chains nothing and a look finds nothing. On SQLite every sealer waits
for the write lock, and its statements run after it is granted, so they see every committed
event. A process killed before its attempt leaves committed unchained events: the next seal
of any process chains them (they come first, in id order).

On PostgreSQL a round that only links events commits without waiting for the disk
(``synchronous_commit`` off for that transaction): links are derived from the events, a commit
lost to a server crash leaves them unchained and the next seal links them again. A round that
stores a checkpoint commits synchronously (which makes every earlier commit durable too), so the
witness is never ahead of the store.

A forced checkpoint waits for the lock instead of leaving the work to the holder (the holder
does not know it was asked for one).

Crashes (SIGKILL at the named ``crashpoint``s, see exchange.kernel.faults) leave at worst
committed unchained events, a stored checkpoint not yet witnessed, or a witness line whose
checkpoint is not marked witnessed yet; the next seal repairs each (a line already in the
witness is not written twice). A transaction killed midway rolls back whole.
"""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import os
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from exchange.audit import witness
from exchange.audit.chain import APPENDED, FORCE_CHECKPOINT, GENESIS, canonical_event, link
from exchange.audit.checkpoints import Checkpoint, sign
from exchange.audit.settings import AuditSettings
from exchange.kernel.clock import utcnow
from exchange.kernel.errors import BadInput
from exchange.kernel.faults import crashpoint
from exchange.kernel.settings import Settings
from exchange.store.db import Store
from exchange.store.models import AuditCheckpoint, AuditEvent, Installation

log = logging.getLogger(__name__)

LOCK_KEY = 0x61756469747365  # "auditse": the sealer's advisory-lock key on PostgreSQL
BATCH = 5000  # events chained in one round (a bound on the sealer's transaction)
#: A process seals inline at most once in this time; commits in between are sealed by its
#: timer thread when it has passed (so an event is chained within about this, plus a round's
#: duration, of its commit while its process lives).
COALESCE_S = 0.05
IDLE_S = 2.0  # a timer thread with no work for this long ends
#: PostgreSQL: the sealer lease (``_lease``) ends after this long of rounds finding nothing.
LEASE_IDLE_S = 0.2
#: PostgreSQL: after finding another process's lease, a process tries again this much later
#: (its commits are that holder's to chain; the try only covers the holder letting go).
RETRY_S = 0.2
EXIT_WAIT_S = 5.0  # at exit, how long the timer threads are waited for before sealing inline
WITNESS_TAIL = 256 * 1024  # bytes of the witness searched for a line written before a crash
_EVENTS = cast(sa.Table, AuditEvent.__table__)
_BIGINTS = postgresql.ARRAY(sa.BigInteger)
_HASHES = postgresql.ARRAY(sa.String(64))
_CHECKPOINTS = cast(sa.Table, AuditCheckpoint.__table__)
_configured: weakref.WeakKeyDictionary[Store, AuditSettings] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class SealResult:
    """What a seal did: events chained and the checkpoint it made, if any."""

    chained: int
    checkpoint: Checkpoint | None


@dataclass(frozen=True)
class _Round:
    chained: int
    checkpoint: Checkpoint | None
    witnessed: int
    problem: BadInput | None = None  # raised once the round has committed (no key)


def configure(store: Store, settings: Settings | AuditSettings) -> None:
    """Seal ``store`` with these settings (its key and witness) rather than the
    environment's: a workspace opened on a given home does this."""
    config = settings if isinstance(settings, AuditSettings) else AuditSettings.from_env(settings)
    _configured[store] = config


def settings_for(store: Store) -> AuditSettings:
    """The audit settings ``store`` is sealed with: configured, else from the environment."""
    found = _configured.get(store)
    return found if found is not None else AuditSettings.from_env(Settings.from_env())


def seal(store: Store, *, force: bool = False, config: AuditSettings | None = None) -> SealResult:
    """Chain every committed unchained event and write a checkpoint when due (with ``force``:
    whenever events were chained since the last one), waiting for the sealer lock."""
    return _seal(store, config or settings_for(store), force=force, wait=True)


def _seal(store: Store, config: AuditSettings, *, force: bool, wait: bool) -> SealResult:
    chained = 0
    made: Checkpoint | None = None
    while True:
        done = _round(store, config, force=force and made is None, wait=wait)
        if done is None:
            break  # the holder of the lock re-checks after its commit
        chained += done.chained
        made = done.checkpoint or made
        if done.checkpoint is not None:
            crashpoint("audit.seal:checkpoint-stored")
        # The re-check, after every round (one that found nothing too: an appender may have
        # committed after its look and found the lock taken): a stored checkpoint is to be
        # witnessed, a full batch may have left more.
        if done.checkpoint is None and done.chained < BATCH and not _pending(store):
            break
    return SealResult(chained, made)


def _pending(store: Store) -> bool:
    with store.engine.connect() as conn:
        return (
            conn.execute(sa.select(_EVENTS.c.id).where(_EVENTS.c.seq.is_(None)).limit(1)).first()
            is not None
        )


def _round(store: Store, config: AuditSettings, *, force: bool, wait: bool) -> _Round | None:
    """One transaction under the sealer lock: witness, chain, checkpoint; None if the lock
    was taken (and not waited for)."""
    with store.engine.connect() as conn, conn.begin():
        if not _lock(conn, wait=wait):
            return None
        done = _round_locked(conn, config, _state(conn), force=force)
    if done.problem is not None:
        raise done.problem
    return done


def _round_locked(conn: Connection, config: AuditSettings, state: Any, *, force: bool) -> _Round:
    """The work of a round, in ``conn``'s transaction, the sealer lock held; ``state`` is
    what ``_state`` read under it. A missing key is returned, to be raised after the commit
    (the events are chained all the same)."""
    last = state if state.seq_to is not None else None
    # Checkpoints are witnessed oldest first before a new one is made: if any is not
    # witnessed, the last one is not.
    witnessed = _witness_stored(conn, config) if last and not last.witnessed else 0
    chained, head = _chain(conn, state.head_seq or 0, state.head_hash or GENESIS)
    problem: BadInput | None = None
    checkpoint: Checkpoint | None = None
    try:
        checkpoint = _checkpoint_if_due(conn, config, last, head, force=force)
    except BadInput as exc:  # no key: the events are chained all the same
        problem = exc
    if checkpoint is not None and conn.dialect.name == "postgresql":
        # Its witness line, written next, must never be ahead of the store: this commit
        # waits for the disk (and makes every earlier one durable with it).
        conn.execute(sa.select(sa.func.set_config("synchronous_commit", "on", True)))
    crashpoint("audit.seal:chained")
    return _Round(chained, checkpoint, witnessed, problem)


def _lease(store: Store, sealer: _Sealer) -> bool:
    """PostgreSQL: become the one sealer of the store for as long as commits keep coming.

    The lease is the sealer lock taken at session level on a connection of its own: while
    its holder runs rounds (one every ``COALESCE_S``) for every process's commits, the other
    processes' attempts fail at once (one statement) and cost them nothing more. Every round
    after the first hands the lock over in its first statement (``pg_advisory_unlock`` then
    ``pg_try_advisory_lock``): a seal waiting for the lock (a forced checkpoint, another
    process's exit) is granted it at the unlock, and the try then fails and ends the lease.
    The lease ends after ``LEASE_IDLE_S`` of rounds that found nothing, or when this process
    exits; what was committed meanwhile is looked for once more after the lock is released.
    A process that found the lease held tries again ``RETRY_S`` later, not ``COALESCE_S``.
    A holder killed loses the lock with its connection. Whether another attempt is due."""
    config = settings_for(store)
    no_wait = sa.func.set_config("synchronous_commit", "off", True)
    handed = False
    sealer.others_hold = False
    with store.engine.connect() as conn:
        held = False
        try:
            idle_since: float | None = None
            while True:
                upto = sealer.round_starting()
                with conn.begin():
                    take = sa.func.pg_try_advisory_lock(LOCK_KEY).label("kept")
                    lock: Any
                    if held:
                        lock = conn.execute(
                            sa.select(sa.func.pg_advisory_unlock(LOCK_KEY), take, no_wait)
                        ).one()
                    else:
                        lock = conn.execute(sa.select(take, no_wait)).one()
                    if not lock.kept:
                        if not held:
                            sealer.others_hold = True
                            return False  # its holder seals what this process committed
                        handed = True  # a waiting seal has it (or another holder does)
                        held = False
                        break
                    held = True
                    # The state in a statement after the lock's: READ COMMITTED fixes a
                    # statement's snapshot when it starts, so the lock's own statement could
                    # read the head from before a seal that committed while it waited.
                    state = _state(conn)
                    done = _round_locked(conn, config, state, force=False)
                sealer.round_done(upto)
                if done.problem is not None:
                    raise done.problem
                if done.checkpoint is not None:
                    crashpoint("audit.seal:checkpoint-stored")
                if done.chained or done.checkpoint or done.witnessed:
                    idle_since = None
                elif idle_since is None:
                    idle_since = time.monotonic()
                if sealer.stopping or (
                    idle_since is not None and time.monotonic() - idle_since >= LEASE_IDLE_S
                ):
                    break
                time.sleep(COALESCE_S)  # commits arriving meanwhile are one round's
        finally:
            if held:
                _release(conn)
    # After the release: an appender whose try failed during the last round counted on it.
    return handed or _pending(store)


def _release(conn: Connection) -> None:
    """Give up the lease (on a connection broken meanwhile, PostgreSQL has released it)."""
    try:
        with conn.begin():
            conn.execute(sa.select(sa.func.pg_advisory_unlock(LOCK_KEY)))
    except sa.exc.DBAPIError:
        conn.invalidate()


def _lock(conn: Connection, *, wait: bool) -> bool:
    dialect = conn.dialect.name
    if dialect == "postgresql":
        # Links alone are derived data: a commit of them lost to a server crash leaves the
        # events unchained, and the next seal links them again (nobody has signed those
        # links), so a round that stores no checkpoint commits without waiting for the disk.
        # Set in the lock's statement: one round trip.
        no_wait = sa.func.set_config("synchronous_commit", "off", True)
        if wait:
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(LOCK_KEY), no_wait))
            return True
        got = conn.execute(sa.select(sa.func.pg_try_advisory_xact_lock(LOCK_KEY), no_wait))
        return bool(got.scalar())
    # SQLite (and any other store): an UPDATE that matches nothing takes the write lock now,
    # so what this transaction reads afterwards is current until it commits.
    conn.execute(sa.update(_CHECKPOINTS).where(_CHECKPOINTS.c.id < 0).values(id=_CHECKPOINTS.c.id))
    return True


def _state(conn: Connection) -> Any:
    """The head of the chain and the last checkpoint, in one statement (one round trip a
    round): head_seq, head_hash, and seq_to, at, signature, witnessed (all NULL before the
    first event, the first checkpoint)."""
    head = (
        sa.select(_EVENTS.c.seq, _EVENTS.c.hash)
        .where(_EVENTS.c.seq.is_not(None))
        .order_by(_EVENTS.c.seq.desc())
        .limit(1)
    )
    last = sa.select(_CHECKPOINTS).order_by(_CHECKPOINTS.c.seq_to.desc()).limit(1)

    def head_of(column: str) -> Any:
        return head.with_only_columns(_EVENTS.c[column]).scalar_subquery()

    def last_of(column: str) -> Any:
        return last.with_only_columns(_CHECKPOINTS.c[column]).scalar_subquery()

    return conn.execute(
        sa.select(
            head_of("seq").label("head_seq"), head_of("hash").label("head_hash"),
            *(last_of(c).label(c) for c in ("seq_to", "at", "signature", "witnessed")),
        )
    ).one()  # fmt: skip


def _chain(conn: Connection, seq: int, prev: str) -> tuple[int, int]:
    """Link up to BATCH committed unchained events after the head (position ``seq``, hash
    ``prev``), in id order; how many, and the head's position after them."""
    pending = conn.execute(
        sa.select(
            _EVENTS.c.id, _EVENTS.c.at, _EVENTS.c.actor, _EVENTS.c.kind,
            _EVENTS.c.subject, _EVENTS.c.payload,
        )
        .where(_EVENTS.c.seq.is_(None))
        .order_by(_EVENTS.c.id)
        .limit(BATCH)
    ).all()  # fmt: skip
    links: list[dict[str, Any]] = []
    for ev in pending:
        seq += 1
        # Hashed as stored: ``at`` and ``payload`` as read back, which is what verifiers read.
        h = link(prev, canonical_event(ev.at, ev.actor, ev.kind, ev.subject, ev.payload))
        links.append({"b_id": ev.id, "b_seq": seq, "b_prev": prev, "b_hash": h})
        prev = h
    if links and conn.dialect.name == "postgresql":
        # One UPDATE joined to the links as arrays: half the sealer's time went to an
        # executemany's statement per event.
        linked = (
            sa.func.unnest(
                sa.bindparam("ids", [x["b_id"] for x in links], type_=_BIGINTS),
                sa.bindparam("seqs", [x["b_seq"] for x in links], type_=_BIGINTS),
                sa.bindparam("prevs", [x["b_prev"] for x in links], type_=_HASHES),
                sa.bindparam("hashes", [x["b_hash"] for x in links], type_=_HASHES),
            )
            .table_valued("id", "seq", "prev", "hash")
            .render_derived(name="linked")
        )
        conn.execute(
            sa.update(_EVENTS)
            .where(_EVENTS.c.id == linked.c.id)
            .values(seq=linked.c.seq, prev_hash=linked.c.prev, hash=linked.c.hash)
        )
    elif links:
        conn.execute(
            sa.update(_EVENTS)
            .where(_EVENTS.c.id == sa.bindparam("b_id"))
            .values(seq=sa.bindparam("b_seq"), prev_hash=sa.bindparam("b_prev"),
                    hash=sa.bindparam("b_hash")),
            links,
        )  # fmt: skip
    return len(links), seq


def _checkpoint_if_due(
    conn: Connection, config: AuditSettings, last: Any, head: int, *, force: bool
) -> Checkpoint | None:
    """Store (not yet witnessed) a signed checkpoint over the events chained since the
    ``last`` one up to ``head``, if due: N of them (a checkpoint covers N), T seconds since
    the last, or forced."""
    seq_from = (last.seq_to if last is not None else 0) + 1
    unsealed = head - seq_from + 1
    if unsealed <= 0:
        return None
    seq_to = head
    if unsealed >= config.checkpoint_events and not force:
        seq_to = seq_from + config.checkpoint_events - 1
    elif not force and not _old_enough(conn, last, seq_from, config.checkpoint_seconds):
        return None
    head_hash = conn.execute(sa.select(_EVENTS.c.hash).where(_EVENTS.c.seq == seq_to)).scalar()
    from exchange.audit import keys  # cryptography: only when a checkpoint is signed

    key = keys.signing_key(config, may_create=last is None)
    cp = sign(
        Checkpoint(
            installation=_installation(conn),
            seq_from=seq_from,
            seq_to=seq_to,
            count=seq_to - seq_from + 1,
            head_hash=str(head_hash),
            at=utcnow(),
            prev_signature=last.signature if last is not None else "",
            key_id=key.key_id,
        ),
        key.private,
    )
    conn.execute(
        sa.insert(_CHECKPOINTS).values(
            seq_from=cp.seq_from, seq_to=cp.seq_to, count=cp.count, head_hash=cp.head_hash,
            at=cp.at, prev_signature=cp.prev_signature, key_id=cp.key_id,
            signature=cp.signature, witnessed=False,
        )
    )  # fmt: skip
    return cp


def _old_enough(conn: Connection, last: Any, seq_from: int, seconds: float) -> bool:
    """Whether T seconds have passed since the last checkpoint (or, before the first, since
    the first event it would cover)."""
    since = last.at if last is not None else None
    if since is None:
        since = conn.execute(sa.select(_EVENTS.c.at).where(_EVENTS.c.seq == seq_from)).scalar()
    return since is None or utcnow() - since >= dt.timedelta(seconds=seconds)


def _witness_stored(conn: Connection, config: AuditSettings) -> int:
    """Append to the witness every stored checkpoint not witnessed yet (oldest first) and
    mark it; a line already written (a crash before the mark) is not written again."""
    rows = conn.execute(
        sa.select(_CHECKPOINTS).where(_CHECKPOINTS.c.witnessed.is_(False))
        .order_by(_CHECKPOINTS.c.seq_to)
    ).all()  # fmt: skip
    if not rows:
        return 0
    installation = _installation(conn)
    written = _tail_signatures(config.witness)
    for row in rows:
        cp = Checkpoint.from_row(row, installation)
        if cp.signature not in written:
            witness.append_line(config.witness, cp.line())
            crashpoint("audit.seal:witness-written")
        conn.execute(
            sa.update(_CHECKPOINTS).where(_CHECKPOINTS.c.id == row.id).values(witnessed=True)
        )
    return len(rows)


def _installation(conn: Connection) -> str:
    """The store's installation id, read on the sealer's own connection (a session of its
    own could wait behind this transaction's write lock)."""
    found = conn.execute(sa.select(Installation.installation_id)).scalar()
    if found is None:
        raise BadInput("the metadata store has no installation id (table 'installation')")
    return str(found)


def _tail_signatures(path: Path) -> set[str]:
    """Signatures in the witness's last lines: a checkpoint written before a crash is among
    them (checkpoints are witnessed in order, the oldest unwitnessed one first)."""
    if not path.exists():
        return set()
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        f.seek(max(0, size - WITNESS_TAIL))
        tail = f.read().decode("utf-8", errors="replace")
    found: set[str] = set()
    for text in tail.splitlines():
        start = text.find('"signature":"')
        if start >= 0:
            end = text.find('"', start + 13)
            found.add(text[start + 13 : end])
    return found


class _Sealer:
    """This process's sealing of one store after commits, coalesced: a commit seals inline
    when no seal of this process has started for ``COALESCE_S``, else it leaves the work to
    the store's timer thread, which seals once that interval has passed (one attempt for every
    commit made meanwhile). The thread holds no reference to the store but while it seals,
    and ends after ``IDLE_S`` without work."""

    def __init__(self, store: Store) -> None:
        self._store = weakref.ref(store)
        self._cond = threading.Condition()
        self._requested = 0  # commits handed to the thread
        self._handled = 0  # of those, how many a finished attempt of the thread covered
        self._running = 0  # seals of this process under way (inline or the thread's)
        self._last_start = -COALESCE_S  # time.monotonic() when one last started
        self._thread: threading.Thread | None = None
        self.stopping = False  # the process exits: a lease ends after its round
        self.others_hold = False  # the last attempt found another process's lease

    def claim_inline(self) -> bool:
        """Whether the committing thread seals now (and counts as running if so)."""
        with self._cond:
            now = time.monotonic()
            if self._running or now - self._last_start < COALESCE_S:
                return False
            self._running += 1
            self._last_start = now
            return True

    def inline_done(self) -> None:
        with self._cond:
            self._running -= 1
            self._cond.notify_all()

    def request(self) -> None:
        """Hand a commit's sealing to the timer thread (started if it is not running)."""
        with self._cond:
            self._requested += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="exchange-audit-sealer", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def settle(self, timeout: float) -> bool:
        """Wait until nothing is handed over (re-checks included) and no seal of this process
        runs; whether that happened within ``timeout`` seconds."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self._handled >= self._requested and not self._running, timeout
            )

    def round_starting(self) -> int:
        """A lease's round starts: the commits handed over so far, which it covers."""
        with self._cond:
            self._last_start = time.monotonic()
            return self._requested

    def round_done(self, upto: int) -> None:
        with self._cond:
            self._handled = max(self._handled, upto)
            self._cond.notify_all()

    def outstanding(self) -> bool:
        with self._cond:
            return self._handled < self._requested

    def _loop(self) -> None:
        while True:
            with self._cond:
                if not self._cond.wait_for(lambda: self._handled < self._requested, IDLE_S):
                    self._thread = None  # a later request starts another
                    return
                # Another process's lease seals this one's commits: look less often.
                wait = RETRY_S if self.others_hold else COALESCE_S
                delay = self._last_start + wait - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # commits arriving meanwhile are covered by this attempt
            with self._cond:
                upto = self._requested  # read before the attempt starts: it sees them all
                self._running += 1
                self._last_start = time.monotonic()
            more = False
            try:
                store = self._store()
                if store is not None:
                    more = _lease_logged(store, self) if _leased(store) else _attempt(store)
                    del store
            finally:
                with self._cond:
                    self._running -= 1
                    self._handled = max(self._handled, upto)
                    if more:  # the re-check, after the interval: commits keep coming
                        self._requested += 1
                    self._cond.notify_all()


_sealers: weakref.WeakKeyDictionary[Store, _Sealer] = weakref.WeakKeyDictionary()
_sealers_lock = threading.Lock()


def _sealer(store: Store) -> _Sealer:
    with _sealers_lock:
        found = _sealers.get(store)
        if found is None:
            found = _sealers[store] = _Sealer(store)
        return found


def settle(store: Store, timeout: float = 10.0) -> bool:
    """Wait for this process's pending seal of ``store`` (commits whose sealing was left to
    the timer thread); whether it finished within ``timeout`` seconds. What other processes
    appended is theirs to seal (or the next seal's)."""
    with _sealers_lock:
        found = _sealers.get(store)
    return True if found is None else found.settle(timeout)


def _seal_logged(store: Store, *, force: bool, wait: bool) -> None:
    try:
        _seal(store, settings_for(store), force=force, wait=wait)
    except Exception as exc:  # noqa: BLE001 - what it recorded is committed; the next seal repairs
        # Never a key: the errors of exchange.audit.keys name only files and variables.
        log.warning("the audit log could not be sealed now (the next seal will): %s", exc)


def _attempt(store: Store) -> bool:
    """One sealing round after commits; whether another is due (a full batch, a checkpoint
    to witness, events committed meanwhile: the holder's re-check). That one is left to the
    timer thread, after the interval, so that neither an appender nor the thread becomes a
    sealer that never stops while commits keep coming."""
    try:
        done = _round(store, settings_for(store), force=False, wait=False)
        if done is None:
            return False  # the lock's holder re-checks after its commit
        if done.checkpoint is not None:
            crashpoint("audit.seal:checkpoint-stored")
            return True
        # Having chained, look again in the next attempt rather than now: under load there
        # is always more (the look would be wasted), and when it stops that attempt finds
        # nothing. Having chained nothing, look now: an appender may have committed after
        # this round's read and found the lock taken.
        return done.chained > 0 or _pending(store)
    except Exception as exc:  # noqa: BLE001 - as in _seal_logged
        log.warning("the audit log could not be sealed now (the next seal will): %s", exc)
        return False


def _leased(store: Store) -> bool:
    """Whether ``store`` is sealed under a lease (PostgreSQL); SQLite's sealers wait for its
    one write lock round by round."""
    return store.engine.dialect.name == "postgresql"


def _lease_logged(store: Store, sealer: _Sealer) -> bool:
    try:
        return _lease(store, sealer)
    except Exception as exc:  # noqa: BLE001 - as in _seal_logged
        log.warning("the audit log could not be sealed now (the next seal will): %s", exc)
        return False


def _seal_inline(store: Store, sealer: _Sealer) -> None:
    """One round in the committing thread; the rest is the timer thread's."""
    try:
        more = _attempt(store)
    finally:
        sealer.inline_done()
    if more:
        sealer.request()


@sa.event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    """Seal what a Store session appended, once it has committed: a forced checkpoint at
    once, waiting for the lock; otherwise inline or by the timer thread (``_Sealer``)."""
    appended = session.info.pop(APPENDED, 0)
    force = bool(session.info.pop(FORCE_CHECKPOINT, False))
    store = session.info.get("store")
    if not (appended or force) or not isinstance(store, Store):
        return
    crashpoint("audit.append:committed")
    if force:
        _seal_logged(store, force=True, wait=True)
        return
    sealer = _sealer(store)
    # Under a lease, never inline: the committing thread goes back to its work at once.
    if not _leased(store) and sealer.claim_inline():
        _seal_inline(store, sealer)
    else:
        sealer.request()


@atexit.register
def _seal_at_exit() -> None:
    """Seal what this process left to its timer threads before it ends (a process killed
    leaves it to the next seal anywhere)."""
    with _sealers_lock:
        pending = [(s, store) for store, s in _sealers.items()]
    for sealer, _ in pending:
        sealer.stopping = True  # a lease held for other processes ends after its round
    for sealer, store in pending:
        if _store_gone(store):
            continue
        if sealer.outstanding() and not sealer.settle(EXIT_WAIT_S):
            _seal_logged(store, force=False, wait=True)


def _store_gone(store: Store) -> bool:
    """A SQLite store whose file was removed before exit (a scratch workspace): nothing of it
    is left to seal, and opening it would only make an empty file and warn."""
    url = store.engine.url
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return False
    return not Path(url.database).exists()


def _forget_sealers() -> None:
    """A forked child has none of its parent's threads: it starts its own."""
    global _sealers_lock
    _sealers_lock = threading.Lock()
    _sealers.clear()


os.register_at_fork(after_in_child=_forget_sealers)


@sa.event.listens_for(Session, "after_soft_rollback")
def _after_rollback(session: Session, previous_transaction: Any) -> None:
    """What a rolled-back transaction appended is gone: nothing to seal for it."""
    if previous_transaction.parent is None:
        session.info.pop(APPENDED, None)
        session.info.pop(FORCE_CHECKPOINT, None)
