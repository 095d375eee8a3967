"""PostgreSQL front-end databases: Arrow in and out through ADBC (binary COPY in C++);
psycopg 3 (through SQLAlchemy) for DDL and inspection. ``merge`` (the protocol in
``connectors.base``) runs on one ADBC connection: ``AdbcMerge``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql.psycopg import dialect as psycopg_dialect

from connectors.base import (
    DatabaseConnector,
    MergeTransaction,
    SinceFilter,
    TableSpec,
    marker_lock_name,
)
from connectors.prefetch import prefetch
from connectors.secrets import redact
from exchange.kernel.clock import TIMEZONE
from exchange.kernel.errors import BadInput, ConnectionFailed, DataError

_ZONE = f"-c TimeZone={TIMEZONE}"

_SIMPLE: dict[str, sa.types.TypeEngine[Any]] = {
    "smallint": sa.SmallInteger(),
    "integer": sa.Integer(),
    "bigint": sa.BigInteger(),
    "double": postgresql.DOUBLE_PRECISION(),
    "text": sa.Text(),
    "date": sa.Date(),
    "timestamp": postgresql.TIMESTAMP(),
    "timestamptz": postgresql.TIMESTAMP(timezone=True),
    "boolean": sa.Boolean(),
}


class PostgreSQLConnector(DatabaseConnector):
    dialect = "postgresql"

    SIMPLE_TYPES = _SIMPLE

    def upsert(self, target: sa.Table, staging: sa.Table) -> sa.Executable:
        pk = [c.name for c in target.primary_key.columns]
        ins = postgresql.insert(target).from_select(
            [c.name for c in staging.columns], sa.select(*staging.c)
        )
        update = {c.name: ins.excluded[c.name] for c in target.columns if c.name not in pk}
        if not update:
            return ins.on_conflict_do_nothing(index_elements=pk)
        return ins.on_conflict_do_update(index_elements=pk, set_=update)

    def arrow_batches(
        self, spec: TableSpec, since: SinceFilter | None, batch_size: int
    ) -> Iterator[pa.RecordBatch]:
        # ADBC's PostgreSQL driver reads the result in binary straight into Arrow: about 4x
        # faster than fetching rows through psycopg (docs/performance.md figures).
        import adbc_driver_postgresql.dbapi as adbc

        sql_text, params = self._sql(self.select_statement(spec, since))
        conn = self._adbc()
        with conn, conn.cursor() as cur:
            try:
                cur.execute(sql_text, parameters=params or None)
                reader = cur.fetch_record_batch()
            except adbc.Error as exc:
                lacks = self.source_lacks(spec)
                if lacks is not None:  # a column or the table is missing: say which
                    raise DataError(lacks) from None
                detail = redact(str(exc).strip().splitlines()[0], self.url.password)
                raise BadInput(f"node {self.node!r} table {spec.qualified}: {detail}") from None
            for batch in reader:
                for start in range(0, batch.num_rows, batch_size):
                    yield batch.slice(start, batch_size)

    @contextmanager
    def marker_upgrade(self, schema: str | None) -> Iterator[sa.Connection]:
        # PostgreSQL's DDL is transactional: the whole re-key is one transaction, and an
        # advisory lock for it makes a second upgrader (a parallel load) wait, then see it done.
        name = marker_lock_name(self.url.database, schema)
        with self.connect(begin=True) as conn:
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(name))))
            yield conn

    def staging_table(self, target: sa.Table) -> sa.Table:
        """The temporary table that ADBC's ingest creates (mode "create", temporary)."""
        return self.staging_copy(target, f"stg_{target.name}"[:63], keyed=False)

    def _adbc(self) -> Any:
        import adbc_driver_postgresql.dbapi as adbc

        # The session's zone is Asia/Shanghai: a cursor bound with a zone compared with a column
        # without one (or the other way round) meets it as Shanghai wall-clock time.
        given = self.url.query.get("options")
        options = " ".join(filter(None, [given if isinstance(given, str) else None, _ZONE]))
        url = self.url.set(drivername="postgresql").difference_update_query(["options"])
        uri = url.render_as_string(hide_password=False)
        uri += ("&" if "?" in uri else "?") + "options=" + quote(options)  # libpq: %20, not +
        try:
            return adbc.connect(uri)
        except adbc.Error as exc:
            raise ConnectionFailed(self._connect_message(exc)) from None

    @contextmanager
    def merge_transaction(self, spec: TableSpec) -> Iterator[MergeTransaction]:
        """One ADBC connection and transaction; any driver error names node and table."""
        import adbc_driver_postgresql.dbapi as adbc

        conn = self._adbc()
        with conn, conn.cursor() as cur:
            try:
                yield AdbcMerge(self, spec, conn, cur)
            except adbc.Error as exc:
                detail = redact(str(exc).strip().splitlines()[0], self.url.password)
                raise DataError(f"node {self.node!r} table {spec.qualified}: {detail}") from None

    def _sql(self, stmt: Any) -> tuple[str, tuple[Any, ...]]:
        """A statement as PostgreSQL text with $n parameters, for the ADBC driver."""
        compiled = stmt.compile(
            dialect=psycopg_dialect(paramstyle="numeric_dollar"),
            compile_kwargs={"render_postcompile": True},  # literal_execute: SQLAlchemy quotes
        )
        return str(compiled), tuple(compiled.params[k] for k in compiled.positiontup or ())


class AdbcMerge(MergeTransaction):
    """A merge on one ADBC connection: binary COPY of the Arrow batches (``adbc_ingest``),
    appended into the target when it is empty, else into a temporary table that the ingest
    itself creates; then ON CONFLICT, the snapshot delete and the marker as $n statements.
    ADBC writes Arrow as binary COPY in C++: no per-row Python, no text encoding. The batches
    are read ahead in the prefetch thread while the ingest streams the previous one."""

    def __init__(self, connector: PostgreSQLConnector, spec: TableSpec, conn: Any, cur: Any):
        self.connector, self.spec, self.conn, self.cur = connector, spec, conn, cur
        self.staging: sa.Table | None = None  # created by the first ingest into it

    def is_empty(self, table: sa.Table) -> bool:
        self.execute(sa.select(sa.literal_column("1")).select_from(table).limit(1))
        return self.cur.fetchone() is None

    def create_staging(self, target: sa.Table) -> sa.Table:
        self.staging = self.connector.staging_table(target)
        return self.staging

    def load(
        self,
        into: sa.Table,
        batches: Iterable[pa.RecordBatch],
        on_rows: Callable[[int], None] | None,
    ) -> int:
        loaded = 0

        def counted() -> Iterator[pa.RecordBatch]:
            nonlocal loaded
            for batch in prefetch(batches):
                loaded += batch.num_rows
                if on_rows:
                    on_rows(batch.num_rows)
                yield batch

        declared = self.spec.arrow_schema()
        schema = pa.schema([declared.field(c.name) for c in into.columns])  # (kept keys: fewer)
        if into is self.staging:
            reader = pa.RecordBatchReader.from_batches(schema, counted())
            self.cur.adbc_ingest(into.name, reader, mode="create", temporary=True)
        else:
            # Binary COPY needs each value in the column's own width: an existing target that
            # is wider than declared (bigint for integer, timestamp for date) gets it so.
            wide = self._widened(into, schema)
            batches_out = counted() if wide == schema else (_cast(b, wide) for b in counted())
            reader = pa.RecordBatchReader.from_batches(wide, batches_out)
            self.cur.adbc_ingest(into.name, reader, mode="append", db_schema_name=into.schema)
        return loaded

    def _widened(self, into: sa.Table, schema: pa.Schema) -> pa.Schema:
        """``schema`` with each column that the target keeps in a wider binary type (an
        accepted wider target: ``connectors.schema_check``) in that type."""
        import adbc_driver_postgresql.dbapi as adbc

        try:
            theirs = self.conn.adbc_get_table_schema(into.name, db_schema_filter=into.schema)
        except adbc.Error:
            return schema
        types = {f.name.lower(): f.type for f in theirs}
        fields = []
        for f in schema:
            t = types.get(f.name.lower())
            fields.append(pa.field(f.name, t) if t is not None and _widens(f.type, t) else f)
        return pa.schema(fields)

    def execute(self, statement: sa.Executable) -> int:
        sql_text, params = self.connector._sql(statement)
        self.cur.execute(sql_text, parameters=params or None)
        return int(self.cur.rowcount)

    def commit(self) -> None:
        self.conn.commit()


def _widens(ours: pa.DataType, theirs: pa.DataType) -> bool:
    """A lossless widening that binary COPY does not do by itself."""
    if pa.types.is_integer(ours):
        if pa.types.is_integer(theirs):
            return bool(theirs.bit_width > ours.bit_width)
        return pa.types.is_floating(theirs)
    if pa.types.is_date(ours):
        return pa.types.is_timestamp(theirs) and theirs.tz is None
    if pa.types.is_float32(ours):
        return pa.types.is_float64(theirs)
    return False


def _cast(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [c.cast(f.type) for c, f in zip(batch.columns, schema, strict=True)], schema=schema
    )
