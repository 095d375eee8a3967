"""SQLite front-end databases: the embedded default (demo, tests, small departments)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import URL, Connection, Engine

from connectors.base import StagedMerge, driver_connection
from connectors.columns import Column

# SQLite has no date, decimal or boolean storage class: dates, timestamps and decimals are kept
# as ISO / exact decimal text (text sorts and compares right; REAL would round decimals).
_TYPES: dict[str, sa.types.TypeEngine[Any]] = {
    "smallint": sa.Integer(),
    "integer": sa.Integer(),
    "bigint": sa.BigInteger(),
    "double": sa.Float(),
    "boolean": sa.Integer(),
}


class SQLiteConnector(StagedMerge):
    dialect = "sqlite"

    def _create_engine(self, url: URL) -> Engine:
        engine = super()._create_engine(url)

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _: Any) -> None:
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            dbapi_conn.execute("PRAGMA busy_timeout=30000")

        return engine

    def column_type(self, field: Column) -> sa.types.TypeEngine[Any]:
        return _TYPES.get(field.type, sa.Text())

    def since_clause(self, column: sa.ColumnClause[Any], value: Any) -> sa.ColumnElement[bool]:
        # Timestamps may be stored as 'YYYY-MM-DD HH:MM:SS' or with fractions or a 'T': compare
        # as instants, not as text, so a tie on the boundary is never missed.
        if hasattr(value, "hour"):
            return sa.func.julianday(column) >= sa.func.julianday(
                sa.bindparam("since", value.isoformat(sep=" "))
            )
        if hasattr(value, "isoformat"):
            return column >= sa.bindparam("since", value.isoformat())
        return column >= sa.bindparam("since", value)

    def create_staging(self, conn: Connection, target: sa.Table) -> sa.Table:
        staging = self.staging_copy(target, f"stg_{target.name}", prefixes=["TEMPORARY"])
        staging.create(conn)
        return staging

    def encode(self, batch: pa.RecordBatch) -> list[list[Any]]:
        return [_sqlite_values(c) for c in batch.columns]

    def bulk_load(
        self, conn: Connection, table: sa.Table, batch: pa.RecordBatch, payload: Any
    ) -> None:
        columns = payload
        driver_connection(conn).executemany(
            self.positional_insert(table, lambda i: "?"), zip(*columns, strict=True)
        )

    def upsert(self, target: sa.Table, staging: sa.Table) -> sa.Executable:
        pk = [c.name for c in target.primary_key.columns]
        # WHERE true: SQLite needs it to tell the upsert's ON CONFLICT from a join's ON.
        ins = sqlite.insert(target).from_select(
            [c.name for c in staging.columns], sa.select(*staging.c).where(sa.true())
        )
        update = {c.name: ins.excluded[c.name] for c in target.columns if c.name not in pk}
        if not update:
            return ins.on_conflict_do_nothing(index_elements=pk)
        return ins.on_conflict_do_update(index_elements=pk, set_=update)


def _sqlite_values(arr: pa.Array) -> list[Any]:
    """Python values as SQLite stores them: ISO text for dates, exact text for decimals."""
    t = arr.type
    if pa.types.is_temporal(t) or pa.types.is_decimal(t):
        return pc.cast(arr, pa.string()).to_pylist()
    if pa.types.is_boolean(t):
        return pc.cast(arr, pa.int8()).to_pylist()
    return arr.to_pylist()
