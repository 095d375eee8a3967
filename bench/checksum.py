"""Row count and an order-independent checksum over every column, computed in the database.

Each dialect renders every value as the same text (timestamps with microseconds, booleans as
0/1, NULL as \\N), so a PostgreSQL source and a MariaDB target of the same rows agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
import pymysql

from bench.registry_pg import FIELDS


def _pg_text(name: str, ftype: str) -> str:
    if ftype == "timestamp":
        return f"to_char({name}, 'YYYY-MM-DD HH24:MI:SS.US')"
    if ftype == "boolean":
        return f"({name})::int::text"
    return f"({name})::text"


def _maria_text(name: str, ftype: str) -> str:
    if ftype == "timestamp":
        return f"DATE_FORMAT({name}, '%Y-%m-%d %H:%i:%s.%f')"
    return f"CAST({name} AS CHAR)"


def _types(fields: Sequence[str]) -> list[tuple[str, str]]:
    by_name = {f.name: f.type for f in FIELDS}
    return [(f, by_name[f]) for f in fields]


def pg_checksum(dsn: str, table: str, fields: Sequence[str]) -> tuple[int, int]:
    row = " || '|' || ".join(f"coalesce({_pg_text(n, t)}, '\\N')" for n, t in _types(fields))
    sql = (
        f"SELECT count(*), coalesce(sum(('x' || substr(md5({row}), 1, 15))::bit(60)::bigint), 0)"
        f" FROM {table}"  # bench-owned names
    )
    with psycopg.connect(dsn) as conn:
        count, total = conn.execute(sql).fetchone()  # type: ignore[misc]
    return int(count), int(total)


def maria_checksum(database: str, table: str, fields: Sequence[str]) -> tuple[int, int]:
    row = ", ".join(f"coalesce({_maria_text(n, t)}, '\\\\N')" for n, t in _types(fields))
    sql = (
        "SELECT count(*), coalesce(sum(CAST(conv(substr(md5(concat_ws('|', "
        f"{row})), 1, 15), 16, 10) AS UNSIGNED)), 0)"
        f" FROM {table}"
    )
    with pymysql.connect(host="127.0.0.1", user="root", database=database, charset="utf8mb4") as c:
        with c.cursor() as cur:
            cur.execute(sql)
            count, total = cur.fetchone()  # type: ignore[misc]
    return int(count), int(total)
