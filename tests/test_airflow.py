"""The DAGs under real Airflow 3: integrity, one DAG per resource, a large catalog, an end-to-end
``dag.test()`` against PostgreSQL and MariaDB, pools from the catalog, the housekeeping DAG.

Airflow runs in child processes (``tests/airflow_harness.py``) against one metadata DB that is
migrated once per session, so its configuration never leaks into the rest of the suite.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench.dag_parse import catalog_text
from exchange.kernel.settings import Settings
from exchange.workflow.grants import add_subscription
from exchange.workspace import Workspace
from tests.conftest import catalog_yaml, migrated_airflow, run_harness
from tests.sources import RESOURCE_YAML, create_source, projection, registry, table_rows

pytestmark = pytest.mark.airflow

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW = Path(sys.executable).with_name("airflow")
FAR = dt.date.today() + dt.timedelta(days=300)
SOME = ["id", "uscc", "name", "reg_capital", "established", "updated_at", "is_active"]


@dataclass
class AirflowEnv:
    """A migrated Airflow metadata DB (SQLite) and the environment that points Airflow at it."""

    home: Path
    env: dict[str, str]

    def with_(self, **extra: str) -> dict[str, str]:
        return {**self.env, **extra}

    def harness(self, *args: str, env: dict[str, str], timeout: int = 180) -> dict[str, Any]:
        return run_harness("tests.airflow_harness", list(args), env, timeout)


@pytest.fixture(scope="session")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> AirflowEnv:
    home = tmp_path_factory.mktemp("airflow_home")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "EXCHANGE_"))}
    return AirflowEnv(home, migrated_airflow(home, base))


def _catalog_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "catalog.yaml"
    path.write_text(text, encoding="utf-8")
    return path


MIXED = """\
version: 1
nodes:
  - {name: market_fe, kind: postgresql, connection: {airflow_conn_id: market_fe},
     max_concurrent_extracts: 3}
  - {name: tax_fe, kind: mysql, connection: {env: TAX_URL}}
  - {name: files_fe, kind: sftp, connection: {airflow_conn_id: files_fe}}
  - {name: prov_gw, kind: http, base_url: https://prov.example/api, auth: {scheme: none}}
resources:
  - code: "410400-SCJG-0001"
    name: 企业登记信息
    kind: table
    provider: market_fe
    share: unconditional
    update_cycle: daily
    source: {table: enterprise}
    fields: [{name: id, type: bigint, nullable: false}]
    primary_key: [id]
  - code: "410400-SCJG-0002"
    name: 许可信息
    kind: table
    provider: market_fe
    share: conditional
    update_cycle: every_15_minutes
    source: {table: licence}
    fields: [{name: id, type: bigint, nullable: false}]
    primary_key: [id]
  - code: "410400-SCJG-0004"
    name: 年报附件
    kind: folder
    provider: files_fe
    share: unconditional
    update_cycle: yearly
    files: {path: out/annual_reports, recursive: true}
  - code: "410400-SCJG-0003"
    name: 接口
    kind: api
    provider: prov_gw
    share: unconditional
    operations: [{name: q, method: GET, path: /q}]
    fields: [{name: id, type: bigint, path: id}]
"""


def test_every_table_resource_has_one_dag_and_the_dags_import_cleanly(
    airflow_env: AirflowEnv, tmp_path: Path
) -> None:
    catalog = _catalog_file(tmp_path, MIXED)

    got = airflow_env.harness("integrity", env=airflow_env.with_(EXCHANGE_CATALOG=str(catalog)))

    assert got["import_errors"] == {}
    assert sorted(got["dags"]) == [
        "exchange_410400-SCJG-0001",
        "exchange_410400-SCJG-0002",
        "exchange_410400-SCJG-0004",
        "exchange_housekeeping",
    ]  # the api resource is served on request, never scheduled
    daily = got["dags"]["exchange_410400-SCJG-0001"]
    assert daily["tasks"] == ["plan", "extract", "validate", "subscribers", "load", "record"]
    assert daily["mapped"] == ["load"]
    assert daily["pools"]["extract"] == "exchange_fe_market_fe"
    assert daily["retries"]["load"] == 3 and daily["backoff"]["load"] == 2.0
    assert daily["timeouts"]["extract"] == 3 * 3600
    assert "Asia/Shanghai" in daily["timetable"] and "2 * * *" in daily["timetable"]
    assert daily["deadlines"] == 1 and daily["max_active_runs"] == 1
    assert "*/15 * * * *" in got["dags"]["exchange_410400-SCJG-0002"]["timetable"]
    folder = got["dags"]["exchange_410400-SCJG-0004"]
    assert (
        folder["tasks"] == daily["tasks"] and folder["pools"]["extract"] == "exchange_fe_files_fe"
    )
    assert "*/15 * * * *" in got["dags"]["exchange_housekeeping"]["timetable"]


def test_a_broken_catalog_is_an_import_error_not_a_silent_empty_dag_list(
    airflow_env: AirflowEnv, tmp_path: Path
) -> None:
    catalog = _catalog_file(tmp_path, MIXED.replace("kind: table", "kind: tabel", 1))

    got = airflow_env.harness("integrity", env=airflow_env.with_(EXCHANGE_CATALOG=str(catalog)))

    assert list(got["import_errors"]) == [str(ROOT / "dags" / "exchange_dags.py")]
    assert "tabel" in next(iter(got["import_errors"].values()))


def test_a_200_resource_catalog_parses_into_200_dags(
    airflow_env: AirflowEnv, tmp_path: Path
) -> None:
    # What the parse costs is measured by bench/dag_parse.py (the same catalog, against a
    # 1-resource one): a time bound here would fail on a loaded machine, not on slow code.
    catalog = _catalog_file(tmp_path, catalog_text(200))

    got = airflow_env.harness("integrity", env=airflow_env.with_(EXCHANGE_CATALOG=str(catalog)))

    assert got["import_errors"] == {}
    assert len(got["dags"]) == 201  # 200 resources and the housekeeping DAG
    assert {f"exchange_R{i:04d}" for i in range(200)} < set(got["dags"])


@pytest.mark.postgres
@pytest.mark.mariadb
def test_dag_test_delivers_each_subscriber_its_fields_through_airflow_connections(
    airflow_env: AirflowEnv,
    pg_database: str,
    mariadb_database: str,
    tmp_path: Path,
) -> None:
    rows = registry(range(1, 1201))
    create_source(pg_database, rows)
    nodes = {
        "market_fe": ("postgresql", "{airflow_conn_id: market_fe}"),
        "tax_fe": ("mysql", "{airflow_conn_id: tax_fe}"),
        "hrss_fe": ("postgresql", "{airflow_conn_id: hrss_fe}"),
    }
    text = catalog_yaml(nodes, RESOURCE_YAML.replace("provider: src", "provider: market_fe"))
    catalog = _catalog_file(tmp_path, text)
    settings = Settings(home=tmp_path / "home", db_url=f"sqlite:///{tmp_path / 'exchange.db'}")
    ws = Workspace.open(catalog, settings)
    try:
        add_subscription(ws, "ENT", "tax_fe", SOME, FAR, target_table="ent_tax")
        add_subscription(ws, "ENT", "hrss_fe", ["id", "name"], FAR, target_table="ent_hr")
    finally:
        ws.close()
    # Airflow connections as Airflow reads them: a URI, and its JSON form.
    plain = lambda url: url.replace("+psycopg", "").replace("+pymysql", "")  # noqa: E731
    pg = plain(pg_database)
    host_db = pg.rsplit("/", 1)
    env = airflow_env.with_(
        EXCHANGE_CATALOG=str(catalog),
        EXCHANGE_HOME=str(settings.home),
        EXCHANGE_DB_URL=settings.db_url,
        AIRFLOW_CONN_MARKET_FE=pg,
        AIRFLOW_CONN_TAX_FE=plain(mariadb_database),
        AIRFLOW_CONN_HRSS_FE=json.dumps(
            {
                "conn_type": "postgres",
                "host": "127.0.0.1",
                "port": 5432,
                "login": "postgres",
                "schema": host_db[1],
            }
        ),
    )

    got = airflow_env.harness("test", "exchange_ENT", env=env)

    assert got["state"] == "success", got
    assert got["tasks"] == {
        "plan": "success",
        "extract": "success",
        "validate": "success",
        "subscribers": "success",
        "load[0]": "success",
        "load[1]": "success",
        "record": "success",
    }
    assert table_rows(mariadb_database, SOME, "ent_tax") == projection(rows, SOME)
    assert table_rows(pg_database, ["id", "name"], "ent_hr") == projection(rows, ["id", "name"])
    print(f"dag.test() of a 1,200-row table to 2 subscribers: {got['seconds']:.1f} s")


def test_pools_command_creates_one_pool_per_provider_sized_from_the_catalog(
    airflow_env: AirflowEnv, tmp_path: Path
) -> None:
    catalog = _catalog_file(tmp_path, MIXED)
    env = airflow_env.with_(EXCHANGE_CATALOG=str(catalog))
    exchange = Path(sys.executable).with_name("exchange")

    first = subprocess.run(
        [str(exchange), "airflow", "pools", "--apply"], env=env, capture_output=True, text=True
    )
    # A catalog change resizes the pool: the command updates what exists.
    catalog.write_text(MIXED.replace("max_concurrent_extracts: 3", "max_concurrent_extracts: 5"))
    second = subprocess.run(
        [str(exchange), "airflow", "pools", "--apply"], env=env, capture_output=True, text=True
    )
    listed = subprocess.run(
        [str(AIRFLOW), "pools", "list", "-o", "json"], env=env, capture_output=True, text=True
    )

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert "exchange_fe_market_fe: 5 slots" in second.stdout
    pools = {p["pool"]: int(p["slots"]) for p in json.loads(listed.stdout)}
    assert pools["exchange_fe_market_fe"] == 5
    assert pools["exchange_fe_files_fe"] == 2  # the default, for the folder's pulls
    assert not any("tax_fe" in p for p in pools)  # it provides nothing


def test_the_api_server_serves_the_exchange_api_under_its_prefix(
    airflow_env: AirflowEnv, tmp_path: Path
) -> None:
    catalog = _catalog_file(tmp_path, MIXED)
    env = airflow_env.with_(
        EXCHANGE_CATALOG=str(catalog),
        EXCHANGE_HOME=str(tmp_path / "home"),
        EXCHANGE_DB_URL=f"sqlite:///{tmp_path / 'exchange.db'}",
    )

    got = airflow_env.harness("plugin", env=env)

    assert got["openapi"] == 200 and got["title"] == "city-exchange"
    assert "/subscriptions" in got["paths"]
    assert got["anonymous"] == 401  # the exchange API's own bearer tokens guard it
    assert got["health"] == 200  # and Airflow's own API is still there


def test_a_task_process_loads_the_plugins_folder_without_building_the_api_apps(
    airflow_env: AirflowEnv,
) -> None:
    # What a task process does when it builds its template context: it loads every plugin
    # (for their macros and listeners); only the api-server reads the apps to mount them.
    code = (
        "import json, sys\n"
        "from airflow.sdk.plugins_manager import integrate_macros_plugins, _get_plugins\n"
        "integrate_macros_plugins()\n"
        "loaded = {p.name: p for p in _get_plugins()[0]}\n"
        "before = sorted(m for m in ('exchange.api', 'exchange.gateway.app') if m in sys.modules)\n"
        "apps = [d['url_prefix'] for d in loaded['city_exchange'].fastapi_apps]\n"
        "print(json.dumps({'before': before, 'apps': apps, 'errors': _get_plugins()[1]}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=airflow_env.env,
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )

    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got == {"before": [], "apps": ["/exchange", "/gateway"], "errors": {}}


def test_housekeeping_dag_times_out_a_pending_review_and_writes_the_daily_report(
    airflow_env: AirflowEnv, tmp_path: Path
) -> None:
    from exchange.workflow import service as svc
    from exchange.workflow import states as st
    from tests.workflow_setup import add_people, form, open_city, sh

    ws = open_city(tmp_path / "city")
    try:
        people = add_people(ws)
        view = svc.apply(ws, people["tax"], form(), now=sh("2026-09-30T10:00"))
    finally:
        ws.close()
    env = airflow_env.with_(
        EXCHANGE_CATALOG=str(ws.catalog.path),
        EXCHANGE_HOME=str(ws.settings.home),
        EXCHANGE_DB_URL=ws.settings.db_url,
        EXCHANGE_REVIEW_TIMEOUT_POLICY="reject",
    )
    # Five working days after Wed 2026-09-30 (National Day holidays between): due Oct 13.
    now = {"now": "2026-10-14T00:00:01+08:00"}

    got = airflow_env.harness("test", "exchange_housekeeping", json.dumps(now), env=env)

    assert got["state"] == "success", got
    assert got["tasks"] == {"tick": "success", "prune": "success", "daily_run_report": "success"}
    ws = open_city(tmp_path / "city")
    try:
        shown = svc.show(ws, people["tax"], view.id, now=sh("2026-10-14T00:00:01"))
    finally:
        ws.close()
    assert shown.state == st.REJECTED
    report = json.loads((ws.settings.home / "reports" / "runs-2026-10-13.json").read_text())
    assert report["day"] == "2026-10-13" and report["resources"] == {}
