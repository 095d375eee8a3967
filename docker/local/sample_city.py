"""The scripted stack's databases and sample city, on this machine's PostgreSQL and MariaDB.

    python docker/local/sample_city.py up STATE_DIR ROWS   # create DBs, catalog, data, grants
    python docker/local/sample_city.py verify STATE_DIR    # each subscriber == source projection
    python docker/local/sample_city.py down                # drop every database of the stack

Database names start with $EXCHANGE_STACK (default ``airflow_exchange``): ``<stack>`` is the
Airflow metadata DB, ``<stack>_store`` the exchange metadata store, ``<stack>_market`` the
provider's front-end DB (PostgreSQL), ``<stack>_tax`` (MariaDB) and ``<stack>_hrss``
(PostgreSQL) the two requesters'. ``up`` prints the environment lines the services need.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import sys
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import yaml

ROOT = Path(__file__).resolve().parents[2]
STACK = os.environ.get("EXCHANGE_STACK", "airflow_exchange")
PG = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
MARIADB: dict[str, Any] = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}
RESOURCE = "410400-SCJG-0001"
PG_DBS = [STACK, f"{STACK}_store", f"{STACK}_market", f"{STACK}_hrss"]
MARIADB_DBS = [f"{STACK}_tax"]
SOURCE_DDL = """CREATE TABLE enterprise (
  id bigint PRIMARY KEY, uscc char(18) NOT NULL, name varchar(100) NOT NULL,
  legal_person varchar(50), id_card char(18), reg_capital numeric(18,2), established date,
  updated_at timestamp NOT NULL, status smallint, region_code char(6), address varchar(200),
  phone varchar(20), industry varchar(10), scope text, is_active boolean, remark varchar(200))"""


def pg_url(db: str) -> str:
    return f"postgresql://postgres@127.0.0.1:5432/{db}"


def _drop_all() -> None:
    with psycopg.connect(PG, autocommit=True) as c:
        for db in PG_DBS:
            c.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')  # names: ours, fixed
    with pymysql.connect(**MARIADB, autocommit=True) as m, m.cursor() as cur:
        for db in MARIADB_DBS:
            cur.execute(f"DROP DATABASE IF EXISTS `{db}`")


def _fill_source(rows: int) -> None:
    from exchange.demo.registry import enterprise_rows

    with psycopg.connect(pg_url(f"{STACK}_market")) as c:
        c.execute(SOURCE_DDL)
        with c.cursor().copy("COPY enterprise FROM STDIN") as copy:
            for row in enterprise_rows(1, rows + 1):
                copy.write_row(row)


def up(state: Path, rows: int) -> None:
    """Fresh databases, the sample catalog, the provider's table and two approved grants."""
    _drop_all()
    with psycopg.connect(PG, autocommit=True) as c:
        for db in PG_DBS:
            c.execute(f"CREATE DATABASE \"{db}\" ENCODING 'UTF8' TEMPLATE template0")
    with pymysql.connect(**MARIADB, autocommit=True) as m, m.cursor() as cur:
        for db in MARIADB_DBS:
            cur.execute(f"CREATE DATABASE `{db}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    _fill_source(rows)

    doc = yaml.safe_load((ROOT / "schemas/examples/demo.yaml").read_text(encoding="utf-8"))
    kinds = {"market_fe": "postgresql", "tax_fe": "mysql", "hrss_fe": "postgresql"}
    # The demo's table resource and departments, with real servers behind Airflow connections.
    doc["nodes"] = [n for n in doc["nodes"] if n["name"] in kinds]
    doc["resources"] = [r for r in doc["resources"] if r["code"] == RESOURCE]
    for node in doc["nodes"]:
        node["kind"] = kinds[node["name"]]
        node["connection"] = {"airflow_conn_id": node["name"]}
    catalog = state / "catalog.yaml"
    catalog.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), "utf-8")

    os.environ["EXCHANGE_DB_URL"] = pg_url(f"{STACK}_store")
    os.environ["EXCHANGE_HOME"] = str(state / "home")
    from exchange.demo.run import GRANTS
    from exchange.workflow.grants import add_subscription
    from exchange.workspace import Workspace

    ws = Workspace.open(catalog)  # migrates the store
    try:
        until = dt.date.today() + dt.timedelta(days=365)
        for node, fields in GRANTS.items():
            add_subscription(
                ws, RESOURCE, node, fields, until, department=ws.catalog.node(node).department
            )
    finally:
        ws.close()
    env = {
        "EXCHANGE_CATALOG": str(catalog),
        "EXCHANGE_DB_URL": pg_url(f"{STACK}_store"),
        "AIRFLOW_CONN_MARKET_FE": pg_url(f"{STACK}_market"),
        "AIRFLOW_CONN_HRSS_FE": pg_url(f"{STACK}_hrss"),
        "AIRFLOW_CONN_TAX_FE": f"mysql://root@127.0.0.1:3306/{STACK}_tax",
        "SAMPLE_RESOURCE": RESOURCE,
        "SAMPLE_ROWS": str(rows),
    }
    for k, v in env.items():
        print(f"{k}={v}")


def _rows(cursor: Any, fields: list[str]) -> list[tuple[Any, ...]]:
    cols = ", ".join(fields)  # fields from GRANTS: fixed identifiers of the sample catalog
    cursor.execute(f"SELECT {cols} FROM enterprise ORDER BY id")  # noqa: S608
    return [tuple(_normal(v) for v in r) for r in cursor.fetchall()]


def _normal(v: Any) -> Any:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, str):
        return v.rstrip()
    return v


def verify() -> bool:
    """Each requester's table equals the source projection of its granted fields."""
    from exchange.demo.run import GRANTS

    ok = True
    with psycopg.connect(pg_url(f"{STACK}_market")) as src:
        for node, fields in GRANTS.items():
            want = _rows(src.cursor(), fields)
            if node == "tax_fe":
                with pymysql.connect(**MARIADB, database=f"{STACK}_tax") as m, m.cursor() as cur:
                    got = _rows(cur, fields)
            else:
                with psycopg.connect(pg_url(f"{STACK}_hrss")) as c:
                    got = _rows(c.cursor(), fields)
            same = got == want
            ok &= same
            print(
                f"{node}: {len(got):,} rows, {len(fields)} granted fields: "
                f"{'equal to' if same else 'DIFFERENT FROM'} the source projection"
            )
    return ok


def main(argv: list[str]) -> None:
    if argv[0] == "up":
        up(Path(argv[1]), int(argv[2]))
    elif argv[0] == "verify":
        sys.exit(0 if verify() else 1)
    elif argv[0] == "down":
        _drop_all()
    else:
        raise SystemExit(f"unknown command {argv[0]!r}")


if __name__ == "__main__":
    sys.stdout = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", line_buffering=True)
    main(sys.argv[1:])
