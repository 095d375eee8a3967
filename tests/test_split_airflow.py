"""A split resource under real Airflow 3: ``dag.test()`` runs one mapped extract task per key
range, one validate over all of them, one mapped load task per (subscriber, range) and one
close per subscriber, and the targets equal the source (PostgreSQL and MariaDB)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from exchange.kernel.settings import Settings
from exchange.workflow.grants import add_subscription
from exchange.workspace import Workspace
from tests.conftest import catalog_yaml, migrated_airflow, run_harness
from tests.sources import (
    RESOURCE_YAML,
    create_source,
    delete_source,
    projection,
    registry,
    table_rows,
)

pytestmark = pytest.mark.airflow

FAR = dt.date.today() + dt.timedelta(days=300)
SOME = ["id", "uscc", "name", "reg_capital", "established", "updated_at", "is_active"]
SPLIT = (
    RESOURCE_YAML.replace("provider: src", "provider: market_fe")
    .replace("  mode: incremental\n", "  mode: snapshot\n")
    .replace("  cursor: updated_at\n", "")
    .replace("  primary_key: [id]\n", "  primary_key: [id]\n  split: {by: id, chunks: 3}\n")
)


def test_a_split_dag_run_maps_a_task_per_range_and_delivers_every_row_once(
    tmp_path_factory: pytest.TempPathFactory,
    pg_database: str,
    mariadb_database: str,
    tmp_path: Path,
) -> None:
    home = tmp_path_factory.mktemp("airflow_home")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "EXCHANGE_"))}
    airflow = migrated_airflow(home, base)
    rows = registry(range(1, 2101))
    create_source(pg_database, rows)
    nodes = {
        "market_fe": ("postgresql", "{airflow_conn_id: market_fe}"),
        "tax_fe": ("mysql", "{airflow_conn_id: tax_fe}"),
    }
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(catalog_yaml(nodes, SPLIT), encoding="utf-8")
    settings = Settings(home=tmp_path / "home", db_url=f"sqlite:///{tmp_path / 'exchange.db'}")
    ws = Workspace.open(catalog, settings)
    try:
        add_subscription(ws, "ENT", "tax_fe", SOME, FAR, target_table="ent_tax")
        add_subscription(ws, "ENT", "market_fe", ["id", "name"], FAR, target_table="ent_copy")
    finally:
        ws.close()
    plain = lambda url: url.replace("+psycopg", "").replace("+pymysql", "")  # noqa: E731
    env = {
        **airflow,
        "EXCHANGE_CATALOG": str(catalog),
        "EXCHANGE_HOME": str(settings.home),
        "EXCHANGE_DB_URL": settings.db_url,
        "AIRFLOW_CONN_MARKET_FE": plain(pg_database),
        "AIRFLOW_CONN_TAX_FE": plain(mariadb_database),
    }

    for run in range(2):  # the first delivery, then a snapshot with rows gone at the source
        got = run_harness("tests.airflow_harness", ["test", "exchange_ENT"], env, 300)
        assert got["state"] == "success", got
        assert got["tasks"] == {
            "plan": "success",
            "ranges": "success",
            **{f"extract_range[{k}]": "success" for k in range(3)},
            "validate": "success",
            "units": "success",
            **{f"load_range[{i}]": "success" for i in range(6)},
            "subscribers": "success",
            "close[0]": "success",
            "close[1]": "success",
            "record": "success",
        }
        assert table_rows(mariadb_database, SOME, "ent_tax") == projection(rows, SOME)
        assert table_rows(pg_database, ["id", "name"], "ent_copy") == projection(
            rows, ["id", "name"]
        )
        if run == 0:
            gone = [1, 700, 701, 2100]
            delete_source(pg_database, gone)
            rows = [r for r in rows if r[0] not in gone]
