"""One API call, one unit of work: the action and its ``api.call`` audit event commit in the
same transaction, or neither does.

An endpoint runs its action through ``in_transaction``: the workflow functions it calls open
their sessions on a ``JoinedStore``, which hands them the call's own transaction, and the
``api.call`` event is appended to that transaction before it commits. A call that ends in an
error (refused, invalid, or a bug: 500) has its action rolled back and is audited afterwards,
in a transaction of its own, by the middleware (``audit_unrecorded``).

A read (GET) changes nothing, so it needs no transaction of its own: its user comes from a
small cache of token hashes (``Principals``) and its event is appended with the other reads'
in one batch (``GroupAudit``), whose transaction also checks that every token of the batch is
still live. A token revoked after it was cached is thus refused (401) from the first read
whose batch starts after the revocation committed: revocation takes effect at once on every
server process, and a read costs no authentication query.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.orm import Session

from exchange import audit
from exchange.kernel.errors import ExchangeError, Unauthorized
from exchange.store import Store
from exchange.workflow.users import Principal, authenticate, hash_token, live_token_hashes
from exchange.workspace import Workspace

T = TypeVar("T")


@dataclass
class Call:
    """The HTTP call being served: what its audit event says, and whether it was written."""

    method: str
    path: str
    principal: Principal | None = None
    token: str | None = None  # in memory only, to name the caller of a refused call
    recorded: bool = False

    @property
    def reads_only(self) -> bool:
        """A GET changes nothing: its event needs no action's transaction."""
        return self.method in ("GET", "HEAD")

    @property
    def subject(self) -> str:
        return f"{self.method} {self.path}"


# Set by the middleware for each request; the endpoint, running in a worker thread, sees the
# same Call object (contextvars are copied into the thread) and marks it recorded.
_CURRENT: ContextVar[Call | None] = ContextVar("exchange_api_call", default=None)


def begin(method: str, path: str) -> tuple[Call, Token[Call | None]]:
    call = Call(method, path)
    return call, _CURRENT.set(call)


def end(token: Token[Call | None]) -> None:
    _CURRENT.reset(token)


def current() -> Call | None:
    return _CURRENT.get()


class JoinedStore(Store):
    """The call's transaction, for code that opens a session of its own: it joins the call's
    transaction instead of committing on its own."""

    def __init__(self, session: Session):  # no engine of its own: nothing to migrate or dispose
        self._session = session

    @contextmanager
    def session(self) -> Iterator[Session]:
        yield self._session

    def close(self) -> None:
        pass


def event(call: Call, status: int) -> audit.Event:
    """The call's ``api.call`` event (never a token, never a body)."""
    who = call.principal
    return audit.Event(
        "api.call",
        call.subject,
        {"status": status, "user_id": who.user_id if who else None},
        actor=who.name if who else "anonymous",
    )


def record(s: Session, call: Call, status: int) -> None:
    """Append the call's ``api.call`` event in ``s``."""
    audit.append_many(s, [event(call, status)])


class Principals:
    """The users of recently authenticated tokens, by token hash (never the token). Only a
    read trusts an entry, and its batch checks the token again before the read is answered
    (``GroupAudit``); an entry expires after ``TTL_S`` so that a change to the user (its role,
    its department) is seen within that time."""

    TTL_S = 60.0
    MAX = 10_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, Principal]] = OrderedDict()

    def get(self, token_hash: str) -> Principal | None:
        with self._lock:
            entry = self._entries.get(token_hash)
            if entry is None:
                return None
            if time.monotonic() - entry[0] > self.TTL_S:
                del self._entries[token_hash]
                return None
            return entry[1]

    def put(self, token_hash: str, who: Principal) -> None:
        with self._lock:
            self._entries[token_hash] = (time.monotonic(), who)
            self._entries.move_to_end(token_hash)
            while len(self._entries) > self.MAX:
                self._entries.popitem(last=False)

    def drop(self, token_hash: str) -> None:
        with self._lock:
            self._entries.pop(token_hash, None)


@dataclass
class _Pending:
    """A call waiting for its event: ``token_hash`` given, the event is appended only if the
    token is still live, else ``refused`` is appended instead and the call is told so."""

    event: audit.Event
    done: Future[bool]
    token_hash: str | None = None
    refused: audit.Event | None = None


class GroupAudit:
    """The events of calls that changed nothing (reads, refusals, failures), appended by one
    thread in batches: a batch checks its reads' tokens and commits once for every call
    waiting, and each call waits until its own event is committed, so no call is answered
    unaudited. Calls that act append their event in
    their action's transaction (``in_transaction``). Appending takes no lock (the sealer
    links committed events afterwards, ``exchange.audit.seal``), but each commit is an
    fsync of the store's log: batching is what keeps concurrent reads from queueing behind
    one another's commits.

    A batch also waits, ``GATHER_S`` at most, for the reads still being served (``serving``):
    they were released by the previous commit together and come back within moments, and
    one commit (one fsync of the store's log) for all of them is what amortises; taking only
    the first would leave the others to wait a whole commit more. A lone read waits for
    nothing."""

    MAX_BATCH = 500
    TIMEOUT_S = 60
    GATHER_S = 0.005

    def __init__(self, store: Store):
        self._store = store
        self._ready = threading.Condition()
        self._queue: list[_Pending] = []  # guarded by _ready
        self._serving = 0  # reads between begin_read and their append
        self._writing = 0  # events of the batch being committed, guarded by _ready
        self._start = threading.Lock()
        self._thread: threading.Thread | None = None
        self.principals = Principals()

    def begin_read(self) -> None:
        """A read starts its action: its event will follow (``append(served=True)``), or
        ``end_read`` if the action raised."""
        with self._ready:
            self._serving += 1

    def end_read(self) -> None:
        with self._ready:
            self._serving -= 1
            self._ready.notify()

    def unwritten(self) -> int:
        """Events not yet committed: queued for the next batch or in the one being written."""
        with self._ready:
            return len(self._queue) + self._writing

    def append(
        self,
        e: audit.Event,
        token_hash: str | None = None,
        refused: audit.Event | None = None,
        *,
        served: bool = False,
    ) -> bool:
        """Append ``e``; return once it is committed (raise what the commit raised). With a
        ``token_hash``: append ``e`` if that token is still live and return True, else append
        ``refused`` and return False. ``served``: the event of a read that ``begin_read``
        announced."""
        with self._start:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="api-audit", daemon=True)
                self._thread.start()
        pending = _Pending(e, Future(), token_hash, refused)
        with self._ready:  # queued and no longer served at once: a batch never misses it
            self._queue.append(pending)
            if served:
                self._serving -= 1
            self._ready.notify()
        return pending.done.result(timeout=self.TIMEOUT_S)

    def _take(self) -> list[_Pending]:
        """The next batch: what is queued, once the reads being served have joined it (or
        ``GATHER_S`` passed)."""
        with self._ready:
            while not self._queue:
                self._ready.wait()
            until = time.monotonic() + self.GATHER_S
            while self._serving > 0 and len(self._queue) < self.MAX_BATCH:
                left = until - time.monotonic()
                if left <= 0:
                    break
                self._ready.wait(left)
            batch, self._queue = self._queue[: self.MAX_BATCH], self._queue[self.MAX_BATCH :]
            self._writing = len(batch)
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            try:
                with self._store.session() as s:
                    checked = [p.token_hash for p in batch if p.token_hash is not None]
                    live = live_token_hashes(s, checked) if checked else set()
                    ok = [p.token_hash is None or p.token_hash in live for p in batch]
                    events = [
                        p.event if fine or p.refused is None else p.refused
                        for p, fine in zip(batch, ok, strict=True)
                    ]
                    audit.append_many(s, events)
            except Exception as exc:  # each waiting call fails with it (a 500, audited or not)
                for p in batch:
                    p.done.set_exception(exc)
            else:
                for p, fine in zip(batch, ok, strict=True):
                    p.done.set_result(fine)
            finally:
                with self._ready:
                    self._writing = 0


def in_transaction(
    ws: Workspace, token: str, status: int, action: Callable[[Workspace, Principal], T]
) -> T:
    """In one transaction: authenticate ``token``, run ``action`` as its user on a workspace
    whose store is that transaction, append the ``api.call`` event (``status``: what the
    endpoint answers on success), and commit all of it."""
    call = current()
    if call is not None and call.reads_only:
        return _read(ws, call, token, status, action)
    with ws.store.session() as s:
        who = authenticate(s, token)
        if call is not None:
            call.principal = who
        result = action(dataclasses.replace(ws, store=JoinedStore(s)), who)
        if call is not None:
            record(s, call, status)
    if call is not None:
        call.recorded = True  # only once the commit went through
    return result


def for_department(
    code: str | None, action: Callable[[Workspace, Principal], T], *, units_only: bool = False
) -> Callable[[Workspace, Principal], T]:
    """``action`` taken for department ``code``: by a supervising department's user for its
    unit where the platform allows it (``exchange.workflow.acting``), refused by name
    otherwise; ``units_only``: any other department is left to the action's own check."""
    if code is None:
        return action

    def run(ws: Workspace, who: Principal) -> T:
        from exchange.accounts.config import AccountSettings
        from exchange.accounts.departments import principal_for

        allowed = AccountSettings.from_env().supervisor_acts_for_units
        with ws.store.session() as s:
            who = principal_for(s, ws.catalog, who, code, allowed=allowed, units_only=units_only)
        return action(ws, who)

    return run


def _read(
    ws: Workspace, call: Call, token: str, status: int, action: Callable[[Workspace, Principal], T]
) -> T:
    """A read: its user from the cache (or the store, then cached), its action on the
    workspace's own store (nothing to commit with it), and its event appended in a batch that
    checks the token is still live; a revoked one is refused as if it had never been
    cached."""
    group = group_audit(ws)
    token_hash = hash_token(token)
    who = group.principals.get(token_hash)
    cached = who is not None
    if who is None:
        with ws.store.session() as s:
            who = authenticate(s, token)
        group.principals.put(token_hash, who)
    call.principal = who
    group.begin_read()
    try:
        result = action(ws, who)
    except BaseException as exc:
        group.end_read()
        if cached and isinstance(exc, ExchangeError):
            # refused (404, 403...): a revoked token's answer is 401 all the same
            _recheck(ws, call, token, token_hash)
        raise
    refused = dataclasses.replace(call, principal=None)
    if not group.append(event(call, status), token_hash, event(refused, 401), served=True):
        group.principals.drop(token_hash)
        call.principal = None
        call.recorded = True  # its event says 401, as the answer will
        raise Unauthorized("unknown or revoked API token")
    call.recorded = True  # only once the commit went through
    return result


def _recheck(ws: Workspace, call: Call, token: str, token_hash: str) -> None:
    """Authenticate ``token`` in the store again; forget it and raise if it was revoked."""
    with ws.store.session() as s:
        try:
            authenticate(s, token)
        except Unauthorized:
            group_audit(ws).principals.drop(token_hash)
            call.principal = None
            raise


_GROUPS: dict[int, GroupAudit] = {}
_GROUPS_LOCK = threading.Lock()


def group_audit(ws: Workspace) -> GroupAudit:
    """The one GroupAudit of a store (by identity: a workspace is shared by an app's calls)."""
    with _GROUPS_LOCK:
        group = _GROUPS.get(id(ws.store))
        if group is None or group._store is not ws.store:
            group = _GROUPS[id(ws.store)] = GroupAudit(ws.store)
        return group


def audit_unrecorded(ws: Workspace, call: Call, status: int) -> None:
    """The event of a call whose endpoint did not record one (refused, invalid, failed)."""
    if call.recorded:
        return
    if call.principal is None and call.token is not None:
        # refused before its transaction (invalid input): still name who sent it
        with ws.store.session() as s:
            try:
                call.principal = authenticate(s, call.token)
            except Unauthorized:
                pass
    group_audit(ws).append(event(call, status))
    call.recorded = True
