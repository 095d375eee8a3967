"""SQLite front-end databases: the embedded default (demo, tests, small departments)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import URL, Connection, Engine

from connectors.arrow_types import arrow_type, instant_text
from connectors.base import (
    MARKER_TABLE,
    MarkerShape,
    SinceFilter,
    StagedMerge,
    TableSpec,
    driver_connection,
)
from connectors.columns import Column
from exchange.kernel.clock import SHANGHAI
from exchange.kernel.errors import DataError
from exchange.kernel.text import decode_marked

#: The table Alembic's batch mode copies the marker table into while re-keying it.
BATCH_COPY = f"_alembic_tmp_{MARKER_TABLE}"

# SQLite has no date, decimal or boolean storage class: dates, timestamps and decimals are kept
# as ISO / exact decimal text (text sorts and compares right; REAL would round decimals). A
# timestamptz is ISO text in UTC with its offset: '2026-11-30 16:30:00.000000+00:00'.
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

    # Text is read as its bytes (CAST AS BLOB) and decoded by Arrow, vectorised: SQLite keeps
    # whatever bytes an application wrote, and sqlite3's own decoding dies on the first value
    # that is not UTF-8 ("Could not decode to UTF-8 column ..."), a traceback naming no row.
    # Read as bytes, such a value is decoded with marks instead (exchange.kernel.text), and
    # validation's text rule quarantines its row with field and key: the rest of the run is
    # delivered, and the provider learns which row to fix. (A decoder on the connection,
    # sqlite3's text_factory, would cost a Python call per value: +75 % on the fetch.)
    def select_statement(self, spec: TableSpec, since: SinceFilter | None) -> sa.Select[Any]:
        stmt = super().select_statement(spec, since)
        text = {f.name for f in spec.fields if pa.types.is_string(arrow_type(f))}
        return stmt.with_only_columns(
            *(
                sa.cast(c, _Bytes()).label(c.name) if c.name in text else c
                for c in stmt.selected_columns
            )
        )

    def to_batch(self, rows: Sequence[Sequence[Any]], schema: pa.Schema) -> pa.RecordBatch:
        if not any(pa.types.is_string(f.type) for f in schema):
            return super().to_batch(rows, schema)
        as_read = pa.schema(
            [pa.field(f.name, pa.binary()) if pa.types.is_string(f.type) else f for f in schema]
        )
        raw = super().to_batch(rows, as_read)
        columns = [
            _decoded(raw.column(i)) if pa.types.is_string(f.type) else raw.column(i)
            for i, f in enumerate(schema)
        ]
        return pa.RecordBatch.from_arrays(columns, schema=schema)

    def arrow_batches(
        self, spec: TableSpec, since: SinceFilter | None, batch_size: int
    ) -> Iterator[pa.RecordBatch]:
        try:
            yield from super().arrow_batches(spec, since, batch_size)
        except sa.exc.OperationalError as exc:
            if "decode" not in str(exc.orig):
                raise
            raise self._undecodable(spec, since) from None

    def _undecodable(self, spec: TableSpec, since: SinceFilter | None) -> DataError:
        """A non-text field (a date, a decimal kept as text) whose bytes are not UTF-8: the
        error names the field and the row key, found by reading the values as bytes."""
        stmt = super().select_statement(spec, since)
        key = set(spec.primary_key)
        columns = [c if c.name in key else sa.cast(c, _Bytes()) for c in stmt.selected_columns]
        with self.connect() as conn:
            for row in conn.execute(stmt.with_only_columns(*columns)):
                for name, value in zip(spec.column_names, row, strict=True):
                    if name in key or not isinstance(value, bytes):
                        continue
                    try:
                        value.decode("utf-8")
                    except UnicodeDecodeError:
                        ident = ",".join(
                            f"{k}={v!r}"
                            for k, v in zip(spec.column_names, row, strict=True)
                            if k in key
                        )
                        return DataError(
                            f"node {self.node!r} table {spec.qualified}: field {name!r} "
                            f"row key {ident or '?'}: value {value[:40]!r} is not UTF-8 text"
                        )
        return DataError(f"node {self.node!r} table {spec.qualified}: a value is not UTF-8 text")

    def since_clause(self, column: sa.ColumnClause[Any], value: Any) -> sa.ColumnElement[bool]:
        # Timestamps may be stored as 'YYYY-MM-DD HH:MM:SS' or with fractions, a 'T' or an
        # offset: compare as instants, not as text, so a tie on the boundary is never missed.
        # Text without an offset is Asia/Shanghai wall-clock time (8 hours ahead of UTC, no
        # daylight saving since 1991), which julianday() would take for UTC.
        if hasattr(value, "hour"):
            aware = value if value.tzinfo is not None else value.replace(tzinfo=SHANGHAI)
            since = aware.astimezone(dt.UTC).replace(tzinfo=None).isoformat(sep=" ")
            zoned = sa.or_(column.op("GLOB")("*[+-][0-9][0-9]:[0-9][0-9]"), column.like("%Z"))
            # A modifier, not arithmetic: SQLite shifts in whole milliseconds, so ties stay ties.
            shift = sa.case((zoned, "+0 hours"), else_="-8 hours")
            return sa.func.julianday(column, shift) >= sa.func.julianday(
                sa.bindparam("since", since)
            )
        if hasattr(value, "isoformat"):
            return column >= sa.bindparam("since", value.isoformat())
        return column >= sa.bindparam("since", value)

    @contextmanager
    def marker_upgrade(self, schema: str | None) -> Iterator[Connection]:
        # pysqlite runs DDL outside any transaction it opened (a CREATE TABLE commits at once),
        # so the upgrade takes the transaction into its own hands: the driver in autocommit,
        # one BEGIN IMMEDIATE (the write lock, which also makes a second upgrader wait) and one
        # COMMIT. The whole re-key, the table copy included, then happens or does not.
        with self.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.exec_driver_sql("ROLLBACK")
                raise
            conn.exec_driver_sql("COMMIT")

    def rekey_marker_table(
        self, conn: Connection, schema: str | None, shape: MarkerShape, installation: str
    ) -> None:
        # SQLite alters no key in place: Alembic's batch mode recreates the table in the new
        # shape (the backfilled installation id NOT NULL, the two-column key) and copies it.
        # A copy table left by an earlier version's upgrade, cut short after it was created,
        # would make that fail for ever: it holds nothing the marker table lacks.
        from alembic.migration import MigrationContext  # only to alter a table
        from alembic.operations import Operations

        sa.Table(BATCH_COPY, sa.MetaData(), schema=schema).drop(conn, checkfirst=True)
        self.backfill_marker_table(conn, schema, shape, installation)
        ops = Operations(MigrationContext.configure(conn))
        shape_now = self._marker_table(sa.MetaData(), schema)
        with ops.batch_alter_table(
            MARKER_TABLE, schema=schema, recreate="always", copy_from=shape_now
        ):
            pass

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
    if pa.types.is_timestamp(t) and t.tz is not None:
        return instant_text(arr).to_pylist()
    if pa.types.is_temporal(t) or pa.types.is_decimal(t):
        return pc.cast(arr, pa.string()).to_pylist()
    if pa.types.is_boolean(t):
        return pc.cast(arr, pa.int8()).to_pylist()
    return arr.to_pylist()


class _Bytes(sa.types.UserDefinedType[bytes]):
    """``CAST(x AS BLOB)``, its values handed over as the driver's bytes (no processing)."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "BLOB"


def _decoded(raw: pa.Array) -> pa.Array:
    """Text read as bytes, as UTF-8 strings: Arrow's vectorised check, and only when some
    value is not UTF-8, each value of this column decoded with marks (``decode_marked``)."""
    try:
        return pc.cast(raw, pa.string())
    except pa.ArrowInvalid:
        values = raw.to_pylist()
        return pa.array([None if v is None else decode_marked(v) for v in values], pa.string())
