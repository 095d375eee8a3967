"""Oracle front-end databases (python-oracledb, thin mode: no Oracle client needed).

Staging is a private temporary table (Oracle 18c+), loaded by array-bound ``executemany``,
then one ``MERGE``. No Oracle server can run on the development machines: this module is
tested through compiled SQL and type mapping only (see docs/runs.md, Dialects).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.dialects import oracle
from sqlalchemy.engine import URL, Connection, Engine

from connectors.arrow_types import instant_text
from connectors.base import SinceFilter, StagedMerge, TableSpec, driver_connection
from connectors.columns import Column
from exchange.kernel.clock import SHANGHAI, TIMEZONE

_SIMPLE: dict[str, sa.types.TypeEngine[Any]] = {
    "smallint": oracle.NUMBER(5, 0),
    "integer": oracle.NUMBER(10, 0),
    "bigint": oracle.NUMBER(19, 0),
    "double": oracle.BINARY_DOUBLE(),
    "text": sa.CLOB(),
    "date": oracle.DATE(),
    "timestamp": oracle.TIMESTAMP(),
    "timestamptz": oracle.TIMESTAMP(timezone=True),
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


# Times cross the thin driver as text: it drops the zone of what it binds and fetches.
_TZ_TEXT = "'YYYY-MM-DD HH24:MI:SS.FF6TZH:TZM'"
_UTC_TEXT = "'YYYY-MM-DD HH24:MI:SS.FF6'"
_WITH_ZONE = oracle.TIMESTAMP(timezone=True)
_OFFSET: sa.ColumnClause[str] = sa.literal_column("'+00:00'")


def _read_as(column: sa.ColumnClause[Any], logical: str) -> sa.ColumnElement[Any]:
    """What the select reads of a column: a timestamptz as UTC text with its offset, a
    timestamp as Asia/Shanghai wall-clock time, whatever zone (if any) the column keeps (a
    DATE or TIMESTAMP is taken in the session's zone, Asia/Shanghai)."""
    if logical == "timestamptz":
        utc = sa.func.sys_extract_utc(sa.cast(column, _WITH_ZONE))
        text = sa.func.concat(sa.func.to_char(utc, sa.literal_column(_UTC_TEXT)), _OFFSET)
        return text.label(column.name)
    if logical == "timestamp":
        local = sa.cast(column, _WITH_ZONE).op("AT TIME ZONE")(sa.literal_column(f"'{TIMEZONE}'"))
        return sa.cast(local, oracle.TIMESTAMP()).label(column.name)
    return column


class OracleConnector(StagedMerge):
    dialect = "oracle"

    def _create_engine(self, url: URL) -> Engine:
        engine = super()._create_engine(url)
        prep = engine.dialect.identifier_preparer
        prep.reserved_words = set(prep.reserved_words) | RESERVED

        @sa.event.listens_for(engine, "connect")
        def _session_zone(dbapi_conn: Any, _: Any) -> None:
            # Naive times (DATE, TIMESTAMP) are Asia/Shanghai wall-clock time.
            with dbapi_conn.cursor() as cur:
                cur.execute(f"ALTER SESSION SET TIME_ZONE = '{TIMEZONE}'")

        return engine

    def select_statement(self, spec: TableSpec, since: SinceFilter | None) -> sa.Select[Any]:
        table = sa.table(spec.name, *(sa.column(n) for n in spec.column_names), schema=spec.schema)
        stmt = sa.select(*(_read_as(table.c[f.name], f.type) for f in spec.fields))
        if since is not None:
            stmt = stmt.where(self.filter_clause(table.c[since.column], since))
        return stmt

    def since_clause(self, column: sa.ColumnClause[Any], value: Any) -> sa.ColumnElement[bool]:
        # The driver would drop an instant's zone: bind it as the session's wall-clock time.
        if isinstance(value, dt.datetime) and value.tzinfo is not None:
            value = value.astimezone(SHANGHAI).replace(tzinfo=None)
        return super().since_clause(column, value)

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
        columns = [
            instant_text(c) if pa.types.is_timestamp(c.type) and c.type.tz else c
            for c in batch.columns
        ]
        return list(zip(*(c.to_pylist() for c in columns), strict=True))

    def bulk_load(
        self, conn: Connection, table: sa.Table, batch: pa.RecordBatch, payload: Any
    ) -> None:
        stmt = self.positional_insert(table, lambda i: _bind(table.columns[i], i))
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


def _bind(column: sa.Column[Any], i: int) -> str:
    """The placeholder of the i-th column: an instant is bound as text with its offset."""
    if isinstance(column.type, sa.TIMESTAMP) and column.type.timezone:
        return f"TO_TIMESTAMP_TZ(:{i + 1}, {_TZ_TEXT})"
    return f":{i + 1}"
