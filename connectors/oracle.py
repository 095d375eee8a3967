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
from sqlalchemy.engine import URL, Connection, Engine

from connectors.base import StagedMerge, driver_connection
from connectors.columns import Column

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


# Oracle's reserved words (V$RESERVED_WORDS, reserved = 'Y'): SQLAlchemy's Oracle preparer
# misses some (ACCESS, FILE, ROWS, SESSION, ...), and an unquoted one breaks CREATE TABLE.
RESERVED = frozenset(
    """access add all alter and any as asc audit between by char check cluster column comment
    compress connect create current date decimal default delete desc distinct drop else
    exclusive exists file float for from grant group having identified immediate in increment
    index initial insert integer intersect into is level like lock long maxextents minus
    mlslabel mode modify noaudit nocompress not nowait null number of offline on online option
    or order pctfree prior privileges public raw rename resource revoke row rowid rownum rows
    select session set share size smallint start successful synonym sysdate table then to
    trigger uid union unique update user validate values varchar varchar2 view whenever where
    with""".split()
)


class CharInCharacters(sa.types.UserDefinedType[str]):
    """``CHAR(n CHAR)``: fixed length counted in characters, as validation counts them."""

    cache_ok = True

    def __init__(self, length: int | None):
        self.length = length

    def get_col_spec(self, **kw: Any) -> str:
        return f"CHAR({self.length} CHAR)"


class OracleConnector(StagedMerge):
    dialect = "oracle"

    def _create_engine(self, url: URL) -> Engine:
        engine = super()._create_engine(url)
        prep = engine.dialect.identifier_preparer
        prep.reserved_words = set(prep.reserved_words) | RESERVED
        return engine

    def column_type(self, field: Column) -> sa.types.TypeEngine[Any]:
        if field.type == "decimal":
            return oracle.NUMBER(field.precision, field.scale or 0)
        if field.type == "varchar":
            return oracle.VARCHAR2(field.length)  # rendered in characters, not bytes
        if field.type == "char":
            return CharInCharacters(field.length)
        return _SIMPLE[field.type]

    def create_staging(self, conn: Connection, target: sa.Table) -> sa.Table:
        staging = self.staging_copy(
            target,
            # Unquoted (lower case), so that Oracle sees the ORA$PTT_ prefix it requires.
            f"ora$ptt_stg_{target.name.lower()}"[:128],
            keyed=False,  # a private temporary table may have no index, so no primary key
            prefixes=["PRIVATE TEMPORARY"],
            oracle_on_commit="DROP DEFINITION",
        )
        conn.execute(sa.schema.CreateTable(staging))
        return staging

    def encode(self, batch: pa.RecordBatch) -> list[tuple[Any, ...]]:
        return list(zip(*(c.to_pylist() for c in batch.columns), strict=True))

    def bulk_load(
        self, conn: Connection, table: sa.Table, batch: pa.RecordBatch, payload: Any
    ) -> None:
        stmt = self.positional_insert(table, lambda i: f":{i + 1}")
        driver_connection(conn).cursor().executemany(stmt, payload)

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
