"""MySQL / MariaDB front-end databases (PyMySQL): LOAD DATA LOCAL INFILE into a temporary table,
then INSERT … SELECT … ON DUPLICATE KEY UPDATE; snapshot deletes by a multi-table
DELETE … LEFT JOIN. Never a correlated ``DELETE … WHERE EXISTS``: MariaDB runs that as a
dependent subquery, once per target row."""

from __future__ import annotations

import datetime as dt
import os
import re
import tempfile
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pymysql.converters
import sqlalchemy as sa
from pymysql.constants import FIELD_TYPE
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import URL, Connection, Engine

from connectors.arrow_types import INSTANT, WALL_CLOCK
from connectors.base import POOL, StagedMerge, driver_connection
from connectors.text_rows import encode_text_buffer

_SIMPLE: dict[str, sa.types.TypeEngine[Any]] = {
    "smallint": sa.SmallInteger(),
    "integer": sa.Integer(),
    "bigint": sa.BigInteger(),
    "double": mysql.DOUBLE(),
    "text": mysql.LONGTEXT(),
    "date": sa.Date(),
    "timestamp": mysql.DATETIME(fsp=6),
    "timestamptz": mysql.DATETIME(fsp=6),  # an instant, kept as UTC (README, Dialects)
    "boolean": mysql.TINYINT(1),
}
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
    naive_zone = "UTC"  # a DATETIME(6) declared timestamptz holds UTC (README, Dialects)

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
