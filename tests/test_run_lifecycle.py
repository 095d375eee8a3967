"""Runs an operator can trust: a run is ``running`` only while a live process holds its lease;
a failed step leaves it ``failed`` with its error and resumable; ``--full`` and ``--restart``
abandon an unfinished run instead of silently resuming it; a second run of a busy resource is
refused and touches nothing; a vanished run directory is no traceback; a resumed file run pulls
again what changed at the source."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from exchange import orchestration as orch
from exchange.flow import QuietReporter, run_resource
from exchange.kernel.clock import utcnow
from exchange.kernel.errors import (
    DataError,
    DeliveryFailed,
    LeaseLost,
    RunBusy,
    RunDirGone,
    RunFailed,
    is_terminal,
)
from exchange.kernel.settings import Settings
from exchange.runs import lease
from exchange.runs.plan import TableDelivery
from exchange.status import recent_runs
from exchange.store.models import AuditEvent, Run, RunLease, RunLeaseMember
from exchange.tables import load as table_load
from exchange.workflow.grants import add_subscription
from exchange.workspace import Workspace
from tests.conftest import catalog_yaml

RESOURCE = """\
- code: R1
  name: 企业登记信息
  kind: table
  provider: src
  share: unconditional
  source: {table: company}
  mode: incremental
  primary_key: [id]
  cursor: updated_at
  fields:
    - {name: id, type: bigint, nullable: false}
    - {name: name, type: varchar, length: 20, nullable: false}
    - {name: remark, type: varchar, length: 50}
    - {name: updated_at, type: timestamp, nullable: false}
"""
T0 = dt.datetime(2026, 3, 2, 9, 0, 0)
FAR = dt.date.today() + dt.timedelta(days=300)


def write_source(path: Path, ids: range | list[int], *, remark: bool = True) -> None:
    """The provider's table, replaced by these rows (without its remark column if asked)."""
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE IF EXISTS company")
        cols = "id INTEGER PRIMARY KEY, name TEXT" + (", remark TEXT" if remark else "")
        db.execute(f"CREATE TABLE company ({cols}, updated_at TEXT)")
        for i in ids:
            values = (i, f"企业{i}", *(("备注",) if remark else ()), T0.isoformat(sep=" "))
            marks = ", ".join("?" * len(values))
            db.execute(f"INSERT INTO company VALUES ({marks})", values)  # noqa: S608


def target_ids(path: Path) -> list[int]:
    with sqlite3.connect(path) as db:
        return [r[0] for r in db.execute("SELECT id FROM company ORDER BY id")]


def runs(ws: Workspace) -> list[tuple[str, str, str | None]]:
    """(id, stored status, error) of every run, oldest first."""
    with ws.store.session() as s:
        q = sa.select(Run.id, Run.status, Run.error).order_by(Run.started_at, Run.id)
        return [(r.id, r.status, r.error) for r in s.execute(q).all()]


def audit_kinds(ws: Workspace) -> list[str]:
    with ws.store.session() as s:
        return list(s.execute(sa.select(AuditEvent.kind).order_by(AuditEvent.id)).scalars())


@pytest.fixture
def table_ws(
    tmp_path: Path, make_workspace: Callable[[str], Workspace], monkeypatch: pytest.MonkeyPatch
) -> Workspace:
    """A table resource R1 from SQLite node src to subscriber a, 20 rows delivered once (the
    Airflow steps open the same store)."""
    nodes = {n: ("sqlite", f"{{path: {n}.db}}") for n in ("src", "a")}
    ws = make_workspace(catalog_yaml(nodes, RESOURCE))
    monkeypatch.setenv("EXCHANGE_HOME", str(ws.settings.home))
    monkeypatch.setenv("EXCHANGE_DB_URL", ws.settings.db_url)
    write_source(tmp_path / "src.db", range(1, 21))
    add_subscription(ws, "R1", "a", ["id", "name", "remark"], FAR)
    assert run_resource(ws, "R1").status == "succeeded"
    return ws


def fail_once(ws: Workspace, src: Path) -> str:
    """A run that fails at extract (a column missing at the source); its id."""
    write_source(src, range(1, 21), remark=False)
    with pytest.raises(Exception, match="remark"):
        run_resource(ws, "R1")
    return runs(ws)[-1][0]


@pytest.fixture
def live_pid() -> Iterator[int]:
    """The pid of a live process on this host (not ours)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def hold_lease(ws: Workspace, pid: int, host: str, age: dt.timedelta = dt.timedelta(0)) -> None:
    """A lease as another CLI process would have left it, heartbeat ``age`` old."""
    at = utcnow() - age
    with ws.store.session() as s:
        s.add(
            RunLease(
                resource_code="R1", run_id="r-other", holder=f"pid {pid}@{host}", pid=pid,
                host=host, acquired_at=at, heartbeat_at=at,
            )
        )  # fmt: skip
        s.add(
            RunLeaseMember(
                resource_code="R1", token=uuid.uuid4().hex, holder=f"pid {pid}@{host}", pid=pid,
                host=host, joined_at=at, heartbeat_at=at,
            )
        )  # fmt: skip


# --- failed, interrupted, never `running` without a live holder ----------------------------


def test_a_failed_step_leaves_the_run_failed_with_its_error_and_the_next_run_resumes_it(
    tmp_path: Path, table_ws: Workspace
) -> None:
    failed = fail_once(table_ws, tmp_path / "src.db")

    (shown,) = [r for r in recent_runs(table_ws, "R1") if r.id == failed]
    assert shown.status == "failed" and shown.resumable
    assert shown.error is not None and "company on node 'src' has no column 'remark'" in shown.error
    assert lease.current(table_ws, "R1") is None  # the failed process let go of the resource

    write_source(tmp_path / "src.db", range(1, 22))  # the provider adds the column back
    summary = run_resource(table_ws, "R1")

    assert summary.run_id == failed and summary.status == "succeeded"
    assert runs(table_ws)[-1] == (failed, "succeeded", None)
    assert "run.step_failed" in audit_kinds(table_ws) and "run.resumed" in audit_kinds(table_ws)
    assert target_ids(tmp_path / "a.db") == list(range(1, 22))


def test_an_unreachable_source_leaves_no_run_shown_running(
    make_workspace: Callable[[str], Workspace], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SRC_URL", "postgresql://nobody@127.0.0.1:1/none")
    nodes = {
        "src": ("postgresql", "{env: SRC_URL}"),
        "a": ("sqlite", "{path: a.db}"),
    }
    ws = make_workspace(catalog_yaml(nodes, RESOURCE))
    add_subscription(ws, "R1", "a", ["id", "name"], FAR)

    with pytest.raises(Exception, match="src"):
        run_resource(ws, "R1")

    shown = recent_runs(ws, "R1")
    assert shown, "the run was planned before the source was asked"
    assert all(r.status == "failed" and r.error for r in shown), shown


def test_a_killed_run_is_interrupted_not_running_and_the_next_run_resumes_it(
    tmp_path: Path, table_ws: Workspace
) -> None:
    write_source(tmp_path / "src.db", range(1, 31))
    env = {**os.environ, "EXCHANGE_HOME": str(tmp_path), "EXCHANGE_CRASH_AT": "extract:done"}
    env.pop("EXCHANGE_DB_URL", None)
    cmd = [sys.executable, "-m", "exchange"]
    catalog = ["--catalog", str(tmp_path / "catalog.yaml")]
    killed = subprocess.run([*cmd, "run", "R1", *catalog], env=env, capture_output=True)
    assert killed.returncode == -9

    (latest, *_) = recent_runs(table_ws, "R1")
    assert latest.status == "interrupted" and latest.resumable and latest.holder is not None
    env.pop("EXCHANGE_CRASH_AT")
    listed = subprocess.run(
        [*cmd, "runs", "R1", *catalog], env=env, capture_output=True, text=True, check=True
    )
    assert "interrupted (resumable)" in listed.stdout and "dead" in listed.stdout

    assert run_resource(table_ws, "R1").run_id == latest.id  # its holder is dead: resumed
    assert target_ids(tmp_path / "a.db") == list(range(1, 31))


# --- one process at a time ---------------------------------------------------------------


def test_a_second_run_of_a_resource_a_live_process_holds_is_refused_and_touches_nothing(
    tmp_path: Path, table_ws: Workspace, live_pid: int
) -> None:
    hold_lease(table_ws, live_pid, socket.gethostname())
    write_source(tmp_path / "src.db", range(1, 41))
    before = runs(table_ws)

    with pytest.raises(RunBusy) as busy:
        run_resource(table_ws, "R1", full=True)

    me = socket.gethostname()
    assert str(busy.value).startswith(
        f"resource R1 is running: pid {live_pid}@{me} holds it (run r-other, pid {live_pid}, "
        f"host {me}, since "
    )
    assert "nothing was touched. Wait for it to finish (`exchange runs R1`" in str(busy.value)
    assert runs(table_ws) == before and target_ids(tmp_path / "a.db") == list(range(1, 21))
    env = {**os.environ, "EXCHANGE_HOME": str(tmp_path)}
    env.pop("EXCHANGE_DB_URL", None)
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "exchange",
            "run",
            "R1",
            "--catalog",
            str(tmp_path / "catalog.yaml"),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 1, cli.stderr
    assert f"error: resource R1 is running: pid {live_pid}@{me} holds it (run r-other" in cli.stderr
    assert "Traceback" not in cli.stderr
    # An Airflow task meets it too, and retries later rather than failing for good.
    with pytest.raises(RunBusy):
        orch.plan_step(str(tmp_path / "catalog.yaml"), "R1", holder="airflow exchange_R1 x")
    assert not is_terminal(busy.value)


def test_a_lease_whose_holder_died_or_went_silent_is_taken_over(
    tmp_path: Path, table_ws: Workspace, live_pid: int
) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    hold_lease(table_ws, int(dead.stdout), socket.gethostname())  # this host, pid gone
    assert run_resource(table_ws, "R1").status == "succeeded"
    assert "run.lease_taken_over" in audit_kinds(table_ws)

    # Another host's holder cannot be asked about its pid: only its heartbeat tells.
    hold_lease(table_ws, live_pid, "elsewhere.example")
    with pytest.raises(RunBusy, match="host elsewhere.example"):
        run_resource(table_ws, "R1")
    with table_ws.store.session() as s:
        s.execute(sa.delete(RunLease))
        s.execute(sa.delete(RunLeaseMember))
    hold_lease(table_ws, live_pid, "elsewhere.example", age=lease.LEASE_TIMEOUT * 2)
    assert run_resource(table_ws, "R1").status == "succeeded"


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_taking_the_lease_is_atomic_exactly_one_of_many_racers_gets_it(
    store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'exchange.db'}"
        if store == "sqlite"
        else request.getfixturevalue("pg_database")
    )
    (tmp_path / "catalog.yaml").write_text(
        catalog_yaml({"src": ("sqlite", "{path: src.db}")}, RESOURCE), encoding="utf-8"
    )
    ws = Workspace.open(tmp_path / "catalog.yaml", Settings(home=tmp_path, db_url=url))
    try:
        won: list[str] = []
        lost: list[str] = []
        start = threading.Barrier(8)

        def race(i: int) -> None:
            me = lease.Holder(f"racer {i}", os.getpid(), socket.gethostname())
            start.wait()
            try:
                lease.acquire(ws, "R1", me)
                won.append(me.name)
            except RunBusy:
                lost.append(me.name)

        threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 1 and len(lost) == 7
        info = lease.current(ws, "R1")
        assert info is not None and info.holder == won[0] and info.live
    finally:
        ws.close()


def test_the_holder_heartbeats_while_it_works(
    table_ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lease, "HEARTBEAT_EVERY", dt.timedelta(milliseconds=50))
    with lease.holding(table_ws, "R1") as held:
        held.attach("r-mine")
        first = lease.current(table_ws, "R1")
        threading.Event().wait(0.4)
        later = lease.current(table_ws, "R1")
    assert first is not None and later is not None
    assert later.heartbeat_at > first.heartbeat_at and later.run_id == "r-mine"
    assert later.describe().startswith(f"{os.getpid()}@{socket.gethostname()}, heartbeat ")
    assert lease.current(table_ws, "R1") is None


# --- --full, --restart, a vanished directory -------------------------------------------------


def test_full_after_a_failed_run_abandons_it_and_reconciles_deletes(
    tmp_path: Path, table_ws: Workspace
) -> None:
    failed = fail_once(table_ws, tmp_path / "src.db")
    staging = Path(table_ws.settings.runs_dir / "R1" / failed)
    assert staging.is_dir()
    write_source(tmp_path / "src.db", range(1, 11))  # fixed, and 10 rows deleted meanwhile

    summary = run_resource(table_ws, "R1", full=True)

    assert summary.status == "succeeded" and summary.run_id != failed
    assert any(f"abandoned the unfinished run {failed}" in n for n in summary.notes)
    assert target_ids(tmp_path / "a.db") == list(range(1, 11))  # the deletes reconciled
    with table_ws.store.session() as s:  # and said: the delivery's notes name them
        (delivered,) = s.execute(
            sa.select(AuditEvent.payload).where(
                AuditEvent.kind == "delivery.delivered",
                AuditEvent.payload["run"].as_string() == summary.run_id,
            )
        ).scalars()
    assert any(n.startswith("deleted 10 rows the source no longer has") for n in delivered["notes"])
    assert dict((i, s) for i, s, _ in runs(table_ws))[failed] == "abandoned"
    assert not staging.exists()
    assert "run.abandoned" in audit_kinds(table_ws)
    with table_ws.store.session() as s:
        new = s.get(Run, summary.run_id)
        assert new is not None and new.full


def test_restart_abandons_the_unfinished_run_and_starts_an_incremental_one(
    tmp_path: Path, table_ws: Workspace
) -> None:
    failed = fail_once(table_ws, tmp_path / "src.db")
    write_source(tmp_path / "src.db", range(1, 26))

    summary = run_resource(table_ws, "R1", restart=True)

    assert summary.run_id != failed and summary.status == "succeeded"
    assert summary.extracted == 25  # the same timestamp: the look-back re-reads the boundary
    with table_ws.store.session() as s:
        old, new = s.get(Run, failed), s.get(Run, summary.run_id)
        assert old is not None and old.status == "abandoned"
        assert old.error is not None and old.error.startswith("extract failed: ")  # kept
        assert old.error.endswith("; abandoned: --restart")
        assert new is not None and not new.full
    assert target_ids(tmp_path / "a.db") == list(range(1, 26))


def test_a_run_whose_directory_vanished_is_abandoned_and_a_new_one_starts(
    tmp_path: Path, table_ws: Workspace
) -> None:
    failed = fail_once(table_ws, tmp_path / "src.db")
    shutil.move(table_ws.settings.runs_dir / "R1" / failed, tmp_path / "moved-away")
    with pytest.raises(RunDirGone, match=r"its directory .* is gone .*the next `exchange run R1`"):
        orch.extract_step(str(tmp_path / "catalog.yaml"), failed)

    write_source(tmp_path / "src.db", range(1, 21))
    summary = run_resource(table_ws, "R1")

    assert summary.run_id != failed and summary.status == "succeeded"
    assert any("is gone" in n and failed in n for n in summary.notes), summary.notes
    assert dict((i, s) for i, s, _ in runs(table_ws))[failed] == "abandoned"
    assert (tmp_path / "moved-away" / "plan.json").exists()  # only ever its own directory


def test_a_full_run_whose_directory_vanished_is_replaced_by_a_full_one(
    tmp_path: Path, table_ws: Workspace
) -> None:
    write_source(tmp_path / "src.db", range(1, 31))
    run_resource(table_ws, "R1")  # the target holds 30 rows
    write_source(tmp_path / "src.db", range(1, 21), remark=False)
    with pytest.raises(Exception, match="remark"):
        run_resource(table_ws, "R1", full=True)
    failed = runs(table_ws)[-1][0]
    shutil.move(table_ws.settings.runs_dir / "R1" / failed, tmp_path / "moved-away")
    write_source(tmp_path / "src.db", range(1, 21))  # fixed; 10 rows deleted meanwhile

    summary = run_resource(table_ws, "R1")  # plain: the operator had asked for --full

    assert any("started a full one" in n for n in summary.notes), summary.notes
    assert target_ids(tmp_path / "a.db") == list(range(1, 21))  # the deletes reconciled


# --- Airflow's path ---------------------------------------------------------------------


def test_airflow_steps_share_the_dag_runs_lease_and_record_leaves_a_failed_run_unfinished(
    tmp_path: Path, table_ws: Workspace
) -> None:
    cat, who = str(tmp_path / "catalog.yaml"), "airflow exchange_R1 manual__1"
    write_source(tmp_path / "src.db", range(1, 21), remark=False)
    run_id = orch.plan_step(cat, "R1", holder=who)["run_id"]
    with pytest.raises(Exception, match="remark"):
        orch.extract_step(cat, run_id, holder=who)

    with pytest.raises(
        RunFailed, match=rf"resource R1 run {run_id}: extract failed: .*has no column 'remark'"
    ) as failed:
        orch.record_step(cat, run_id, holder=who)  # trigger rule all_done: it runs anyway
    assert is_terminal(failed.value)
    (shown, *_) = recent_runs(table_ws, "R1")
    assert (shown.id, shown.status, shown.resumable) == (run_id, "failed", True)

    write_source(tmp_path / "src.db", range(1, 21))
    again = orch.plan_step(cat, "R1", holder="airflow exchange_R1 manual__2")
    assert again["run_id"] == run_id  # the next DAG run resumes it
    orch.extract_step(cat, run_id, holder="airflow exchange_R1 manual__2")
    assert runs(table_ws)[-1] == (run_id, "running", None)  # retried: the old error is gone


# --- files: the staged copy follows the source ---------------------------------------------

FILE_CODE = "F1"
HEADER = "统一社会信用代码,企业名称,成立日期"
FILE_RESOURCE = f"""\
- code: {FILE_CODE}
  name: 企业名录（表格文件）
  kind: file
  provider: market_files
  share: unconditional
  files: {{path: out, pattern: '*.csv', format: csv}}
  primary_key: [uscc]
  fields:
    - {{name: uscc, type: char, length: 18, nullable: false, title: 统一社会信用代码}}
    - {{name: name, type: varchar, length: 20, nullable: false, title: 企业名称}}
    - {{name: established, type: date, title: 成立日期}}
"""


@pytest.fixture
def file_ws(tmp_path: Path, make_workspace: Callable[[str], Workspace]) -> Workspace:
    (tmp_path / "market/out").mkdir(parents=True)
    nodes = {"market_files": ("local", "{path: market}"), "tax_fe": ("sqlite", "{path: tax.db}")}
    ws = make_workspace(catalog_yaml(nodes, FILE_RESOURCE))
    add_subscription(ws, FILE_CODE, "tax_fe", ["uscc", "name", "established"], FAR,
                     target_table="enterprise")  # fmt: skip
    return ws


def write_gbk(path: Path, names: list[str], day: str, mtime: int) -> None:
    """A GBK CSV of companies, the second one established on ``day``."""
    days = ["2019-03-01", day, "2020-11-30"]
    rows = "".join(f"91410400MA44ABCD{i}X,{n},{days[i]}\r\n" for i, n in enumerate(names))
    path.write_bytes((HEADER + "\r\n" + rows).encode("gbk"))
    os.utime(path, (mtime, mtime))


def tax_names(tmp_path: Path) -> list[str]:
    with sqlite3.connect(tmp_path / "tax.db") as db:
        return [r[0] for r in db.execute("SELECT name FROM enterprise ORDER BY uscc")]


@pytest.mark.parametrize("how", ["resume", "full"])
def test_a_file_fixed_at_the_source_is_pulled_again_instead_of_reparsing_the_stale_copy(
    how: str, tmp_path: Path, file_ws: Workspace
) -> None:
    csv = tmp_path / "market/out/2026-10.csv"
    names = ["鹰城煤业", "新华超市", "宝丰酒业"]
    write_gbk(csv, names, "2021-02-30", mtime=1_790_000_000)  # line 3: no such day
    with pytest.raises(DataError, match=r"file 2026-10.csv line 3"):
        run_resource(file_ws, FILE_CODE)
    failed = runs(file_ws)[-1]
    assert failed[1] == "failed" and failed[2] is not None and "line 3" in failed[2]

    write_gbk(csv, names, "2021-02-28", mtime=1_790_000_100)  # the provider's fix
    summary = run_resource(file_ws, FILE_CODE, full=how == "full")

    assert summary.status == "succeeded", summary.failures
    assert (summary.run_id == failed[0]) == (how == "resume")
    assert tax_names(tmp_path) == names
    if how == "resume":
        assert any("re-pulling 1 file(s)" in n and "2026-10.csv" in n for n in summary.notes)


# --- a lost lease, a stale heartbeat on this host ------------------------------------------


def take_over(ws: Workspace, holder: str = "pid 4242@elsewhere.example") -> None:
    """What another holder's takeover leaves on the lease row."""
    with ws.store.session() as s:
        s.execute(
            sa.update(RunLease)
            .where(RunLease.resource_code == "R1")
            .values(holder=holder, pid=4242, host="elsewhere.example", run_id=None,
                    acquired_at=utcnow())
        )  # fmt: skip


def test_a_holder_that_lost_its_lease_stops_and_leaves_the_run_to_the_new_holder(
    tmp_path: Path, table_ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lease, "HEARTBEAT_EVERY", dt.timedelta(milliseconds=20))
    write_source(tmp_path / "src.db", range(1, 41))
    noticed = threading.Event()
    beat = lease.heartbeat

    def noticing(*args: object) -> lease.Taken | None:
        taken = beat(*args)  # type: ignore[arg-type]
        if taken is not None:
            noticed.set()
        return taken

    monkeypatch.setattr(lease, "heartbeat", noticing)

    class TakenOverWhileExtracting(QuietReporter):
        def task(self, label: str, total: int | None) -> Callable[[int], None]:
            def progress(n: int) -> None:
                if label.startswith("extract"):
                    take_over(table_ws)  # its heartbeat went stale, say: another host took it
                    assert noticed.wait(30)  # the next heartbeat finds it

            return progress

    with pytest.raises(LeaseLost) as lost:
        run_resource(table_ws, "R1", reporter=TakenOverWhileExtracting())

    assert str(lost.value).startswith(
        "lost the lease of resource R1 to pid 4242@elsewhere.example at "
    )
    assert str(lost.value).endswith(": stopping; nothing after plan was done by this process")
    assert is_terminal(lost.value)
    assert target_ids(tmp_path / "a.db") == list(range(1, 21))  # nothing delivered
    assert runs(table_ws)[-1][1:] == ("running", None)  # not failed: it is the new holder's
    now = lease.current(table_ws, "R1")
    assert now is not None and now.holder == "pid 4242@elsewhere.example"  # never taken back


def test_a_stale_heartbeat_of_a_live_process_on_this_host_is_no_takeover(
    table_ws: Workspace, live_pid: int
) -> None:
    # A long store transaction can hold heartbeats back: on this host the pid decides.
    hold_lease(table_ws, live_pid, socket.gethostname(), age=lease.LEASE_TIMEOUT * 3)
    with pytest.raises(RunBusy, match=f"pid {live_pid}@"):
        run_resource(table_ws, "R1")
    assert "run.lease_taken_over" not in audit_kinds(table_ws)


# --- a DAG run holds its lease from plan to record -----------------------------------------

WHO = "airflow exchange_R1 manual__1"


@pytest.fixture(params=["sqlite", "postgresql"])
def dag_ws(
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Workspace]:
    """R1 from src to two subscribers a and b (subscriptions 1 and 2), nothing run yet, on a
    SQLite and a PostgreSQL store (whose clock the heartbeats use)."""
    url = (
        f"sqlite:///{tmp_path / 'exchange.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_database")
    )
    nodes = {n: ("sqlite", f"{{path: {n}.db}}") for n in ("src", "a", "b")}
    (tmp_path / "catalog.yaml").write_text(catalog_yaml(nodes, RESOURCE), encoding="utf-8")
    ws = Workspace.open(tmp_path / "catalog.yaml", Settings(home=tmp_path, db_url=url))
    monkeypatch.setenv("EXCHANGE_HOME", str(tmp_path))
    monkeypatch.setenv("EXCHANGE_DB_URL", url)
    write_source(tmp_path / "src.db", range(1, 21))
    for node in ("a", "b"):
        add_subscription(ws, "R1", node, ["id", "name"], FAR)
    yield ws
    ws.close()


def planned_and_validated(tmp_path: Path) -> str:
    cat = str(tmp_path / "catalog.yaml")
    run_id: str = orch.plan_step(cat, "R1", holder=WHO)["run_id"]
    orch.extract_step(cat, run_id, holder=WHO)
    orch.validate_step(cat, run_id, holder=WHO)
    return run_id


def test_one_load_task_finishing_does_not_free_the_dag_runs_lease_for_its_siblings(
    tmp_path: Path, dag_ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    cat, run_id = str(tmp_path / "catalog.yaml"), planned_and_validated(tmp_path)
    inside, go_on = threading.Event(), threading.Event()
    real = table_load.load_subscriber

    def slow_for_b(ws: Workspace, run: object, d: TableDelivery, on_rows: object = None) -> object:
        if d.node == "b":
            inside.set()
            go_on.wait(30)
        return real(ws, run, d, on_rows)  # type: ignore[arg-type]

    monkeypatch.setattr(table_load, "load_subscriber", slow_for_b)
    errors: list[BaseException] = []

    def load_b() -> None:
        try:
            orch.load_step(cat, run_id, 2, holder=WHO)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    sibling = threading.Thread(target=load_b)
    sibling.start()
    assert inside.wait(30)
    orch.load_step(cat, run_id, 1, holder=WHO)  # finishes while b still works

    held = lease.current(dag_ws, "R1")
    assert held is not None and held.holder == WHO and held.state == "working"
    (shown, *_) = recent_runs(dag_ws, "R1")
    assert shown.status == "running" and shown.holder is not None and WHO in shown.holder
    with pytest.raises(RunBusy, match=f"{WHO} holds it"):
        run_resource(dag_ws, "R1")

    go_on.set()
    sibling.join()
    assert not errors, errors
    assert orch.record_step(cat, run_id, holder=WHO)["status"] == "succeeded"
    assert lease.current(dag_ws, "R1") is None  # the record step gives it back
    assert target_ids(tmp_path / "a.db") == target_ids(tmp_path / "b.db") == list(range(1, 21))


def test_a_cli_run_between_the_dag_runs_tasks_is_refused_until_the_dag_run_went_silent(
    tmp_path: Path, dag_ws: Workspace
) -> None:
    cat = str(tmp_path / "catalog.yaml")
    run_id = orch.plan_step(cat, "R1", holder=WHO)["run_id"]

    for how in ({}, {"restart": True}):
        with pytest.raises(RunBusy) as busy:
            run_resource(dag_ws, "R1", **how)
        assert f"is running: {WHO} holds it (run {run_id}, waiting between its tasks" in str(
            busy.value
        )
    (shown, *_) = recent_runs(dag_ws, "R1")
    assert (shown.id, shown.status, shown.resumable) == (run_id, "waiting", False)
    assert shown.holder is not None and shown.holder.startswith(f"{WHO}: waiting between tasks")
    assert (dag_ws.settings.runs_dir / "R1" / run_id / "plan.json").exists()  # untouched
    orch.extract_step(cat, run_id, holder=WHO)  # the DAG run goes on

    # No task for LEASE_TIMEOUT (the scheduler is gone): a CLI run takes it over, audited...
    with dag_ws.store.session() as s:
        s.execute(sa.update(RunLease).values(heartbeat_at=utcnow() - lease.LEASE_TIMEOUT * 2))
    assert run_resource(dag_ws, "R1").run_id == run_id
    assert "run.lease_taken_over" in audit_kinds(dag_ws)
    # ... and the DAG run's next task stops instead of working on a run that is not its own.
    with pytest.raises(LeaseLost, match="lost the lease of resource R1 to nobody") as lost:
        orch.validate_step(cat, run_id, holder=WHO)
    assert is_terminal(lost.value)


@pytest.mark.parametrize("order", ["failing first", "failing last"])
def test_a_load_that_raises_is_its_subscribers_failed_delivery_whatever_the_task_order(
    order: str, tmp_path: Path, dag_ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    cat, run_id = str(tmp_path / "catalog.yaml"), planned_and_validated(tmp_path)
    real = table_load.load_subscriber

    def broken_for_a(
        ws: Workspace, run: object, d: TableDelivery, on_rows: object = None
    ) -> object:
        if d.node == "a":
            raise RuntimeError("boom [/x]")
        return real(ws, run, d, on_rows)  # type: ignore[arg-type]

    monkeypatch.setattr(table_load, "load_subscriber", broken_for_a)
    for sid in (1, 2) if order == "failing first" else (2, 1):
        if sid == 1:
            with pytest.raises(DeliveryFailed, match=r"subscription 1: RuntimeError: boom"):
                orch.load_step(cat, run_id, 1, holder=WHO)
        else:
            orch.load_step(cat, run_id, 2, holder=WHO)
        assert runs(dag_ws)[-1] == (run_id, "running", None)  # a delivery's failure is no step's

    with pytest.raises(DeliveryFailed, match=r"subscription 1: RuntimeError: boom \[/x\]"):
        orch.record_step(cat, run_id, holder=WHO)
    assert runs(dag_ws)[-1][:2] == (run_id, "failed")
    assert lease.current(dag_ws, "R1") is None
    assert target_ids(tmp_path / "b.db") == list(range(1, 21))


# --- error text is shown as written ---------------------------------------------------------


@pytest.mark.parametrize("command", [["runs", "R1"], ["status"]])
def test_an_error_with_markup_characters_is_shown_as_written(
    command: list[str], tmp_path: Path, table_ws: Workspace
) -> None:
    failed = fail_once(table_ws, tmp_path / "src.db")
    with table_ws.store.session() as s:
        run = s.get(Run, failed)
        assert run is not None
        run.error = "extract failed: column [/x] [bold]remark[/bold] is gone"
    env = {**os.environ, "EXCHANGE_HOME": str(tmp_path), "COLUMNS": "400"}
    env.pop("EXCHANGE_DB_URL", None)
    shown = subprocess.run(
        [sys.executable, "-m", "exchange", *command, "--catalog", str(tmp_path / "catalog.yaml")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert shown.returncode == 0, shown.stderr
    assert "column [/x] [bold]remark[/bold] is gone" in shown.stdout
