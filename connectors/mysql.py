"""MySQL / MariaDB front-end databases (PyMySQL): LOAD DATA LOCAL INFILE into a temporary table,
then INSERT … SELECT … ON DUPLICATE KEY UPDATE; snapshot deletes by a multi-table
DELETE … LEFT JOIN. Never a correlated ``DELETE … WHERE EXISTS``: MariaDB runs that as a
dependent subquery, once per target row."""

from __future__ import annotations

import os
import re
import tempfile
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import URL, Connection, Engine

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
    "boolean": mysql.TINYINT(1),
}
_AT_ROW = re.compile(r"\bat row (\d+)")


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
                "init_command": "SET SESSION sql_mode='STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'"
            },
        )

    SIMPLE_TYPES = _SIMPLE

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
        return encode_text_buffer(batch)

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

    def delete_missing(self, target: sa.Table, staging: sa.Table) -> sa.Executable:
        prep = self.engine.dialect.identifier_preparer
        t, s = prep.format_table(target), prep.quote(staging.name)
        pk = [prep.quote(c.name) for c in target.primary_key.columns]
        on = " AND ".join(f"s.{c} = t.{c}" for c in pk)
        return sa.text(f"DELETE t FROM {t} AS t LEFT JOIN {s} AS s ON {on} WHERE s.{pk[0]} IS NULL")
