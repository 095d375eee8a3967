"""The gateway's spool: every call is a line on disk before it is answered, and the flusher
moves the lines into the store exactly once, on SQLite and PostgreSQL: usage rows,
``gateway.call`` audit events and the file's offset in one transaction; a file read twice
counts each call once; an admitted call whose process died before answering is
``interrupted``; a live process's file is never adopted, a dead one's is, and deleted. The
flusher process (``SpoolService``) tails the files of processes without a flusher thread,
leaves the others' to them, resumes after a restart from the stored offsets, and is one per
spool directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from exchange import audit
from exchange.gateway.models import ApiCall, GatewaySpool
from exchange.gateway.spool import (
    ADMITTED,
    ASKED,
    DONE,
    Flusher,
    Line,
    Spool,
    SpoolReader,
    SpoolService,
    adopt,
    flush,
    serve_spools,
)
from exchange.store import Store
from exchange.store.models import AuditEvent

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A metadata store of each dialect it runs on."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'exchange.db'}"
    else:
        url = request.getfixturevalue("pg_database")
    opened = Store(url)
    yield opened
    opened.close()


def admitted(n: int, **kw: object) -> Line:
    return Line(ADMITTED, f"call{n}", time.time(), "410000-SCJG-API-0001", "by_uscc",
                code=7, sub=3, dept="TAX", **kw)  # type: ignore[arg-type]  # fmt: skip


def done(n: int, status: int = 200, outcome: str = "ok") -> Line:
    line = admitted(n)
    line.k, line.st, line.out, line.ms, line.b = DONE, status, outcome, 1.5, 99
    return line


def rows(st: Store) -> list[ApiCall]:
    with st.session() as s:
        return list(s.execute(sa.select(ApiCall).order_by(ApiCall.call_id)).scalars())


def events(st: Store) -> list[AuditEvent]:
    with st.session() as s:
        query = sa.select(AuditEvent).where(AuditEvent.kind == "gateway.call")
        return list(s.execute(query.order_by(AuditEvent.id)).scalars())


def offset(st: Store, name: str) -> int | None:
    with st.session() as s:
        row = s.get(GatewaySpool, name)
        return row.offset if row is not None else None


def test_a_flush_stores_rows_events_and_the_offset_together(store: Store, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    for n in range(3):
        spool.write(admitted(n))
        spool.write(done(n))
    spool.write(done(9, 401, "refused"))
    reader = SpoolReader(spool.path)
    assert flush(store, reader) == 4
    assert [(r.call_id, r.status, r.outcome) for r in rows(store)] == [
        ("call0", 200, "ok"), ("call1", 200, "ok"), ("call2", 200, "ok"), ("call9", 401, "refused"),
    ]  # fmt: skip
    assert [e.payload["call_id"] for e in events(store)] == ["call0", "call1", "call2", "call9"]
    assert offset(store, spool.name) == spool.path.stat().st_size
    with store.session() as s:
        assert audit.check_chain(s).broken_id is None
    assert spool.path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "spool").stat().st_mode & 0o777 == 0o700
    spool.close(remove=True)


def test_the_offset_never_passes_an_admitted_call_still_waiting(
    store: Store, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool")
    spool.write(done(0))
    waiting_at = spool.path.stat().st_size
    spool.write(admitted(1))
    spool.write(done(2))
    reader = SpoolReader(spool.path)
    assert flush(store, reader) == 2
    assert offset(store, spool.name) == waiting_at  # a new reader starts at call1's line
    spool.write(done(1))
    assert flush(store, reader) == 1
    assert offset(store, spool.name) == spool.path.stat().st_size
    assert [r.call_id for r in rows(store)] == ["call0", "call1", "call2"]
    spool.close(remove=True)


def test_a_spool_read_again_from_its_offset_counts_each_call_once(
    store: Store, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool")
    spool.write(admitted(1))
    spool.write(done(0))
    flush(store, SpoolReader(spool.path))  # call1 waits: the offset stays before it
    spool.write(done(1))
    spool.close(remove=False)  # its process is gone: the file is adopted from the offset
    assert adopt(store, tmp_path / "spool") == 1
    assert [r.call_id for r in rows(store)] == ["call0", "call1"]
    assert len(events(store)) == 2
    assert not spool.path.exists() and offset(store, spool.name) is None


def test_an_admitted_call_of_a_dead_process_without_its_answer_is_interrupted(
    store: Store, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool")
    spool.write(admitted(1))
    spool.write(admitted(2))
    spool.write(done(2))
    spool.close(remove=False)
    assert adopt(store, tmp_path / "spool") == 2
    got = {r.call_id: (r.status, r.outcome) for r in rows(store)}
    assert got == {"call1": (0, "interrupted"), "call2": (200, "ok")}


def test_a_call_that_died_asking_the_quota_is_recorded_only_if_the_quota_counted_it(
    store: Store, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool")
    for n in (1, 2):
        line = admitted(n)
        line.k = ASKED
        spool.write(line)
    spool.write(done(3))
    spool.close(remove=False)
    counted = {"call2"}  # what the quota says it counted, by call id

    def resolve(ids: list[str]) -> set[str]:
        assert sorted(ids) == ["call1", "call2"]
        return counted & set(ids)

    assert adopt(store, tmp_path / "spool", resolve=resolve) == 2
    got = {r.call_id: r.outcome for r in rows(store)}
    assert got == {"call2": "interrupted", "call3": "ok"}


def test_a_live_process_spool_is_never_adopted(store: Store, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.write(admitted(1))
    assert adopt(store, tmp_path / "spool") == 0
    assert spool.path.exists() and rows(store) == []
    spool.close(remove=True)


def test_a_torn_last_line_is_skipped_and_the_rest_stored(store: Store, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.write(done(1))
    spool.close(remove=False)
    with open(spool.path, "ab") as f:
        f.write(b'{"k":"d","id":"call2","at":1.0,"res"')  # a full disk cut it short
    reader = SpoolReader(spool.path)
    assert flush(store, reader) == 1  # a live writer may still be finishing it: it waits
    assert adopt(store, tmp_path / "spool") == 0  # everything before it is stored already
    assert [r.call_id for r in rows(store)] == ["call1"]
    assert not spool.path.exists()


def test_the_flusher_stores_within_its_interval_and_deletes_the_file_when_stopped(
    tmp_path: Path,
) -> None:
    st = Store(f"sqlite:///{tmp_path / 'exchange.db'}")
    spool = Spool(tmp_path / "spool", flush_lines=1000)
    flusher = Flusher(st, spool, interval_s=0.05)
    flusher.start()
    spool.write(done(1))
    deadline = time.monotonic() + 5
    while not rows(st) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [r.call_id for r in rows(st)] == ["call1"]
    spool.write(admitted(2))  # in flight when the process stops: it was never answered
    flusher.stop()
    assert {r.call_id: r.outcome for r in rows(st)} == {"call1": "ok", "call2": "interrupted"}
    assert not spool.path.exists() and offset(st, spool.name) is None
    st.close()


def test_a_killed_process_spool_is_adopted_by_the_next_one(tmp_path: Path) -> None:
    st = Store(f"sqlite:///{tmp_path / 'exchange.db'}")
    writer = textwrap.dedent(
        f"""
        import os, sys, time
        from pathlib import Path
        from exchange.gateway.spool import ADMITTED, DONE, Line, Spool
        spool = Spool(Path({str(tmp_path / "spool")!r}))
        for n in range(50):
            spool.write(Line(ADMITTED, f"k{{n}}", time.time(), "R", "op", code=1))
            if n % 2 == 0:
                spool.write(Line(DONE, f"k{{n}}", time.time(), "R", "op", code=1, st=200, out="ok"))
        print("written", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", writer], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "written"
        assert adopt(st, tmp_path / "spool") == 0  # alive: its lock is held
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert adopt(st, tmp_path / "spool") == 50
    outcomes = [r.outcome for r in rows(st)]
    assert outcomes.count("ok") == 25 and outcomes.count("interrupted") == 25
    assert list((tmp_path / "spool").iterdir()) == []
    st.close()


def test_the_flusher_process_tails_live_files_and_stores_them_once_their_writer_is_gone(
    store: Store, tmp_path: Path
) -> None:
    directory = tmp_path / "spool"
    tailed = Spool(directory, tailed=True)
    own = Spool(directory)  # a mounted app's process: its flusher thread stores this one
    own.write(done(50))
    service = SpoolService(store, directory)
    tailed.write(done(0))
    tailed.write(admitted(1))
    first = service.run_once()
    assert (first.stored, first.live) == (1, 1)
    tailed.write(done(1))
    tailed.write(admitted(2))  # in flight when its process ends: never answered
    assert service.run_once().stored == 1
    assert [r.call_id for r in rows(store)] == ["call0", "call1"]
    tailed.close(remove=False)  # the process ended: its lock is gone with it
    last = service.run_once()
    assert (last.stored, last.live) == (1, 0)
    assert {r.call_id: r.outcome for r in rows(store)} == {
        "call0": "ok", "call1": "ok", "call2": "interrupted",
    }  # fmt: skip
    assert not tailed.path.exists() and offset(store, tailed.name) is None
    assert own.path.exists() and offset(store, own.name) is None  # never read while it lives
    assert len(events(store)) == 3
    with store.session() as s:
        assert audit.check_chain(s).broken_id is None
    own.close(remove=True)


def test_a_restarted_flusher_process_resumes_from_the_stored_offset_counting_each_call_once(
    store: Store, tmp_path: Path
) -> None:
    directory = tmp_path / "spool"
    spool = Spool(directory, tailed=True)
    for n in range(5):
        spool.write(done(n))
    spool.write(admitted(5))
    assert SpoolService(store, directory).run_once().stored == 5
    spool.write(done(5))
    spool.write(done(6))
    # the first flusher was killed: a new one reads the file again from its stored offset
    again = SpoolService(store, directory)
    assert again.run_once().stored == 2
    assert again.run_once().stored == 0
    assert [r.call_id for r in rows(store)] == [f"call{n}" for n in range(7)]
    assert len(events(store)) == 7
    spool.close(remove=True)


def test_one_flusher_process_per_spool_directory_and_it_drains_the_files_when_stopped(
    tmp_path: Path,
) -> None:
    st = Store(f"sqlite:///{tmp_path / 'exchange.db'}")
    directory = tmp_path / "spool"
    spool = Spool(directory, tailed=True)
    first_stop, second_stop = threading.Event(), threading.Event()
    first = threading.Thread(target=serve_spools, args=(st, directory, first_stop),
                             kwargs={"interval_s": 0.02})  # fmt: skip
    second = threading.Thread(target=serve_spools, args=(st, directory, second_stop),
                              kwargs={"interval_s": 0.02})  # fmt: skip
    first.start()
    time.sleep(0.2)
    second.start()  # waits for the first one's lock
    spool.write(done(1))
    deadline = time.monotonic() + 5
    while not rows(st) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [r.call_id for r in rows(st)] == ["call1"]
    second_stop.set()
    second.join(5)
    assert not second.is_alive()  # stopped while waiting: it never stored anything
    spool.write(admitted(2))
    first_stop.set()
    time.sleep(0.1)
    assert first.is_alive()  # a live writer: the flusher waits for its last calls
    spool.close(remove=False)
    first.join(5)
    assert not first.is_alive()
    assert {r.call_id: r.outcome for r in rows(st)} == {"call1": "ok", "call2": "interrupted"}
    assert [p.name for p in directory.iterdir()] == ["flusher.lock"]
    st.close()


# -- one bad line never stops the recording; a live spool is bounded ----------------------------


def test_a_line_the_store_refuses_is_set_aside_and_every_other_call_is_stored(
    pg_database: str, tmp_path: Path
) -> None:
    st = Store(pg_database)
    directory = tmp_path / "gateway" / "spool"
    spool = Spool(directory, tailed=True)
    spool.write(done(0))
    poisoned = done(1)
    poisoned.res = "bad\x00name"  # PostgreSQL text cannot hold a NUL: DataError
    spool.write(poisoned)
    spool.write(done(2))
    service = SpoolService(st, directory)
    assert service.run_once().stored == 2
    assert [r.call_id for r in rows(st)] == ["call0", "call2"]
    assert offset(st, spool.name) == spool.path.stat().st_size  # moved on past it
    rejected = (tmp_path / "gateway" / "rejected.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(rejected) == 1
    entry = json.loads(rejected[0])
    assert entry["error"] == "DataError" and entry["line"]["id"] == "call1"
    assert entry["spool"] == spool.name
    assert (tmp_path / "gateway" / "rejected.jsonl").stat().st_mode & 0o777 == 0o600
    spool.write(done(3))  # later calls of the same file are stored as before
    assert service.run_once().stored == 1
    # a dead process's file with a refused line, and another dead one after it: both stored
    dead = Spool(directory)
    dead.write(poisoned)
    dead.write(done(4))
    dead.close(remove=False)
    later = Spool(directory)
    later.write(done(5))
    later.close(remove=False)
    spool.close(remove=False)
    assert service.run_once().stored == 2
    assert [r.call_id for r in rows(st)] == [f"call{n}" for n in (0, 2, 3, 4, 5)]
    assert sorted(p.name for p in directory.iterdir()) == []
    assert len((tmp_path / "gateway" / "rejected.jsonl").read_text().splitlines()) == 2
    with st.session() as s:
        assert audit.check_chain(s).broken_id is None
    st.close()


def test_a_live_spool_past_its_size_starts_a_new_file_and_the_old_one_is_stored_and_deleted(
    store: Store, tmp_path: Path
) -> None:
    directory = tmp_path / "spool"
    spool = Spool(directory, tailed=True, roll_bytes=2000)
    service = SpoolService(store, directory)
    spool.write(admitted(9999))  # in flight while its file is rolled over
    first = spool.name
    for n in range(200):
        spool.write(done(n))
        if n % 50 == 49:
            service.run_once()
    assert spool.name != first
    assert (directory / first).exists()  # its call in flight keeps it open, and locked
    spool.write(done(9999))  # answered: the line goes to the file its call started in
    service.run_once()
    assert not (directory / first).exists()
    files = [p for p in directory.iterdir() if p.name.endswith(".jsonl")]
    assert files == [spool.path] and spool.path.stat().st_size < 2000 + 400
    stored = {r.call_id: r.outcome for r in rows(store)}
    assert len(stored) == 201 and stored["call9999"] == "ok"
    assert len(events(store)) == 201
    with store.session() as s:
        assert audit.check_chain(s).broken_id is None
        assert [r.name for r in s.execute(sa.select(GatewaySpool)).scalars()] == [spool.name]
    spool.close(remove=False)
    assert service.run_once().stored == 0
    assert list(directory.iterdir()) == []


def test_a_flusher_thread_follows_its_rolled_spool_and_the_old_files_are_adopted(
    tmp_path: Path,
) -> None:
    st = Store(f"sqlite:///{tmp_path / 'exchange.db'}")
    directory = tmp_path / "spool"
    spool = Spool(directory, roll_bytes=1000)
    flusher = Flusher(st, spool)
    for n in range(60):
        spool.write(done(n))
        if n % 20 == 19:
            flusher.flush_now()
    adopt(st, directory, spool.name)  # the files it moved on from, released: stored, deleted
    assert len(rows(st)) == 60
    assert [p.name for p in directory.iterdir()] == [spool.name]
    for n in range(60, 80):  # rolled over again since the thread last looked
        spool.write(done(n))
    flusher.stop()  # the file it was reading, then the current one to its end: deleted
    adopt(st, directory)  # the one between, released: the next process's adoption
    assert [r.call_id for r in rows(st)] == sorted(f"call{n}" for n in range(80))
    assert list(directory.iterdir()) == []
    st.close()


def test_a_spool_left_half_made_by_a_dead_process_is_removed(store: Store, tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    directory.mkdir(mode=0o700)
    (directory / "host-1-2.tail.jsonl.new").write_bytes(b"")
    SpoolService(store, directory).run_once()
    assert list(directory.iterdir()) == []
