"""A run held back by quality ends the same way on every path, for both kinds of rows.

Nothing is delivered, every planned subscriber's delivery is ``held``, the run is ``held``;
``exchange run`` says why and exits 1; in Airflow the task that finds the verdict fails
*without a retry* (a retry cannot change a quality verdict) and ``record`` closes the run.

The kinds: a table resource (provider a front-end DB), and a tabular CSV file resource whose
rows go to a table subscriber and whose file goes to a file subscriber (a ``local`` node);
held, neither gets anything. Every front-end DB is SQLite.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from exchange import orchestration as orch
from exchange.files.models import FileDelivery
from exchange.flow import run_resource
from exchange.kernel.errors import RunHeld, is_terminal
from exchange.kernel.settings import Settings
from exchange.store.models import Delivery, Run, Subscription, Watermark
from exchange.workflow.grants import add_subscription
from exchange.workspace import Workspace
from tests.conftest import catalog_yaml, migrated_airflow, run_harness
from tests.sources import create_source, registry, upsert_source
from tests.test_quality_flow import GRANT_A, T1, damage, resource_yaml

BIN = Path(sys.executable).parent
FAR = dt.date.today() + dt.timedelta(days=300)

TABLE = "ENT"
TABLE_WHY = "4 of 60 rows bad (6.7%), more than the resource allows (5.0%)"
FILE = "410400-SCJG-0009"
FILE_WHY = "2 of 20 rows bad (10.0%), more than the resource allows (5.0%)"
CONTROL = "CTRL"  # a clean table whose one subscriber cannot be reached: retried

FILE_RESOURCE = f"""\
- code: "{FILE}"
  name: 企业名录（表格文件）
  kind: file
  provider: market_files
  share: unconditional
  files: {{path: out, pattern: '*.csv', format: csv, encoding: utf-8}}
  primary_key: [uscc]
  quality: {{max_bad_ratio: 0.05}}
  fields:
    - {{name: uscc, type: char, length: 18, nullable: false, title: 统一社会信用代码}}
    - {{name: name, type: varchar, length: 100, nullable: false, title: 企业名称}}
    - {{name: status, type: smallint, title: 登记状态, rules: {{enum: [1, 2, 3, 4]}}}}
"""
FILE_BAD = {3, 9}  # status 7: 2 of 20 rows, 10 %


def csv_rows(bad: set[int]) -> str:
    lines = ["统一社会信用代码,企业名称,登记状态"]
    lines += [f"91410400MA44AB{i:04d},平顶山市企业{i},{7 if i in bad else 1}" for i in range(1, 21)]
    return "\n".join(lines) + "\n"


@dataclass
class City:
    """A temporary city: provider and subscriber front-end nodes, a catalog, a store."""

    root: Path
    catalog: Path
    settings: Settings
    table_bad: dict[int, str]

    def workspace(self) -> Workspace:
        return Workspace.open(self.catalog, self.settings)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_")}
        env.update(
            EXCHANGE_HOME=str(self.settings.home),
            EXCHANGE_DB_URL=self.settings.db_url,
            COLUMNS="250",  # rich wraps at 80 columns without a terminal
        )
        return env

    def fix_table_source(self) -> None:
        """The provider corrects the bad rows (their cursor moves)."""
        upsert_source(f"sqlite:///{self.root / 'src.db'}", registry(sorted(self.table_bad), T1))

    def fix_file_source(self) -> None:
        """The provider drops a corrected file in place of the bad one."""
        path = self.root / "market/out/2026-11.csv"
        path.write_text(csv_rows(set()), encoding="utf-8")
        later = path.stat().st_mtime + 5
        os.utime(path, (later, later))


def build_city(
    root: Path, *, table: bool = False, file: bool = False, control: bool = False
) -> City:
    """The resources asked for, each with a quality verdict that holds its first run back.

    table: 60 enterprise rows, 4 bad, to ``a.db`` (table ``ent``). file: a 20-row CSV, 2 bad,
    to ``tax.db`` (table ``enterprise``) and, as a file, to the ``tax_files`` directory (``in/``).
    control: 60 clean rows to a PostgreSQL node nobody listens on (127.0.0.1:9).
    """
    nodes: dict[str, tuple[str, str]] = {}
    blocks: list[str] = []
    bad: dict[int, str] = {}
    if table:
        rows, bad = damage(registry(range(1, 61)))  # 4 of 60 rows: 6.7 %, more than 5 %
        create_source(f"sqlite:///{root / 'src.db'}", rows)
        nodes |= {"src": ("sqlite", "{path: src.db}"), "a": ("sqlite", "{path: a.db}")}
        blocks.append(resource_yaml())
    if file:
        (root / "market/out").mkdir(parents=True)
        (root / "tax_files").mkdir()
        (root / "market/out/2026-11.csv").write_text(csv_rows(FILE_BAD), encoding="utf-8")
        nodes |= {
            "market_files": ("local", "{path: market}"),
            "tax_fe": ("sqlite", "{path: tax.db}"),
            "tax_files": ("local", "{path: tax_files}"),
        }
        blocks.append(FILE_RESOURCE)
    if control:
        create_source(f"sqlite:///{root / 'ctrl_src.db'}", registry(range(1, 61)))
        nodes |= {
            "ctrl_src": ("sqlite", "{path: ctrl_src.db}"),
            "down": ("postgresql", "{env: HELD_TEST_DOWN_URL}"),
        }
        blocks.append(
            resource_yaml()
            .replace("code: ENT", f"code: {CONTROL}")
            .replace("provider: src", "provider: ctrl_src")
        )
    catalog = root / "catalog.yaml"
    catalog.write_text(catalog_yaml(nodes, "".join(blocks)), encoding="utf-8")
    settings = Settings(home=root / "home", db_url=f"sqlite:///{root / 'exchange.db'}")
    city = City(root, catalog, settings, bad)
    with city.workspace() as ws:
        if table:
            add_subscription(ws, TABLE, "a", GRANT_A, FAR, target_table="ent")
        if file:
            add_subscription(ws, FILE, "tax_fe", ["uscc", "name", "status"], FAR,
                             target_table="enterprise")  # fmt: skip
            add_subscription(ws, FILE, "tax_files", [], FAR, target_dir="in")
        if control:
            add_subscription(ws, CONTROL, "down", GRANT_A, FAR, target_table="ent")
    return city


# --- what a city holds ---------------------------------------------------------------------


def sqlite_count(path: Path, table: str) -> int | None:
    """Rows in ``table`` of the SQLite DB at ``path``; None when the table (or DB) is absent."""
    if not path.exists():
        return None
    with sqlite3.connect(path) as db:
        known = db.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (table,)).fetchall()
        if not known:
            return None
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608


def files_under(path: Path) -> list[str]:
    """Every file below ``path`` (hidden ``.part`` files included), relative."""
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


def runs(ws: Workspace, code: str) -> list[tuple[str, str, str | None]]:
    """(run id, status, error) of every run of ``code``, oldest first."""
    with ws.store.session() as s:
        q = sa.select(Run.id, Run.status, Run.error).where(Run.resource_code == code)
        return [tuple(r) for r in s.execute(q.order_by(Run.started_at, Run.id)).all()]  # type: ignore[misc]


def deliveries(ws: Workspace, run_id: str) -> dict[int, tuple[str, int, str | None]]:
    """subscription -> (status, rows, error) of one run's delivery rows."""
    with ws.store.session() as s:
        q = sa.select(Delivery.subscription_id, Delivery.status, Delivery.rows, Delivery.error)
        return {
            sid: (status, rows, error)
            for sid, status, rows, error in s.execute(q.where(Delivery.run_id == run_id)).all()
        }


def subscription_ids(ws: Workspace, code: str) -> list[int]:
    with ws.store.session() as s:
        q = sa.select(Subscription.id).where(Subscription.resource_code == code)
        return sorted(s.execute(q).scalars())


def assert_held_in_store(city: City, code: str, why: str) -> str:
    """The one run of ``code`` is held, every subscriber's delivery is held with nothing
    delivered and no watermark moved, no file reached the ledger; the run's id."""
    with city.workspace() as ws:
        ((run_id, status, error),) = runs(ws, code)
        assert status == "held"
        assert error is not None and why in error
        subs = subscription_ids(ws, code)
        assert deliveries(ws, run_id) == {sid: ("held", 0, f"held back: {why}") for sid in subs}
        with ws.store.session() as s:
            assert [s.get(Watermark, sid) for sid in subs] == [None] * len(subs)
            ledger = s.execute(sa.select(FileDelivery).where(FileDelivery.run_id == run_id))
            assert ledger.scalars().all() == []
    return run_id


def assert_nothing_at_the_table_subscriber(city: City) -> None:
    assert sqlite_count(city.root / "a.db", "ent") is None


def assert_nothing_at_the_file_resource_subscribers(city: City) -> None:
    assert sqlite_count(city.root / "tax.db", "enterprise") is None  # no rows, no table
    assert files_under(city.root / "tax_files") == []  # no file, not even a partial one


# --- the engine's steps, as the tasks call them (no Airflow) -------------------------------


def test_run_held_is_terminal_so_a_scheduler_never_retries_it() -> None:
    exc = RunHeld("r1", TABLE, TABLE_WHY)

    assert is_terminal(exc)
    assert (exc.run_id, exc.resource, exc.why) == ("r1", TABLE, TABLE_WHY)
    assert str(exc) == f"resource {TABLE} run r1 held back: {TABLE_WHY}"


@pytest.mark.parametrize(
    ("code", "why"), [(TABLE, TABLE_WHY), (FILE, FILE_WHY)], ids=["table", "file"]
)
def test_validate_step_and_record_step_raise_run_held_and_load_step_delivers_nothing(
    code: str, why: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    city = build_city(tmp_path, table=code == TABLE, file=code == FILE)
    monkeypatch.setenv("EXCHANGE_HOME", str(city.settings.home))
    monkeypatch.setenv("EXCHANGE_DB_URL", city.settings.db_url)
    cat = city.catalog

    run_id = orch.plan_step(cat, code)["run_id"]
    orch.extract_step(cat, run_id)
    with pytest.raises(RunHeld) as validated:
        orch.validate_step(cat, run_id)
    with pytest.raises(RunHeld) as again:  # what a retry of the task would get: the same
        orch.validate_step(cat, run_id)
    subs = orch.subscribers_step(cat, run_id)
    loads = []
    for sid in subs:  # were a load task to run anyway, it would deliver nothing
        with pytest.raises(RunHeld) as loaded:
            orch.load_step(cat, run_id, sid)
        loads.append(loaded.value)
    with pytest.raises(RunHeld) as recorded:
        orch.record_step(cat, run_id)

    for exc in (validated.value, again.value, *loads, recorded.value):
        assert is_terminal(exc)
        assert (exc.run_id, exc.resource) == (run_id, code)
    assert validated.value.why == again.value.why == recorded.value.why == why
    assert len(subs) == (2 if code == FILE else 1)
    assert assert_held_in_store(city, code, why) == run_id
    if code == TABLE:
        assert_nothing_at_the_table_subscriber(city)
    else:
        assert_nothing_at_the_file_resource_subscribers(city)


def test_run_resource_of_a_held_tabular_file_reports_held_for_both_subscribers(
    tmp_path: Path,
) -> None:
    city = build_city(tmp_path, file=True)

    with city.workspace() as ws:
        summary = run_resource(ws, FILE)

    assert (summary.status, summary.held) == ("held", FILE_WHY)
    assert (summary.extracted, summary.valid, summary.quarantined) == (20, 18, 2)
    assert summary.failures == {1: f"held back: {FILE_WHY}", 2: f"held back: {FILE_WHY}"}
    assert_held_in_store(city, FILE, FILE_WHY)
    assert_nothing_at_the_file_resource_subscribers(city)


# --- the CLI ---------------------------------------------------------------------------------


def exchange(city: City, *args: str) -> subprocess.CompletedProcess[str]:
    """``exchange ARGS --catalog CATALOG``: the installed console script, in a subprocess."""
    return subprocess.run(
        [str(BIN / "exchange"), *args, "--catalog", str(city.catalog)],
        env=city.env(),
        cwd=city.root,
        capture_output=True,
        text=True,
        timeout=120,
    )


def exchange_here(city: City, *args: str) -> subprocess.CompletedProcess[str]:
    """The same command in this process (a subprocess costs seconds): for the follow-ups."""
    from typer.testing import CliRunner

    from exchange.cli.app import app

    env = {k: v for k, v in city.env().items() if k.startswith("EXCHANGE_") or k == "COLUMNS"}
    result = CliRunner().invoke(app, [*args, "--catalog", str(city.catalog)], env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def test_cli_run_of_a_held_table_exits_1_says_why_delivers_nothing_until_the_source_is_fixed(
    tmp_path: Path,
) -> None:
    city = build_city(tmp_path, table=True)

    held = exchange(city, "run", TABLE)

    assert held.returncode == 1, held.stdout + held.stderr
    assert f"HELD BACK, nothing delivered: {TABLE_WHY}" in held.stdout
    assert f"held back: {TABLE_WHY}" in held.stdout  # the subscriber's row says it too
    assert_nothing_at_the_table_subscriber(city)
    run_id = assert_held_in_store(city, TABLE, TABLE_WHY)
    status = exchange_here(city, "status", TABLE)
    assert status.returncode == 0, status.stderr
    (line,) = [x for x in status.stdout.splitlines() if run_id in x]
    assert re.search(r"\bheld\b", line), status.stdout

    city.fix_table_source()
    after = exchange_here(city, "run", TABLE)

    assert after.returncode == 0, after.stdout + after.stderr
    assert "HELD BACK" not in after.stdout
    assert sqlite_count(city.root / "a.db", "ent") == 60
    with city.workspace() as ws:
        assert [s for _, s, _ in runs(ws, TABLE)] == ["held", "succeeded"]


def test_cli_run_of_a_held_tabular_file_exits_1_and_neither_table_nor_file_subscriber_gets_it(
    tmp_path: Path,
) -> None:
    city = build_city(tmp_path, file=True)

    held = exchange(city, "run", FILE)

    assert held.returncode == 1, held.stdout + held.stderr
    assert f"HELD BACK, nothing delivered: {FILE_WHY}" in held.stdout
    assert_nothing_at_the_file_resource_subscribers(city)
    assert_held_in_store(city, FILE, FILE_WHY)

    city.fix_file_source()
    after = exchange_here(city, "run", FILE)

    assert after.returncode == 0, after.stdout + after.stderr
    assert sqlite_count(city.root / "tax.db", "enterprise") == 20
    assert files_under(city.root / "tax_files") == ["in/2026-11.csv"]


# --- Airflow ---------------------------------------------------------------------------------


@dataclass
class AirflowRuns:
    """One ``dag.test()`` of each resource DAG of one city, with every task's tries."""

    city: City
    result: dict[str, Any]

    def dag(self, code: str) -> dict[str, Any]:
        assert "error" not in self.result, self.result  # the DAGs did not even import
        return dict(self.result["dags"][orch.dag_id(code)])


@pytest.fixture(scope="module")
def airflow_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowRuns]:
    """A migrated Airflow metadata DB (SQLite), then the held table's, the held tabular file's
    and the control's DAG run by ``tests/airflow_tries_harness.py`` in one child process."""
    home = tmp_path_factory.mktemp("held_airflow")
    city = build_city(tmp_path_factory.mktemp("held_city"), table=True, file=True, control=True)
    base = {k: v for k, v in city.env().items() if not k.startswith("AIRFLOW")}
    base.update(
        EXCHANGE_CATALOG=str(city.catalog),
        HELD_TEST_DOWN_URL="postgresql+psycopg://postgres@127.0.0.1:9/nobody",
    )
    env = migrated_airflow(home, base)
    dag_ids = [orch.dag_id(c) for c in (TABLE, FILE, CONTROL)]
    # A timeout here means a task was retried (the harness sets no delay between tries).
    yield AirflowRuns(city, run_harness("tests.airflow_tries_harness", dag_ids, env, 240))


def assert_failed_once_and_never_retried(dag: dict[str, Any]) -> None:
    """The DAG run failed at validate, which had 3 retries and used none; load never ran;
    record ran once (the ledger is closed) and failed, not retried either."""
    tasks = dag["tasks"]
    assert dag["state"] == "failed", dag
    assert dag["retries"]["validate"] == 3 and dag["retries"]["record"] == 3  # it could have
    assert tasks["validate"] == {
        "state": "failed",
        "try_number": 1,
        "max_tries": 3,
        "earlier_tries": [],  # never up_for_retry: no earlier try was archived
    }, tasks
    assert tasks["record"]["state"] == "failed" and tasks["record"]["try_number"] == 1, tasks
    assert tasks["record"]["earlier_tries"] == []
    for name in ("subscribers", "load"):  # never expanded, never ran
        assert tasks[name]["state"] == "upstream_failed" and tasks[name]["try_number"] == 0, tasks
    assert not [k for k in tasks if k.startswith("load[")], tasks
    assert all(t["earlier_tries"] == [] for t in tasks.values()), tasks


@pytest.mark.airflow
def test_airflow_held_table_fails_validate_once_without_retry_and_records_the_run_held(
    airflow_runs: AirflowRuns,
) -> None:
    dag = airflow_runs.dag(TABLE)

    assert_failed_once_and_never_retried(dag)
    assert_held_in_store(airflow_runs.city, TABLE, TABLE_WHY)
    assert_nothing_at_the_table_subscriber(airflow_runs.city)


@pytest.mark.airflow
def test_airflow_held_tabular_file_fails_validate_once_without_retry_delivers_to_neither(
    airflow_runs: AirflowRuns,
) -> None:
    dag = airflow_runs.dag(FILE)

    assert_failed_once_and_never_retried(dag)
    assert_held_in_store(airflow_runs.city, FILE, FILE_WHY)
    assert_nothing_at_the_file_resource_subscribers(airflow_runs.city)


@pytest.mark.airflow
def test_airflow_control_an_unreachable_subscriber_is_retried_so_try_number_1_means_not_retried(
    airflow_runs: AirflowRuns,
) -> None:
    """The harness sees retries: a retriable load failure (DeliveryFailed) is tried 4 times;
    Airflow archives each earlier try (up_for_retry then) in the history as ``failed``."""
    tasks = airflow_runs.dag(CONTROL)["tasks"]

    assert tasks["validate"]["state"] == "success"
    assert tasks["load[0]"]["state"] == "failed" and tasks["load[0]"]["try_number"] == 4, tasks
    assert tasks["load[0]"]["earlier_tries"] == [
        {"try_number": n, "state": "failed"} for n in (1, 2, 3)
    ], tasks
    assert tasks["record"]["state"] == "failed" and tasks["record"]["try_number"] == 1
