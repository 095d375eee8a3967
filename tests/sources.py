"""Provider tables in each dialect's own native DDL, filled from the registry generator,
and readers that return a target table as normalised Python rows for comparison."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import psycopg
import pymysql
from sqlalchemy.engine import make_url

from bench.registry_pg import DDL as PG_DDL  # one DDL for the tests and the bench
from bench.registry_pg import MARIADB_DDL
from exchange.demo.registry import COLUMNS, enterprise_row
from exchange.demo.run import SQLITE_DDL, sqlite_value

RESOURCE_YAML = """\
- code: ENT
  name: 企业登记信息
  kind: table
  provider: src
  share: unconditional
  source: {table: enterprise}
  mode: incremental
  primary_key: [id]
  cursor: updated_at
  batch_size: 700
  fields:
    - {name: id, type: bigint, nullable: false}
    - {name: uscc, type: char, length: 18, nullable: false}
    - {name: name, type: varchar, length: 100, nullable: false}
    - {name: legal_person, type: varchar, length: 50}
    - {name: id_card, type: char, length: 18}
    - {name: reg_capital, type: decimal, precision: 18, scale: 2}
    - {name: established, type: date}
    - {name: updated_at, type: timestamp, nullable: false}
    - {name: status, type: smallint}
    - {name: region_code, type: char, length: 6}
    - {name: address, type: varchar, length: 200}
    - {name: phone, type: varchar, length: 20}
    - {name: industry, type: varchar, length: 10}
    - {name: scope, type: text}
    - {name: is_active, type: boolean}
    - {name: remark, type: varchar, length: 200}
"""

Row = tuple[Any, ...]


def registry(ids: Sequence[int], stamp: dt.datetime | None = None) -> list[Row]:
    rows = [enterprise_row(i) for i in ids]
    if stamp is not None:
        at = COLUMNS.index("updated_at")
        rows = [r[:at] + (stamp,) + r[at + 1 :] for r in rows]
    return rows


def _marks(style: str) -> str:
    return ", ".join([style] * len(COLUMNS))


def create_source(url: str, rows: Sequence[Row]) -> None:
    """Create the provider's enterprise table in the database at ``url`` and fill it."""
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        path = make_url(url).database
        assert path
        with sqlite3.connect(path) as db:
            db.execute(SQLITE_DDL)
        upsert_source(url, rows)
        return
    with connect(url) as conn:
        cur = conn.cursor()
        cur.execute(PG_DDL if backend == "postgresql" else MARIADB_DDL)
        conn.commit()
    upsert_source(url, rows)


def upsert_source(url: str, rows: Sequence[Row]) -> None:
    """Insert or replace rows at the provider (as a department's application would)."""
    backend = make_url(url).get_backend_name()
    cols = ", ".join(COLUMNS)
    if backend == "sqlite":
        path = make_url(url).database
        assert path
        with sqlite3.connect(path) as db:
            db.executemany(
                f"INSERT OR REPLACE INTO enterprise ({cols}) VALUES ({_marks('?')})",  # noqa: S608
                [tuple(sqlite_value(v) for v in r) for r in rows],
            )
        return
    with connect(url) as conn:
        cur = conn.cursor()
        if backend == "postgresql":
            sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS[1:])
            sql = f"INSERT INTO enterprise ({cols}) VALUES ({_marks('%s')}) "  # noqa: S608
            sql += f"ON CONFLICT (id) DO UPDATE SET {sets}"
        else:
            sql = f"REPLACE INTO enterprise ({cols}) VALUES ({_marks('%s')})"  # noqa: S608
        cur.executemany(sql, list(rows))
        conn.commit()


def delete_source(url: str, ids: Sequence[int]) -> None:
    with connect(url) as conn:
        cur = conn.cursor()
        mark = "?" if make_url(url).get_backend_name() == "sqlite" else "%s"
        cur.executemany(f"DELETE FROM enterprise WHERE id = {mark}", [(i,) for i in ids])  # noqa: S608
        conn.commit()


def connect(url: str) -> Any:
    """A plain driver connection for fixtures and checks (not the code under test)."""
    u = make_url(url)
    backend = u.get_backend_name()
    if backend == "postgresql":
        return psycopg.connect(host=u.host, port=u.port, user=u.username, dbname=u.database)
    if backend == "mysql":
        return pymysql.connect(
            host=u.host,
            port=u.port or 3306,
            user=u.username,
            password=u.password or "",
            database=u.database,
            charset="utf8mb4",
        )
    assert u.database
    return sqlite3.connect(u.database)


def normal(v: Any) -> Any:
    """One comparable form for what different drivers hand back for the same value."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, Decimal):
        return f"{v:.2f}"
    if isinstance(v, dt.datetime):
        return v.isoformat(sep=" ", timespec="microseconds")
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, str) and len(v) >= 19 and v[4] == "-" and v[10] in " T" and v[13] == ":":
        return dt.datetime.fromisoformat(v).isoformat(sep=" ", timespec="microseconds")
    return v


def table_rows(url: str, fields: Sequence[str], table: str = "enterprise") -> list[Row]:
    """Every row of ``table`` (only ``fields``, in id order), normalised."""
    with connect(url) as conn:
        cur = conn.cursor()
        cur.execute(f"SELECT {', '.join(fields)} FROM {table} ORDER BY id")  # noqa: S608
        return [tuple(normal(v) for v in r) for r in cur.fetchall()]


def table_columns(url: str, table: str = "enterprise") -> list[str]:
    with connect(url) as conn:
        cur = conn.cursor()
        cur.execute(f"SELECT * FROM {table} WHERE 1 = 0")  # noqa: S608
        return [d[0] for d in cur.description]


def projection(rows: Sequence[Row], fields: Sequence[str]) -> list[Row]:
    """What a subscriber granted ``fields`` must hold, given the source rows."""
    idx = [COLUMNS.index(f) for f in fields]
    by_id = {r[0]: r for r in rows}
    return [tuple(normal(by_id[k][i]) for i in idx) for k in sorted(by_id)]
