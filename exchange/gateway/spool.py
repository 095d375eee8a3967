"""The gateway's spool: every call is written to a local file before it is answered, and a
flusher moves the file into the store (usage rows, audit events, the file's offset) in one
transaction per batch.

Who flushes: under ``exchange gateway`` one flusher *process* beside the serving processes
(``FlusherProcess``, running ``SpoolService``) tails every serving process's file and adopts
the dead ones: it is the only writer of usage rows and ``gateway.call`` events, so the serving
processes never give the interpreter to a store transaction while calls wait (a flush of 100
calls holds it ~16 ms), and the audit chain is extended from one place. Where the app is
mounted in another host (the Airflow api-server) with no flusher process, each process runs a
``Flusher`` thread of its own over its own file. A file a flusher process tails is named
``...{TAILED}``; the flusher process never reads a live file of a process with its own thread.

Each gateway process appends to its own file, ``<host>-<pid>-<start>.jsonl`` under
``$EXCHANGE_HOME/gateway/spool/``, which it holds with ``flock(LOCK_EX)`` while it writes it: a
lock another process can take means the owner is dead (the kernel drops it with the process,
however it ended) or has moved on, and that process adopts the file: flushes it to its end and
deletes it. A live process moves on to a new file past ``ROLL_BYTES`` or ``ROLL_S`` (the old
one released once the calls that started in it are answered), so its spool stays bounded.

A batch the store refuses (a value it cannot hold: ``REFUSED_ROWS``) is stored call by call,
and a call it still refuses is appended to ``rejected.jsonl`` beside the spool directory and
skipped: one line never stops the recording of the others.

A line is one ``os.write`` on an ``O_APPEND`` descriptor, so a line is whole in the file or
not there (a SIGKILL cannot tear it; only a full disk can, and then the call is not answered).
A call writes an ``asked`` line before the quota is asked, an ``admitted`` line once the
quota admitted it (before the upstream is called) and a ``done`` line before it is answered;
a call refused before the quota writes only its ``done`` line. An admitted line whose done
line never comes, in the file of a dead process, is the call the gateway died serving: its
usage row says ``interrupted``. So is an asked line with nothing after it if the quota
counted that call (the process died between the quota's answer and its admitted line):
the quota is asked by call id (``resolve``), so that every call the quota counted is a row.

The stored offset never passes an admitted line still waiting for its done line, so a file
read again from its offset finds every call not yet resolved; the lines after it that were
already written (their ``call_id`` is in the store) are skipped: a file flushed twice counts
each call once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import errno
import fcntl
import logging
import multiprocessing
import multiprocessing.process
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import msgspec
import sqlalchemy as sa
from sqlalchemy.orm import Session

from exchange import audit, lineage
from exchange.gateway.models import ApiCall, GatewaySpool
from exchange.kernel.modes import private_dirs
from exchange.store import Store

log = logging.getLogger(__name__)

ASKED = "q"  # the quota is about to be asked: the call may be counted from here on
ADMITTED = "a"
DONE = "d"
#: Which of the given call ids did the quota count? (``Quota.admitted``): how a call that
#: died between asking the quota and its admitted line is told apart from one never counted.
Resolver = Callable[[list[str]], set[str]]
#: The status of an interrupted call's usage row: no answer was sent.
NO_ANSWER = 0
SUFFIX = ".jsonl"
#: The end of the name of a file whose writer has no flusher thread: the flusher process's.
TAILED = ".tail" + SUFFIX
#: Held by the flusher process of a spool directory (one at a time; a second one waits).
FLUSHER_LOCK = "flusher.lock"
#: How much lower the flusher process's CPU priority is than the serving processes'.
FLUSHER_NICE = 10
#: At most this much of a file is read into one transaction (a store that was down for a
#: while is caught up in several).
READ_BYTES = 4 * 1024 * 1024
_IN_CHUNK = 500  # call ids per ``IN (...)`` when looking up the ones already stored
_CALLS = cast(sa.Table, ApiCall.__table__)


class Line(msgspec.Struct, omit_defaults=True):
    """One spool line: a call about to ask the quota (``k == "q"``), admitted (``"a"``) or
    answered (``"d"``). ``at`` is the
    call's arrival, in Unix seconds; ``st``, ``out``, ``ms`` and ``b`` (status, outcome,
    latency in milliseconds, response bytes) only on done lines. Never a code or a secret."""

    k: str
    id: str
    at: float
    res: str
    op: str
    code: int | None = None
    sub: int | None = None
    dept: str | None = None
    st: int = 0
    out: str = ""
    ms: float = 0.0
    b: int = 0


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Line).decode


class SpoolBroken(OSError):
    """A spool line could not be written whole (a full disk): the call is not answered."""


def spool_name(now: float | None = None, *, tailed: bool = False) -> str:
    """This process's file name: host, pid and start time (milliseconds) make it unique;
    ``tailed``: the flusher process stores it (this process has no flusher thread)."""
    start = int((time.time() if now is None else now) * 1000)
    host = socket.gethostname().replace("/", "_") or "host"
    return f"{host}-{os.getpid()}-{start}{TAILED if tailed else SUFFIX}"


#: A live process starts a new spool file past this size or this age (its old file, once its
#: calls in flight are answered, is released and stored and deleted like a dead process's).
ROLL_BYTES = 64 * 1024 * 1024
ROLL_S = 3600.0
ROLL_RETRY_S = 5.0


@dataclass
class _File:
    """One file a ``Spool`` writes: the current one, or an older one still finishing the
    calls that started in it."""

    fd: int
    name: str
    path: Path
    opened: float  # time.monotonic()
    size: int = 0
    in_flight: int = 0


class Spool:
    """The file this process appends its calls to, locked while the process writes it; past
    ``roll_bytes`` or ``roll_s`` a new call starts a new file, and the old one is released
    (unlocked: its writer has moved on) once the calls that started in it are answered, so
    that a live process's spool never grows without bound."""

    def __init__(
        self,
        directory: Path,
        *,
        flush_lines: int = 500,
        tailed: bool = False,
        roll_bytes: int = ROLL_BYTES,
        roll_s: float = ROLL_S,
    ):
        private_dirs(directory)  # department ids and call times: the engine's user alone
        self.directory = directory
        self._tailed = tailed
        self._roll_bytes = roll_bytes
        self._roll_s = roll_s
        self._roll_again = 0.0  # after a failed roll: not tried again on every call
        self._current = self._open()
        self._of_call: dict[str, _File] = {}  # a call in flight -> the file it started in
        self._flush_lines = flush_lines
        self._unflushed = 0
        #: Set when ``flush_lines`` lines were written since the flusher last woke.
        self.wake = threading.Event()

    @property
    def name(self) -> str:
        """The current file's name (a new call's lines go there)."""
        return self._current.name

    @property
    def path(self) -> Path:
        return self._current.path

    def _open(self) -> _File:
        now = time.time()
        while True:
            name = spool_name(now, tailed=self._tailed)
            # Created and locked under a name no adopter looks at, then renamed (the lock
            # goes with the file): an adopter never finds the new file before its lock is
            # held, which it would take for a dead process's, and delete under the writer.
            making = self.directory / (name + ".new")
            try:
                fd = os.open(making, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # a roll within the same millisecond: the next one
                now += 0.001
                continue
            if (self.directory / name).exists():
                os.close(fd)
                making.unlink(missing_ok=True)
                now += 0.001
                continue
            break
        # Never blocks: the name is new. Held until the descriptor closes.
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        path = self.directory / name
        os.rename(making, path)
        return _File(fd, name, path, time.monotonic())

    def _due(self) -> bool:
        f = self._current
        now = time.monotonic()
        if now < self._roll_again:
            return False
        return f.size >= self._roll_bytes or now - f.opened >= self._roll_s

    def _roll(self) -> None:
        old = self._current
        try:
            self._current = self._open()
        except OSError as exc:  # a full disk: keep writing the old one (a line may still fit)
            log.warning("spool %s: cannot start a new file (%s): kept", old.name, exc.strerror)
            self._roll_again = time.monotonic() + ROLL_RETRY_S
            return
        if old.in_flight == 0:
            os.close(old.fd)  # released: the flusher stores it to its end and deletes it
            old.fd = -1

    def write(self, line: Line) -> None:
        """Append ``line`` whole, or raise ``SpoolBroken`` (nothing or a torn line written);
        a call's lines all go to the file its first line went to."""
        f = self._of_call.get(line.id)
        if f is None:
            if self._due():
                self._roll()
            f = self._current
        try:
            self._append(f, line)
        finally:
            if line.k == DONE:
                self._answered(line.id)
            elif line.id not in self._of_call:
                self._of_call[line.id] = f
                f.in_flight += 1
        self._unflushed += 1
        if self._unflushed >= self._flush_lines:
            self._unflushed = 0
            self.wake.set()

    def _append(self, f: _File, line: Line) -> None:
        data = _encode(line) + b"\n"
        try:
            written = os.write(f.fd, data)
        except OSError as exc:
            raise SpoolBroken(exc.errno or errno.EIO, f"spool {f.name}: {exc.strerror}") from None
        f.size += written
        if written != len(data):
            raise SpoolBroken(errno.ENOSPC, f"spool {f.name}: a line was cut short")

    def _answered(self, call_id: str) -> None:
        f = self._of_call.pop(call_id, None)
        if f is None:
            return
        f.in_flight -= 1
        if f is not self._current and f.in_flight == 0 and f.fd >= 0:
            os.close(f.fd)  # the last call that started in it is answered: released
            f.fd = -1

    def close(self, *, remove: bool) -> None:
        """Release the files (and their locks); ``remove``: delete the current one first (all
        of it is stored); an older one still open is left to be stored like a dead one's."""
        for f in {id(f): f for f in self._of_call.values()}.values():
            if f is not self._current and f.fd >= 0:
                os.close(f.fd)
                f.fd = -1
        self._of_call.clear()
        f = self._current
        if f.fd < 0:
            return
        if remove:
            f.path.unlink(missing_ok=True)
        os.close(f.fd)
        f.fd = -1


@dataclass
class _Pending:
    offset: int  # where the admitted line starts
    line: Line


@dataclass
class SpoolReader:
    """How far one spool file has been read, and its admitted calls still unanswered."""

    path: Path
    position: int = 0
    pending: dict[str, _Pending] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def safe_offset(self) -> int:
        """Where a new reader must start: before every admitted line still waiting."""
        return min((p.offset for p in self.pending.values()), default=self.position)


@dataclass
class Batch:
    """What one flush read: the finished calls (done lines, interrupted admissions) and the
    reader's state once they are stored."""

    calls: list[Line]
    position: int
    pending: dict[str, _Pending]
    at_end: bool  # the file was read to its end (but for a partial last line)

    def safe_offset(self) -> int:
        return min((p.offset for p in self.pending.values()), default=self.position)


def read_batch(
    reader: SpoolReader, *, final: bool = False, resolve: Resolver | None = None
) -> Batch:
    """The complete lines past ``reader.position`` (``READ_BYTES`` at most), paired up; with
    ``final`` (the writer is dead and this is the file's end) the admitted calls left waiting
    are finished as interrupted, and so are the calls that asked the quota and got no further
    if ``resolve`` says the quota counted them (the others were never counted nor answered:
    nothing to record). ``reader`` itself is not changed."""
    with open(reader.path, "rb") as f:
        f.seek(reader.position)
        chunk = f.read(READ_BYTES + 1)
    more = len(chunk) > READ_BYTES
    chunk = chunk[:READ_BYTES]
    end = chunk.rfind(b"\n") + 1  # only complete lines; a partial last one waits
    pending = dict(reader.pending)
    calls: list[Line] = []
    offset = reader.position
    for raw in chunk[:end].split(b"\n")[:-1]:
        start, offset = offset, offset + len(raw) + 1
        try:
            line = _decode(raw)
        except msgspec.DecodeError:
            # A torn line (a full disk, by the writer's check never answered): nothing to count.
            log.warning("spool %s: skipping an unreadable line at byte %d", reader.name, start)
            continue
        if line.k in (ASKED, ADMITTED):
            earlier = pending.get(line.id)  # asked, then admitted: the offset of the first
            pending[line.id] = _Pending(earlier.offset if earlier else start, line)
        else:
            pending.pop(line.id, None)
            calls.append(line)
    at_end = not more  # a partial last line is not read (a live writer is finishing it)
    if final and at_end:
        if end != len(chunk):
            log.warning("spool %s: skipping a torn last line at byte %d", reader.name, offset)
        left = sorted(pending.values(), key=_by_offset)
        asked = [p.line.id for p in left if p.line.k == ASKED]
        counted = resolve(asked) if asked and resolve is not None else set()
        if len(counted) < len(asked):
            log.info(
                "spool %s: %d calls asked the quota and were not counted: nothing to record",
                reader.name, len(asked) - len(counted),
            )  # fmt: skip
        calls.extend(
            _interrupted(p.line) for p in left if p.line.k == ADMITTED or p.line.id in counted
        )
        pending = {}
    return Batch(calls, reader.position + end, pending, at_end)


def _by_offset(p: _Pending) -> int:
    return p.offset


def _interrupted(admitted: Line) -> Line:
    return msgspec.structs.replace(admitted, k=DONE, st=NO_ANSWER, out="interrupted")


def _stored_at(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).replace(tzinfo=None)


def usage_row(line: Line) -> dict[str, Any]:
    """The ``api_usage`` row of a finished call."""
    return {
        "call_id": line.id,
        "at": _stored_at(line.at),
        "code_id": line.code,
        "subscription_id": line.sub,
        "department_code": line.dept,
        "resource_code": line.res,
        "operation": line.op,
        "status": line.st,
        "outcome": line.out,
        "latency_ms": round(line.ms, 3),
        "bytes": line.b,
    }


def audit_event(line: Line) -> audit.Event:
    """The ``gateway.call`` event of a finished call: ids, never a code or a credential."""
    return audit.Event(
        "gateway.call",
        f"/{line.res}/{line.op}",
        {
            "call_id": line.id,
            "at": _stored_at(line.at).isoformat(),
            "code_id": line.code,
            "subscription_id": line.sub,
            "department": line.dept,
            "resource": line.res,
            "operation": line.op,
            "status": line.st,
            "outcome": line.out,
            "latency_ms": round(line.ms, 3),
            "bytes": line.b,
        },
        actor=f"department:{line.dept}" if line.dept else "anonymous",
    )


def _chunks(items: list[str], n: int) -> Iterator[list[str]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _stored_ids(s: Session, ids: list[str]) -> set[str]:
    found: set[str] = set()
    for part in _chunks(ids, _IN_CHUNK):
        found.update(
            s.execute(sa.select(ApiCall.call_id).where(ApiCall.call_id.in_(part))).scalars()
        )
    return found


#: ``store_batch``'s offset that leaves the file's row as it is.
_UNCHANGED = -1


def store_batch(s: Session, name: str, calls: Iterable[Line], offset: int | None) -> list[Line]:
    """In ``s``: the usage rows and audit events of ``calls`` not stored yet, and the file's
    offset (``None``: the file is done with, its row goes; ``_UNCHANGED``: left as it is).
    Returns the calls that were new (a re-read call already stored is not among them)."""
    calls = list({c.id: c for c in calls}.values())  # one row per call, whatever was re-read
    new = calls
    if calls:
        stored = _stored_ids(s, [c.id for c in calls])
        new = [c for c in calls if c.id not in stored]
    if new:
        s.execute(sa.insert(_CALLS), [usage_row(c) for c in new])
        # Sealed like every other event (a checkpoint every N events or T seconds): one per
        # flush would be five a second under load, each a witness line and an fsync.
        audit.append_many(s, [audit_event(c) for c in new])
    if offset == _UNCHANGED:
        return new
    row = s.get(GatewaySpool, name)
    if offset is None:
        if row is not None:
            s.delete(row)
    elif row is None:
        s.add(GatewaySpool(name=name, offset=offset))
    elif row.offset != offset:
        row.offset = offset
    return new


def stored_offset(store: Store, name: str) -> int:
    with store.session() as s:
        row = s.get(GatewaySpool, name)
        return row.offset if row is not None else 0


#: What a store raises for a row it refuses to hold (a NUL or a value out of range: DataError;
#: a constraint: IntegrityError), as opposed to a store that cannot be reached: the batch is
#: stored line by line and the line refused is set aside, so one line never stops the rest.
REFUSED_ROWS = (sa.exc.DataError, sa.exc.IntegrityError)
#: Beside the spool directory: each line the store refused, with the error's class.
REJECTED = "rejected.jsonl"


def rejected_path(directory: Path) -> Path:
    """The file a spool directory's refused lines go to (``$EXCHANGE_HOME/gateway/``)."""
    return directory.parent / REJECTED


def _store_lines(
    store: Store, reader: SpoolReader, calls: list[Line], offset: int | None
) -> list[Line]:
    """The batch in one transaction; if the store refuses a row of it, each call in its own
    (a call already stored is skipped, so a duplicate ``call_id`` is no refusal), each one
    it still refuses written to the rejected file and skipped; then the offset. Returns the
    calls this flush stored (none already stored before it)."""
    try:
        with store.session() as s:
            return store_batch(s, reader.name, calls, offset)
    except REFUSED_ROWS as exc:
        log.warning(
            "spool %s: the store refused a batch of %d calls (%s): storing them one by one",
            reader.name, len(calls), type(exc).__name__,
        )  # fmt: skip
    stored: list[Line] = []
    for call in {c.id: c for c in calls}.values():
        try:
            with store.session() as s:
                stored += store_batch(s, reader.name, [call], _UNCHANGED)
        except REFUSED_ROWS as exc:
            with store.session() as s:
                if _stored_ids(s, [call.id]):  # stored meanwhile by another flusher: a duplicate
                    continue
            _reject(reader, call, exc)
    with store.session() as s:
        store_batch(s, reader.name, [], offset)
    return stored


def _reject(reader: SpoolReader, call: Line, exc: Exception) -> None:
    """Set ``call`` aside: its line and the error's class (never the error's text, which
    quotes the statement's parameters), one line of ``rejected.jsonl``."""
    path = rejected_path(reader.path.parent)
    entry = {"spool": reader.name, "error": type(exc).__name__, "line": call}
    data = msgspec.json.encode(entry) + b"\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    log.error(
        "spool %s: the store refused call %s (%s): skipped, its line is in %s",
        reader.name, call.id, type(exc).__name__, path,
    )  # fmt: skip


def flush(
    store: Store, reader: SpoolReader, *, final: bool = False, resolve: Resolver | None = None
) -> int:
    """Store what ``reader`` has not stored yet, one transaction per ``READ_BYTES``; with
    ``final`` (its writer is dead) to the file's end, unanswered admissions as interrupted,
    and the file's offset row removed. Returns the calls stored."""
    total = 0
    while True:
        batch = read_batch(reader, final=final, resolve=resolve)
        last = final and batch.at_end
        moved = batch.position != reader.position or batch.calls
        if moved or last:
            offset = None if last else batch.safe_offset()
            stored = _store_lines(store, reader, batch.calls, offset)
            total += len(stored)
            if stored:  # newly in the store: their lineage goes out, once (never raises)
                lineage.api_calls_delivered(store, stored)
        reader.position, reader.pending = batch.position, batch.pending
        if batch.at_end:
            return total


def adopt(
    store: Store, directory: Path, own: str | None = None, resolve: Resolver | None = None
) -> int:
    """Flush and delete every spool file in ``directory`` whose owner is dead (its lock can be
    taken), ``own`` excepted. Returns the calls stored."""
    total = 0
    if not directory.is_dir():
        return 0
    remove_unfinished(directory)
    failed: Exception | None = None
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        if path.name == own:
            continue
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:  # another process adopted it meanwhile
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its process is alive
            if not path.exists():  # adopted and deleted between our open and our lock
                continue
            reader = SpoolReader(path, stored_offset(store, path.name))
            total += flush(store, reader, final=True, resolve=resolve)
            path.unlink(missing_ok=True)
            log.info("adopted spool %s of a dead gateway process", path.name)
        except Exception as exc:  # the next files are still adopted; this one is retried
            log.exception("could not store spool %s: left for the next adoption", path.name)
            failed = exc
        finally:
            os.close(fd)
    if failed is not None:
        raise failed
    return total


def remove_unfinished(directory: Path) -> None:
    """Delete the ``*.new`` files of processes that died creating their spool (between its
    creation and its rename: nothing was written to it)."""
    for path in directory.glob(f"*{SUFFIX}.new"):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            if _owner_dead(fd):
                path.unlink(missing_ok=True)
        finally:
            os.close(fd)


class Flusher:
    """The thread that moves this process's spool into the store every ``interval_s`` (or
    sooner when the spool says enough lines are waiting), and adopts dead processes' files
    every ``adopt_s``. A store that cannot be written is retried at the next tick: the file
    keeps every call meanwhile."""

    def __init__(
        self,
        store: Store,
        spool: Spool,
        *,
        interval_s: float = 0.2,
        adopt_s: float = 10.0,
        resolve: Resolver | None = None,
    ):
        self.store = store
        self.resolve = resolve
        self.spool = spool
        self.reader = SpoolReader(spool.path)
        self.interval_s = interval_s
        self.adopt_s = adopt_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one flush at a time (the thread's, or flush_now's)
        self.failures = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gateway-spool", daemon=True)
        self._thread.start()

    def flush_now(self) -> int:
        with self._lock:
            return self._follow() + flush(self.store, self.reader)

    def _follow(self) -> int:
        """When the spool has started a new file: what the old one holds so far, then read
        the new one. The old one, once released, is adopted like a dead process's file (by
        this thread's next adoption, or another process's)."""
        if self.reader.path == self.spool.path:
            return 0
        stored = flush(self.store, self.reader)
        self.reader = SpoolReader(self.spool.path)
        return stored

    def _run(self) -> None:
        next_adopt = time.monotonic() + self.adopt_s
        while not self._stop.is_set():
            self.spool.wake.wait(self.interval_s)
            self.spool.wake.clear()
            try:
                self.flush_now()
                if time.monotonic() >= next_adopt:
                    next_adopt = time.monotonic() + self.adopt_s
                    adopt(self.store, self.spool.directory, self.spool.name, self.resolve)
            except Exception:
                self.failures += 1
                log.exception("could not write spool %s to the store; retrying", self.spool.name)
                self._stop.wait(min(5.0, self.interval_s * 2 ** min(self.failures, 5)))
            else:
                self.failures = 0

    def stop(self) -> None:
        """Stop the thread and store the rest of the file; once all of it is stored, delete it
        (a store that cannot be written leaves the file to the next process that adopts it)."""
        self._stop.set()
        self.spool.wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        try:
            with self._lock:
                self._follow()
                flush(self.store, self.reader, final=True, resolve=self.resolve)
        except Exception:
            log.exception("spool %s is left for the next gateway process", self.spool.name)
            self.spool.close(remove=False)
        else:
            self.spool.close(remove=True)


# -- the flusher process ------------------------------------------------------------------------


def _owner_dead(fd: int) -> bool:
    """Whether the lock of the file open at ``fd`` could be taken (then it is held by us)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@dataclass
class Pass:
    """What one pass of the flusher process did."""

    stored: int = 0  # calls stored
    live: int = 0  # tailed files whose writer is alive
    failed: int = 0  # files the store could not take this pass (retried at the next)


class SpoolService:
    """The work of the flusher process over one spool directory: each pass stores what the
    live tailed files added since the last (a reader per file, which keeps its admitted calls
    still waiting in memory) and adopts every file whose writer is dead (to its end, then
    deleted). A file first seen is read from its stored offset: a flusher process restarted
    after a SIGKILL resumes where the store says, and skips the calls it had stored."""

    def __init__(self, store: Store, directory: Path, *, resolve: Resolver | None = None):
        self.store = store
        self.directory = directory
        self.resolve = resolve
        self.readers: dict[str, SpoolReader] = {}

    def _reader(self, path: Path) -> SpoolReader:
        reader = self.readers.get(path.name)
        if reader is None:
            reader = SpoolReader(path, stored_offset(self.store, path.name))
            self.readers[path.name] = reader
        return reader

    def run_once(self) -> Pass:
        """One pass over the directory; a store that fails raises (the readers keep their
        place: the next pass retries from there)."""
        done = Pass()
        seen: set[str] = set()
        if not self.directory.is_dir():
            return done
        remove_unfinished(self.directory)
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:  # adopted and deleted meanwhile (by a flusher thread)
                continue
            try:
                self._pass_file(path, fd, done, seen)
            except Exception:  # one file's failure never stops the others' storing
                done.failed += 1
                if path.name.endswith(TAILED):
                    seen.add(path.name)
                    done.live += 1  # kept (and its reader) until it is stored
                log.exception("could not store spool %s; retrying", path.name)
            finally:
                os.close(fd)
        for name in set(self.readers) - seen:
            self.readers.pop(name, None)  # gone: adopted (and deleted) by someone else
        return done

    def _pass_file(self, path: Path, fd: int, done: Pass, seen: set[str]) -> None:
        """Store one file: to its end and delete it when its writer is gone (dead, or moved
        on to a new file), what it added when it is a live tailed one."""
        if _owner_dead(fd):
            if not path.exists():  # adopted and deleted between our open and our lock
                return
            reader = self._reader(path)
            done.stored += flush(self.store, reader, final=True, resolve=self.resolve)
            path.unlink(missing_ok=True)
            self.readers.pop(path.name, None)
            log.info("stored spool %s of an ended gateway process", path.name)
        elif path.name.endswith(TAILED):
            seen.add(path.name)
            done.live += 1
            done.stored += flush(self.store, self._reader(path))
        # else: a live file of a process with its own flusher thread: its own to store


def _lock_flusher(directory: Path, stop: threading.Event) -> int | None:
    """The flusher lock of ``directory`` (waiting while another flusher process holds it);
    None when ``stop`` is set first."""
    private_dirs(directory)
    fd = os.open(directory / FLUSHER_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    announced = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if not announced:
                log.warning("another flusher process holds %s: waiting for it", directory)
                announced = True
            if stop.wait(1.0):
                os.close(fd)
                return None


def serve_spools(
    store: Store,
    directory: Path,
    stop: threading.Event,
    *,
    interval_s: float = 0.2,
    resolve: Resolver | None = None,
    parent: int | None = None,
    drain_s: float = 30.0,
) -> None:
    """The flusher process's loop: a pass every ``interval_s`` until ``stop`` is set (or
    ``parent`` is no longer this process's parent), then passes until no tailed file has a
    live writer (``drain_s`` at most once stopped; no limit once orphaned: the orphaned
    serving processes' calls are still to be stored). Failures are retried with backoff: the
    files keep every call meanwhile."""
    lock = _lock_flusher(directory, stop)
    if lock is None:
        return
    service = SpoolService(store, directory, resolve=resolve)
    failures = 0
    deadline: float | None = None
    try:
        while True:
            orphaned = parent is not None and os.getppid() != parent
            if deadline is None and stop.is_set():
                deadline = time.monotonic() + drain_s
            try:
                done = service.run_once()
            except Exception:
                log.exception("could not write the gateway's spools to the store; retrying")
                done = Pass(live=1, failed=1)
            failures = failures + 1 if done.failed else 0
            ending = stop.is_set() or orphaned
            if ending and done.live == 0 and failures == 0:
                return
            if stop.is_set() and deadline is not None and time.monotonic() > deadline:
                log.error("gateway processes still write spools: they are left to be adopted")
                return
            wait = min(5.0, interval_s * 2 ** min(failures, 5))
            if stop.is_set():
                time.sleep(wait)  # the event is set: waiting on it would not wait
            else:
                stop.wait(wait)
    finally:
        os.close(lock)


@dataclass(frozen=True)
class FlusherConfig:
    """What the flusher process needs (sent to it when it is spawned: no workspace)."""

    db_url: str
    spool_dir: str
    redis_url: str
    namespace: str
    interval_s: float = 0.2


def _flusher_main(config: FlusherConfig, parent: int, ready: Any = None) -> None:
    """The flusher process: stores every spool of ``config.spool_dir`` until SIGTERM (from
    the parent, once its serving processes are gone) or the parent's death."""
    from exchange.gateway.quota import Quota  # here: the serving path never needs it twice

    # A terminal's Ctrl-C reaches the whole process group: the parent stops the serving
    # processes first, then this one (SIGTERM), so that their last calls are stored.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Below the serving processes on a shared CPU: a call waiting for the CPU is latency, a
    # flush a few milliseconds later is not (the calls are on disk meanwhile).
    os.nice(FLUSHER_NICE)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if ready is not None:
        ready.set()
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="gateway flusher: %(message)s")
    store = Store(config.db_url, migrate=False)  # migrated by ``exchange gateway`` already
    quota = Quota(config.redis_url, config.namespace)
    try:
        serve_spools(
            store,
            Path(config.spool_dir),
            stop,
            interval_s=config.interval_s,
            resolve=quota.admitted,
            parent=parent,
        )
    finally:
        asyncio.run(quota.close())
        store.close()


class FlusherProcess:
    """The flusher process of ``exchange gateway``, started before the serving processes and
    stopped after them; a flusher that dies (a SIGKILL, an out-of-memory kill) is started
    again at once, and resumes from the offsets in the store."""

    def __init__(self, config: FlusherConfig):
        self.config = config
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None
        self._ready: Any = None  # set by the child once SIGTERM is its "last pass" signal

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _spawn(self) -> None:
        # spawn, not fork: the parent has a store engine and threads a fork would copy
        ctx = multiprocessing.get_context("spawn")
        self._ready = ctx.Event()
        proc = ctx.Process(
            target=_flusher_main,
            args=(self.config, os.getpid(), self._ready),
            name="exchange-gateway-flusher",
            daemon=False,
        )
        proc.start()
        self._proc = proc

    def start(self) -> None:
        with self._lock:
            self._spawn()
        self._watcher = threading.Thread(target=self._watch, name="flusher-watch", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        while not self._stopping.is_set():
            proc = self._proc
            assert proc is not None
            proc.join()
            with self._lock:
                if self._stopping.is_set():
                    return
                log.error(
                    "the gateway's flusher process ended (exit code %s): starting another",
                    proc.exitcode,
                )
                time.sleep(0.5)  # not a tight loop if it cannot start at all
                self._spawn()

    def stop(self, timeout_s: float = 60.0) -> None:
        """Stop the flusher once it has stored every file (the serving processes are gone)."""
        with self._lock:
            self._stopping.set()
            proc = self._proc
        if proc is None:
            return
        # A SIGTERM while the child still starts (imports take a second or two) would end it
        # before its handler is there, with the last calls unstored: wait for it first.
        if self._ready is not None:
            self._ready.wait(timeout_s)
        if proc.is_alive():
            proc.terminate()  # SIGTERM: a last pass, then it exits
            proc.join(timeout_s)
            if proc.is_alive():
                log.error("the gateway's flusher process did not stop: killed (files kept)")
                proc.kill()
                proc.join()
