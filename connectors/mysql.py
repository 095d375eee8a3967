"""MySQL / MariaDB front-end databases (PyMySQL): LOAD DATA LOCAL INFILE into a temporary table,
then INSERT … SELECT … ON DUPLICATE KEY UPDATE; snapshot deletes by a multi-table
DELETE … LEFT JOIN. Never a correlated ``DELETE … WHERE EXISTS``: MariaDB runs that as a
dependent subquery, once per target row."""

from __future__ import annotations

import datetime as dt
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pymysql.converters
import sqlalchemy as sa
from pymysql.constants import FIELD_TYPE
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import URL, Connection, Engine

from connectors.arrow_types import INSTANT, WALL_CLOCK
from connectors.base import (
    MARKER_KEY,
    MARKER_PK,
    MARKER_TABLE,
    POOL,
    MarkerShape,
    StagedMerge,
    driver_connection,
    marker_lock_name,
)
from connectors.text_rows import encode_text_buffer
from exchange.kernel.errors import Retriable

_SIMPLE: dict[str, sa.types.TypeEngine[Any]] = {
    "smallint": sa.SmallInteger(),
    "integer": sa.Integer(),
    "bigint": sa.BigInteger(),
    "double": mysql.DOUBLE(),
    "text": mysql.LONGTEXT(),
    "date": sa.Date(),
    "timestamp": mysql.DATETIME(fsp=6),
    "timestamptz": mysql.DATETIME(fsp=6),  # an instant, kept as UTC (docs/runs.md, Dialects)
    "boolean": mysql.TINYINT(1),
}
#: Seconds an upgrade of a marker table waits for another process's upgrade of it.
MARKER_LOCK_WAIT = 60
_AT_ROW = re.compile(r"\bat row (\d+)")

# The session's zone is Asia/Shanghai's offset (no daylight saving since 1991; a named zone
# needs the server's time-zone tables): a TIMESTAMP column (an instant) is read as Shanghai
# wall-clock time, tagged with that offset, so that conforming knows it has a zone.
SESSION_ZONE = dt.timezone(dt.timedelta(hours=8))


def _zoned_timestamp(value: Any) -> Any:
    parsed = pymysql.converters.convert_datetime(value)
    return parsed.replace(tzinfo=SESSION_ZONE) if isinstance(parsed, dt.datetime) else parsed


_CONVERSIONS = {**pymysql.converters.conversions, FIELD_TYPE.TIMESTAMP: _zoned_timestamp}


class MySQLConnector(StagedMerge):
    dialect = "mysql"

    def _create_engine(self, url: URL) -> Engine:
        # utf8mb4 so that every Chinese character (and the rare ones outside the BMP) survives;
        # strict mode so that a value that does not fit is an error, not a silent truncation.
        url = url.update_query_dict({"charset": "utf8mb4", "local_infile": "1"})
        return sa.create_engine(
            url,
            **POOL,
            connect_args={
                "init_command": "SET SESSION sql_mode='STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION',"
                " time_zone='+08:00'",
                "conv": _CONVERSIONS,
            },
        )

    SIMPLE_TYPES = _SIMPLE
    naive_zone = "UTC"  # a DATETIME(6) declared timestamptz holds UTC (docs/runs.md, Dialects)

    def since_clause(self, column: sa.ColumnClause[Any], value: Any) -> sa.ColumnElement[bool]:
        # An instant is bound as naive UTC, as DATETIME(6) keeps it; against a TIMESTAMP
        # column the session reads that as +08:00, 8 hours earlier: more rows, never fewer.
        if isinstance(value, dt.datetime) and value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return super().since_clause(column, value)

    def table_options(self) -> dict[str, Any]:
        return {
            "mysql_engine": "InnoDB",
            "mysql_charset": "utf8mb4",
            "mysql_collate": "utf8mb4_bin",
        }

    @contextmanager
    def marker_upgrade(self, schema: str | None) -> Iterator[Connection]:
        # MariaDB commits each DDL statement, so the upgrade cannot be one transaction; a
        # named lock (the session's, so it outlives those commits) makes a second upgrader (a
        # parallel load) wait, then see the table done. Each step is finished by the next call.
        name = marker_lock_name(self.url.database, schema)
        with self.connect() as conn:
            got = conn.execute(
                sa.select(sa.func.get_lock(name, sa.bindparam("wait", MARKER_LOCK_WAIT)))
            ).scalar()
            if got != 1:
                raise Retriable(
                    f"node {self.node!r}: the delivery marker table is being upgraded by "
                    f"another process (waited {MARKER_LOCK_WAIT} s for its lock); try again"
                )
            try:
                yield conn
                conn.commit()
            finally:
                conn.execute(sa.select(sa.func.release_lock(name)))

    def rekey_marker_table(
        self, conn: Connection, schema: str | None, shape: MarkerShape, installation: str
    ) -> None:
        self.backfill_marker_table(conn, schema, shape, installation)
        conn.commit()
        # One ALTER for the NOT NULL and the key: two statements would commit between them
        # and leave the table with no key at all if cut short. Identifiers are the dialect's
        # quoting of constants and the catalog's (validated) schema; nothing here is a value.
        prep = conn.dialect.identifier_preparer
        table = prep.format_table(sa.table(MARKER_TABLE, schema=schema))
        column = sa.String(64).compile(dialect=conn.dialect)
        changes = [f"MODIFY {prep.quote('installation_id')} {column} NOT NULL"]
        if shape.key:
            changes.append("DROP PRIMARY KEY")
        key = ", ".join(prep.quote(c) for c in MARKER_KEY)
        changes.append(f"ADD CONSTRAINT {prep.quote(MARKER_PK)} PRIMARY KEY ({key})")
        conn.execute(sa.text(f"ALTER TABLE {table} {', '.join(changes)}"))

    def create_staging(self, conn: Connection, target: sa.Table) -> sa.Table:
        staging = self.staging_copy(
            target, f"stg_{target.name}"[:63], prefixes=["TEMPORARY"], **self.table_options()
        )
        staging.create(conn)
        return staging

    def encode(self, batch: pa.RecordBatch) -> pa.Buffer:
        return encode_text_buffer(_instants_as_utc(batch))

    def bulk_load(
        self, conn: Connection, table: sa.Table, batch: pa.RecordBatch, payload: Any
    ) -> None:
        prep = conn.dialect.identifier_preparer
        columns = ", ".join(prep.quote(n) for n in batch.schema.names)
        fd, path = tempfile.mkstemp(prefix="exchange-load-", suffix=".tsv")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(payload)
            cursor = driver_connection(conn).cursor()
            # Identifiers are validated and quoted by the dialect; the file name is a parameter.
            cursor.execute(
                f"LOAD DATA LOCAL INFILE %s INTO TABLE {prep.format_table(table)} "
                f"CHARACTER SET utf8mb4 ({columns})",
                (path,),
            )
            if cursor.warning_count or cursor.rowcount != batch.num_rows:
                raise _load_refused(cursor, batch.num_rows)
        finally:
            os.unlink(path)

    def failing_row(self, exc: sa.exc.DBAPIError) -> int | None:
        m = _AT_ROW.search(str(exc.orig))
        return int(m.group(1)) - 1 if m else None

    def upsert(self, target: sa.Table, staging: sa.Table) -> sa.Executable:
        pk = {c.name for c in target.primary_key.columns}
        ins = mysql.insert(target).from_select(
            [c.name for c in staging.columns], sa.select(*staging.c)
        )
        update = {c.name: ins.inserted[c.name] for c in target.columns if c.name not in pk}
        if not update:  # only key columns granted: nothing to update, keep the row
            update = {c.name: target.c[c.name] for c in target.primary_key.columns}
        return ins.on_duplicate_key_update(update)

    def delete_missing(
        self, target: sa.Table, staging: sa.Table, kept: sa.Table | None = None
    ) -> sa.Executable:
        prep = self.engine.dialect.identifier_preparer
        t, s = prep.format_table(target), prep.quote(staging.name)
        pk = [prep.quote(c.name) for c in target.primary_key.columns]
        on = " AND ".join(f"s.{c} = t.{c}" for c in pk)
        join, where = f"LEFT JOIN {s} AS s ON {on}", f"s.{pk[0]} IS NULL"
        if kept is not None:  # keys the source still has but this run does not deliver
            k_on = " AND ".join(f"k.{c} = t.{c}" for c in pk)
            join += f" LEFT JOIN {prep.quote(kept.name)} AS k ON {k_on}"
            where += f" AND k.{pk[0]} IS NULL"
        # Validated identifiers quoted by the dialect; no values.
        return sa.text(f"DELETE t FROM {t} AS t {join} WHERE {where}")  # noqa: S608


def _load_refused(cursor: Any, sent: int) -> pymysql.err.DataError:
    """LOAD DATA LOCAL cannot stop the client's file midway, so the server treats every
    refused row as IGNORE would: a CHECK constraint that fails, a value it changes, a
    duplicate key skip the row or alter it with a mere warning, and the statement succeeds.
    Any warning, or fewer rows than were sent, fails the load instead (the transaction then
    leaves the target as it was), with the server's first warnings as the reason."""
    loaded = cursor.rowcount
    cursor.execute("SHOW WARNINGS LIMIT 3")
    reasons = "; ".join(str(row[2]) for row in cursor.fetchall())
    return pymysql.err.DataError(
        1265, f"LOAD DATA stored {loaded} of {sent} rows with warnings: {reasons or 'none given'}"
    )


def _instants_as_utc(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Instants as naive UTC (the same microseconds), as a DATETIME(6) timestamptz holds them."""
    if not any(pa.types.is_timestamp(t) and t.tz is not None for t in batch.schema.types):
        return batch
    columns = [
        pc.cast(pc.cast(c, INSTANT), WALL_CLOCK)
        if pa.types.is_timestamp(c.type) and c.type.tz is not None
        else c
        for c in batch.columns
    ]
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)
