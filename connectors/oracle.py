"""Oracle front-end databases (python-oracledb, thin mode: no Oracle client needed).

Staging is a private temporary table (Oracle 18c+), loaded by array-bound ``executemany``,
then one ``MERGE``. No Oracle server can run on the development machines: this module is
tested through compiled SQL and type mapping only (see the README).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.dialects import oracle
from sqlalchemy.engine import Connection

from connectors.base import DatabaseConnector, driver_connection
from exchange.catalog.model import Field

_SIMPLE: dict[str, sa.types.TypeEngine[Any]] = {
    "smallint": oracle.NUMBER(5, 0),
    "integer": oracle.NUMBER(10, 0),
    "bigint": oracle.NUMBER(19, 0),
    "double": oracle.BINARY_DOUBLE(),
    "text": sa.CLOB(),
    "date": oracle.DATE(),
    "timestamp": oracle.TIMESTAMP(),
    "boolean": oracle.NUMBER(1, 0),
}


class OracleConnector(DatabaseConnector):
    dialect = "oracle"

    def column_type(self, field: Field) -> sa.types.TypeEngine[Any]:
        if field.type == "decimal":
            return oracle.NUMBER(field.precision, field.scale or 0)
        if field.type == "varchar":
            return oracle.VARCHAR2(field.length)  # rendered in characters, not bytes
        if field.type == "char":
            return sa.CHAR(field.length)
        return _SIMPLE[field.type]

    def create_staging(self, conn: Connection, target: sa.Table) -> sa.Table:
        staging = self.staging_copy(
            target,
            f"ora$ptt_stg_{target.name}"[:128],
            prefixes=["PRIVATE TEMPORARY"],
            oracle_on_commit="DROP DEFINITION",
        )
        conn.execute(sa.schema.CreateTable(staging))
        return staging

    def bulk_load(self, conn: Connection, staging: sa.Table, batch: pa.RecordBatch) -> None:
        stmt = self.positional_insert(staging, lambda i: f":{i + 1}")
        rows = list(zip(*(c.to_pylist() for c in batch.columns), strict=True))
        driver_connection(conn).cursor().executemany(stmt, rows)

    def upsert(self, target: sa.Table, staging: sa.Table) -> sa.Executable:
        prep = self.engine.dialect.identifier_preparer
        q = prep.quote
        pk = [c.name for c in target.primary_key.columns]
        others = [c.name for c in target.columns if c.name not in pk]
        on = " AND ".join(f"t.{q(c)} = s.{q(c)}" for c in pk)
        cols = ", ".join(q(c.name) for c in target.columns)
        vals = ", ".join(f"s.{q(c.name)}" for c in target.columns)
        matched = (
            " WHEN MATCHED THEN UPDATE SET " + ", ".join(f"t.{q(c)} = s.{q(c)}" for c in others)
            if others
            else ""
        )
        return sa.text(  # validated identifiers, quoted by the dialect; no values
            f"MERGE INTO {prep.format_table(target)} t USING {q(staging.name)} s ON ({on})"  # noqa: S608
            f"{matched} WHEN NOT MATCHED THEN INSERT ({cols}) VALUES ({vals})"
        )
