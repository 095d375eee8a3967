"""The benchmark's provider table: N rows of the enterprise registry in PostgreSQL.

Deterministic from the row id (``exchange.demo.registry``), 16 columns, index on updated_at.
Built once per N and kept, each N in a database of its own (``source_db``) so that the 1M-row
and the 5M-row tables live side by side (a marker table records N: a half-built table is built
again), since generating 1M rows takes ~20 s.
"""

from __future__ import annotations

import multiprocessing
import time

import psycopg

from connectors.arrow_types import rows_to_batch
from connectors.text_rows import encode_text_rows
from exchange.catalog.model import Field
from exchange.demo.registry import enterprise_rows

ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
SOURCE_DB = "exchange_bench_src"
DDL = """CREATE TABLE enterprise (
  id bigint PRIMARY KEY, uscc char(18) NOT NULL, name varchar(100) NOT NULL,
  legal_person varchar(50), id_card char(18), reg_capital numeric(18,2), established date,
  updated_at timestamp NOT NULL, status smallint, region_code char(6), address varchar(200),
  phone varchar(20), industry varchar(10), scope text, is_active boolean, remark varchar(200))"""
MARIADB_DDL = """CREATE TABLE enterprise (
  id bigint PRIMARY KEY, uscc char(18) NOT NULL, name varchar(100) NOT NULL,
  legal_person varchar(50), id_card char(18), reg_capital decimal(18,2), established date,
  updated_at datetime(6) NOT NULL, status smallint, region_code char(6), address varchar(200),
  phone varchar(20), industry varchar(10), scope longtext, is_active tinyint(1),
  remark varchar(200)) ENGINE=InnoDB CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"""
FIELDS = (
    Field("id", "bigint", nullable=False),
    Field("uscc", "char", length=18, nullable=False),
    Field("name", "varchar", length=100, nullable=False),
    Field("legal_person", "varchar", length=50),
    Field("id_card", "char", length=18),
    Field("reg_capital", "decimal", precision=18, scale=2),
    Field("established", "date"),
    Field("updated_at", "timestamp", nullable=False),
    Field("status", "smallint"),
    Field("region_code", "char", length=6),
    Field("address", "varchar", length=200),
    Field("phone", "varchar", length=20),
    Field("industry", "varchar", length=10),
    Field("scope", "text"),
    Field("is_active", "boolean"),
    Field("remark", "varchar", length=200),
)
CHUNK = 50_000


def source_db(n: int) -> str:
    """The database that holds the ``n``-row provider table."""
    return f"{SOURCE_DB}_{n}"


def dsn(db: str) -> str:
    return f"host=127.0.0.1 port=5432 user=postgres dbname={db}"


def url(db: str) -> str:
    return f"postgresql://postgres@127.0.0.1:5432/{db}"


def copy_text(rows: list[tuple[object, ...]]) -> bytes:
    """Registry rows as PostgreSQL COPY text (what every bench load into the source writes)."""
    from connectors.arrow_types import arrow_schema

    return encode_text_rows(rows_to_batch(rows, arrow_schema(FIELDS)))


def _encoded(bounds: tuple[int, int]) -> bytes:
    return copy_text(list(enterprise_rows(*bounds)))


def ensure_source(n: int, db: str = SOURCE_DB) -> float:
    """Create (or keep) the source database ``db`` with ``n`` rows; return the seconds spent."""
    t0 = time.perf_counter()
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
        if exists.fetchone() is None:
            admin.execute(f'CREATE DATABASE "{db}"')
    with psycopg.connect(dsn(db), autocommit=True) as conn:
        has = conn.execute("SELECT to_regclass('bench_marker') IS NOT NULL").fetchone()
        if has and has[0]:
            row = conn.execute("SELECT rows FROM bench_marker").fetchone()
            if row and row[0] == n:
                return 0.0
        conn.execute("DROP TABLE IF EXISTS enterprise, bench_marker")
        conn.execute(DDL)
        chunks = [(i, min(i + CHUNK, n + 1)) for i in range(1, n + 1, CHUNK)]
        with multiprocessing.get_context("fork").Pool(2) as pool:
            with conn.cursor().copy("COPY enterprise FROM STDIN") as copy:
                for data in pool.imap(_encoded, chunks):
                    copy.write(data)
        conn.execute("CREATE INDEX ix_enterprise_updated_at ON enterprise (updated_at)")
        conn.execute("VACUUM ANALYZE enterprise")
        conn.execute("CREATE TABLE bench_marker (rows bigint)")
        conn.execute("INSERT INTO bench_marker VALUES (%s)", (n,))
    return time.perf_counter() - t0


if __name__ == "__main__":
    import sys

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    print(f"{source_db(n)} built in {ensure_source(n, source_db(n)):.1f} s")
