"""Who works on a resource's run right now: the run lease.

One row per resource (``run_leases``) while a holder has it: the holder's *name*, the run it
works on, when it took the lease and the last heartbeat of any of its processes. A holder is
one CLI process (the default) or one Airflow DAG run (``shared``), whose tasks run in several
processes, one after the other and side by side (the mapped loads): each process working for
the holder has its own member row (``run_lease_members``: pid, host, heartbeat) and gives back
only that row, so one task finishing never frees the lease for its siblings. A CLI process's
lease goes with its one member; a DAG run's lease stays between its tasks and is given back
when the record step ends (``release_all``).

Another holder may take the lease over only when no member is alive:

* a member on this host is alive while its pid exists, however old its heartbeat (a long
  store transaction or a suspended laptop is not a takeover);
* a member on another host is alive while its heartbeat is younger than ``LEASE_TIMEOUT``;
* a DAG run with no live member (between two tasks) still holds the lease until
  ``LEASE_TIMEOUT`` after its last heartbeat.

Otherwise the newcomer is refused with ``RunBusy`` and touches nothing. Heartbeats are written
and compared with the store's clock (PostgreSQL's, or this host's for a SQLite file), so the
hosts' own clocks need not agree.

A process whose holder lost the lease (it went silent and was taken over) learns it from its
next heartbeat: the lease is marked ``lost``, never taken back, and the steps stop at the next
batch or step (``LeaseLost``).

Taking the lease is one transaction under the store's writer lock (``serialize``), so two
processes that race for it on a SQLite or a PostgreSQL store see each other's row.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.orm import Session

from exchange import audit
from exchange.kernel.clock import shown, utcnow
from exchange.kernel.errors import LeaseLost, RunBusy
from exchange.store.locks import serialize
from exchange.store.models import RunLease, RunLeaseMember
from exchange.workspace import Workspace

log = logging.getLogger(__name__)

#: A heartbeat older than this means the holder stopped (on another host; or a DAG run that
#: started no task since).
LEASE_TIMEOUT = dt.timedelta(minutes=2)
#: How often a holder renews its heartbeat while a step works.
HEARTBEAT_EVERY = dt.timedelta(seconds=10)


@dataclass(frozen=True)
class Holder:
    """Who asks for a lease: a name, and the process that works for it. A ``shared`` name
    (an Airflow DAG run) is held between its processes' steps."""

    name: str
    pid: int
    host: str
    shared: bool = False


def this_process(name: str | None = None) -> Holder:
    """The calling process as a holder; ``name`` shares the lease between processes (an
    Airflow DAG run's tasks), by default it is this process's own."""
    pid, host = os.getpid(), socket.gethostname()
    return Holder(name or f"pid {pid}@{host}", pid, host, shared=name is not None)


def store_now(s: Session) -> dt.datetime:
    """Now by the store's clock, naive UTC: every host compares heartbeats on one clock."""
    dialect = s.get_bind().dialect.name
    if dialect == "postgresql":
        return s.execute(sa.select(sa.func.timezone("UTC", sa.func.clock_timestamp()))).scalar_one()
    if dialect in ("mysql", "mariadb"):
        return s.execute(sa.select(sa.func.utc_timestamp(6))).scalar_one()
    return utcnow()  # a SQLite file: the one host that opens it is its clock


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def member_live(pid: int, host: str, heartbeat_at: dt.datetime, now: dt.datetime) -> bool:
    """On this host the pid decides; another host's process only its heartbeat can tell."""
    if host == socket.gethostname():
        return pid_alive(pid)
    return now - heartbeat_at <= LEASE_TIMEOUT


@dataclass(frozen=True)
class Member:
    pid: int
    host: str
    heartbeat_at: dt.datetime
    live: bool


@dataclass(frozen=True)
class LeaseInfo:
    """A lease as ``exchange runs`` and ``exchange status`` show it. ``state``: ``working`` (a
    live member), ``waiting`` (a DAG run between two tasks) or ``dead`` (anyone may take it)."""

    resource: str
    run_id: str | None
    holder: str
    shared: bool
    pid: int
    host: str
    acquired_at: dt.datetime
    heartbeat_at: dt.datetime
    members: tuple[Member, ...]
    state: str
    observed_at: dt.datetime

    @property
    def live(self) -> bool:
        """Whether the holder still has it: nobody else may take it now."""
        return self.state != "dead"

    def describe(self, now: dt.datetime | None = None) -> str:
        """``pid@host, heartbeat Ns ago`` for a process; a DAG run's name, its live tasks or
        ``waiting between tasks``; ``dead`` when nobody holds it any more."""
        age = int(((now or self.observed_at) - self.heartbeat_at).total_seconds())
        live = [f"{m.pid}@{m.host}" for m in self.members if m.live]
        dead = "" if self.live else ", dead"
        if not self.shared:
            m = (
                self.members[0]
                if self.members
                else Member(self.pid, self.host, self.heartbeat_at, False)
            )
            return f"{m.pid}@{m.host}, heartbeat {age}s ago{dead}"
        doing = f"tasks {', '.join(live)}" if live else "waiting between tasks"
        return f"{self.holder}: {doing}, heartbeat {age}s ago{dead}"

    def who(self) -> str:
        """The holder's processes, for ``RunBusy``."""
        live = [m for m in self.members if m.live]
        if not self.shared:
            m = live[0] if live else Member(self.pid, self.host, self.heartbeat_at, False)
            return f"pid {m.pid}, host {m.host}"
        if not live:
            age = int((self.observed_at - self.heartbeat_at).total_seconds())
            return f"waiting between its tasks, last heartbeat {age}s ago"
        return "tasks " + ", ".join(f"pid {m.pid} on {m.host}" for m in live)


def _members(s: Session, resource_code: str, holder: str) -> list[RunLeaseMember]:
    return list(
        s.execute(
            sa.select(RunLeaseMember).where(
                RunLeaseMember.resource_code == resource_code, RunLeaseMember.holder == holder
            )
        ).scalars()
    )


def _info(row: RunLease, members: list[RunLeaseMember], now: dt.datetime) -> LeaseInfo:
    ms = tuple(
        Member(m.pid, m.host, m.heartbeat_at, member_live(m.pid, m.host, m.heartbeat_at, now))
        for m in members
    )
    if any(m.live for m in ms):
        state = "working"
    elif row.shared and now - row.heartbeat_at <= LEASE_TIMEOUT:
        state = "waiting"
    else:
        state = "dead"
    return LeaseInfo(
        row.resource_code, row.run_id, row.holder, row.shared, row.pid, row.host,
        row.acquired_at, row.heartbeat_at, ms, state, now,
    )  # fmt: skip


def current(ws: Workspace, resource_code: str) -> LeaseInfo | None:
    """The resource's lease row (live or left behind by a dead holder), or None."""
    with ws.store.session() as s:
        row = s.get(RunLease, resource_code)
        if row is None:
            return None
        return _info(row, _members(s, resource_code, row.holder), store_now(s))


def leases(ws: Workspace) -> dict[str, LeaseInfo]:
    """Every lease row, by resource code."""
    with ws.store.session() as s:
        now = store_now(s)
        members: dict[tuple[str, str], list[RunLeaseMember]] = {}
        for m in s.execute(sa.select(RunLeaseMember)).scalars():
            members.setdefault((m.resource_code, m.holder), []).append(m)
        return {
            r.resource_code: _info(r, members.get((r.resource_code, r.holder), []), now)
            for r in s.execute(sa.select(RunLease)).scalars()
        }


def acquire(ws: Workspace, resource_code: str, holder: Holder, *, join: bool = False) -> str:
    """Take the resource's lease (or join it: the same name), or raise ``RunBusy`` naming the
    live holder; the token of this process's member row. ``join``: only an existing lease of
    this name is joined (a DAG run's later tasks), ``LeaseLost`` when another has it now."""
    token = secrets.token_hex(16)
    with ws.store.session() as s:
        serialize(s)  # one taker at a time: the rows read below are current until commit
        now = store_now(s)
        row = s.get(RunLease, resource_code)
        if join and (row is None or row.holder != holder.name):
            to, at = (
                ("nobody (it was given back)", now)
                if row is None
                else (_taker(row), row.acquired_at)
            )
            raise LeaseLost(resource_code, to, shown(at), "the DAG run's earlier tasks")
        if row is None:
            row = RunLease(
                resource_code=resource_code, holder=holder.name, shared=holder.shared,
                pid=holder.pid, host=holder.host, acquired_at=now, heartbeat_at=now,
            )  # fmt: skip
            s.add(row)
        elif row.holder != holder.name:
            info = _info(row, _members(s, resource_code, row.holder), now)
            if info.live:
                raise RunBusy(
                    resource_code, row.holder, row.run_id, info.who(), shown(row.acquired_at),
                    f"{int(LEASE_TIMEOUT.total_seconds() // 60)} minutes",
                )  # fmt: skip
            audit.append(
                s,
                "run.lease_taken_over",
                f"resource:{resource_code}",
                {
                    "run": row.run_id,
                    "from": row.holder,
                    "to": holder.name,
                    "members": [f"{m.pid}@{m.host}" for m in info.members],
                    "heartbeat": row.heartbeat_at.isoformat(),
                },
            )
            _drop_members(s, resource_code, row.holder)
            row.holder, row.shared, row.run_id = holder.name, holder.shared, None
            row.pid, row.host, row.acquired_at = holder.pid, holder.host, now
        else:  # joining its own name: the members that died meanwhile go
            for m in _members(s, resource_code, holder.name):
                if not member_live(m.pid, m.host, m.heartbeat_at, now):
                    s.delete(m)
        row.heartbeat_at = now
        s.add(
            RunLeaseMember(
                resource_code=resource_code, token=token, holder=holder.name, pid=holder.pid,
                host=holder.host, joined_at=now, heartbeat_at=now,
            )
        )  # fmt: skip
    return token


def _taker(row: RunLease) -> str:
    """The holder as a lost lease names it (a CLI holder's name is its ``pid N@host``)."""
    return f"{row.holder} (pid {row.pid}, host {row.host})" if row.shared else row.holder


def _drop_members(s: Session, resource_code: str, holder: str) -> None:
    s.execute(
        sa.delete(RunLeaseMember).where(
            RunLeaseMember.resource_code == resource_code, RunLeaseMember.holder == holder
        )
    )


def attach(ws: Workspace, resource_code: str, holder: Holder, run_id: str) -> None:
    """Name the run the holder works on (known once it is planned or resumed)."""
    with ws.store.session() as s:
        s.execute(
            sa.update(RunLease)
            .where(RunLease.resource_code == resource_code, RunLease.holder == holder.name)
            .values(run_id=run_id)
        )


@dataclass(frozen=True)
class Taken:
    """Who has the lease now that this holder lost it, and since when."""

    to: str
    at: str


def heartbeat(ws: Workspace, resource_code: str, holder: Holder, token: str) -> Taken | None:
    """Renew the member's and the lease's heartbeat; who has the lease when it is no longer
    this holder's (None: still its own)."""
    with ws.store.session() as s:
        now = store_now(s)
        done = s.execute(
            sa.update(RunLease)
            .where(RunLease.resource_code == resource_code, RunLease.holder == holder.name)
            .values(heartbeat_at=now)
        )
        if not getattr(done, "rowcount", 0):
            row = s.get(RunLease, resource_code)
            if row is None:
                return Taken("nobody (it was given back)", shown(now))
            return Taken(_taker(row), shown(row.acquired_at))
        mine = s.get(RunLeaseMember, (resource_code, token))
        if mine is None:  # dropped as dead by a sibling that joined meanwhile: alive after all
            s.add(
                RunLeaseMember(
                    resource_code=resource_code, token=token, holder=holder.name,
                    pid=holder.pid, host=holder.host, joined_at=now, heartbeat_at=now,
                )
            )  # fmt: skip
        else:
            mine.heartbeat_at = now
        return None


def release(ws: Workspace, resource_code: str, holder: Holder, token: str) -> None:
    """Give back this process's part. A process's own lease goes with it; a shared one (a DAG
    run) stays for its other and later tasks until ``release_all``."""
    with ws.store.session() as s:
        s.execute(
            sa.delete(RunLeaseMember).where(
                RunLeaseMember.resource_code == resource_code, RunLeaseMember.token == token
            )
        )
        mine = (RunLease.resource_code == resource_code, RunLease.holder == holder.name)
        if holder.shared:  # the wait until the next task counts from now
            s.execute(sa.update(RunLease).where(*mine).values(heartbeat_at=store_now(s)))
        else:
            s.execute(sa.delete(RunLease).where(*mine))


def release_all(ws: Workspace, resource_code: str, name: str) -> None:
    """The holder is done with the resource (a DAG run's record step): its lease and every
    member row go. Never another holder's."""
    with ws.store.session() as s:
        _drop_members(s, resource_code, name)
        s.execute(
            sa.delete(RunLease).where(
                RunLease.resource_code == resource_code, RunLease.holder == name
            )
        )


@dataclass
class Lease:
    """A lease this process holds, renewed from a background thread until released. When a
    heartbeat finds that another holder took it over, ``lost`` is set and the steps stop at
    their next ``check``."""

    ws: Workspace
    resource: str
    holder: Holder
    token: str = ""
    run_id: str | None = None
    done: str = "taking the lease"  # the last thing this process finished, for LeaseLost
    lost: threading.Event = field(default_factory=threading.Event)
    taken: Taken | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def attach(self, run_id: str) -> None:
        self.run_id = run_id
        attach(self.ws, self.resource, self.holder, run_id)

    def finished(self, what: str) -> None:
        """``what`` is done (a step, a delivery): a later LeaseLost says nothing after it was."""
        self.done = what

    def check(self) -> None:
        """Raise ``LeaseLost`` when another holder has taken the lease over."""
        if self.lost.is_set():
            taken = self.taken or Taken("another holder", "?")
            raise LeaseLost(self.resource, taken.to, taken.at, self.done)

    def guard(self, progress: Callable[[int], None]) -> Callable[[int], None]:
        """``progress`` that also stops the step between batches once the lease is lost."""

        def checked(n: int) -> None:
            progress(n)
            self.check()

        return checked

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._beat, name=f"exchange-lease-{self.resource}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_EVERY.total_seconds()):
            try:
                taken = heartbeat(self.ws, self.resource, self.holder, self.token)
            except Exception as exc:  # a missed beat must not stop the step; the next one may do
                log.warning("resource %s: lease heartbeat failed: %s", self.resource, exc)
                continue
            if taken is not None:  # never taken back: the run is the other holder's now
                self.taken = taken
                self.lost.set()
                log.error(
                    "resource %s: lost the lease to %s at %s", self.resource, taken.to, taken.at
                )
                return


@contextmanager
def holding(
    ws: Workspace, resource_code: str, holder: Holder | None = None, *, join: bool = False
) -> Iterator[Lease]:
    """Hold the resource's lease for the block (``RunBusy`` when a live holder has it)."""
    who = holder or this_process()
    token = acquire(ws, resource_code, who, join=join)
    lease = Lease(ws, resource_code, who, token)
    lease.start()
    try:
        yield lease
    finally:
        lease.stop()
        release(ws, resource_code, who, token)  # a lost lease: only its own member row goes
