"""PostgreSQL front-end databases (psycopg 3): COPY into a temporary table, then ON CONFLICT."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql.psycopg import dialect as psycopg_dialect
from sqlalchemy.engine import Connection

from connectors.base import DatabaseConnector, SinceFilter, TableSpec, driver_connection
from connectors.secrets import redact
from connectors.text_rows import encode_text_rows
from exchange.catalog.model import Field
from exchange.errors import BadInput, ConnectionFailed

_SIMPLE: dict[str, sa.types.TypeEngine[Any]] = {
    "smallint": sa.SmallInteger(),
    "integer": sa.Integer(),
    "bigint": sa.BigInteger(),
    "double": postgresql.DOUBLE_PRECISION(),
    "text": sa.Text(),
    "date": sa.Date(),
    "timestamp": postgresql.TIMESTAMP(),
    "boolean": sa.Boolean(),
}
_COPY_LINE = re.compile(r"\bline (\d+)")


class PostgreSQLConnector(DatabaseConnector):
    dialect = "postgresql"

    def column_type(self, field: Field) -> sa.types.TypeEngine[Any]:
        if field.type == "decimal":
            return sa.Numeric(field.precision, field.scale or 0)
        if field.type == "varchar":
            return sa.String(field.length)
        if field.type == "char":
            return sa.CHAR(field.length)
        return _SIMPLE[field.type]

    def create_staging(self, conn: Connection, target: sa.Table) -> sa.Table:
        staging = self.staging_copy(
            target, f"stg_{target.name}"[:63], prefixes=["TEMPORARY"], postgresql_on_commit="DROP"
        )
        staging.create(conn)
        return staging

    def bulk_load(self, conn: Connection, staging: sa.Table, batch: pa.RecordBatch) -> None:
        copy_sql = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(staging.name),
            sql.SQL(", ").join(sql.Identifier(n) for n in batch.schema.names),
        )
        cursor = driver_connection(conn).cursor()
        with cursor.copy(copy_sql) as copy:
            copy.write(encode_text_rows(batch))

    def failing_row(self, exc: sa.exc.DBAPIError) -> int | None:
        context = getattr(getattr(exc.orig, "diag", None), "context", None) or ""
        m = _COPY_LINE.search(context)
        return int(m.group(1)) - 1 if m else None

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
        # faster than fetching rows through psycopg (bench/README figures).
        import adbc_driver_postgresql.dbapi as adbc

        compiled = self.select_statement(spec, since).compile(
            dialect=psycopg_dialect(paramstyle="numeric_dollar")
        )
        params = tuple(compiled.params[k] for k in compiled.positiontup or ())
        uri = self.url.set(drivername="postgresql").render_as_string(hide_password=False)
        try:
            conn = adbc.connect(uri)
        except adbc.Error as exc:
            raise ConnectionFailed(self._connect_message(exc)) from None
        with conn, conn.cursor() as cur:
            try:
                cur.execute(str(compiled), parameters=params or None)
                reader = cur.fetch_record_batch()
            except adbc.Error as exc:
                detail = redact(str(exc).strip().splitlines()[0], self.url.password)
                raise BadInput(f"node {self.node!r} table {spec.qualified}: {detail}") from None
            for batch in reader:
                for start in range(0, batch.num_rows, batch_size):
                    yield batch.slice(start, batch_size)
