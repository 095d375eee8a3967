"""The raw copy floor: what the database tools alone take to move the same rows.

PG→PG: ``psql COPY (…) TO STDOUT | psql COPY … FROM STDIN``. PG→MariaDB: the same export to a
file, then ``LOAD DATA LOCAL INFILE`` with the ``mariadb`` client. For the incremental case
the changed rows only, loaded into a temporary table and upserted the same raw way.
"""

from __future__ import annotations

import shlex
import subprocess
import tempfile
import time
from pathlib import Path

from bench.registry_pg import FIELDS

COLUMNS = [f.name for f in FIELDS]
# MariaDB has no boolean: the export writes is_active as 0/1 for it.
MARIA_SELECT = ", ".join("is_active::int" if c == "is_active" else c for c in COLUMNS)
PSQL = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres"]
MARIADB = ["mariadb", "--local-infile=1", "-h", "127.0.0.1", "-u", "root"]


def _sh(cmd: str) -> float:
    started = time.perf_counter()
    subprocess.run(["bash", "-o", "pipefail", "-c", cmd], check=True)
    return time.perf_counter() - started


def _q(args: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in args)


def _where(since: str | None) -> str:
    return f" WHERE updated_at >= '{since}'" if since else ""


def pg_to_pg(source_db: str, target_db: str, since: str | None = None) -> float:
    """Seconds to pipe the (changed) rows of ``source_db`` into ``target_db``'s enterprise
    table (two whole psql processes, their start-up included, as for the engine)."""
    export = f"COPY (SELECT * FROM enterprise{_where(since)}) TO STDOUT"
    src = _q([*PSQL, "-d", source_db, "-c", export])
    if since is None:
        dst = _q([*PSQL, "-d", target_db, "-c", "COPY enterprise FROM STDIN"])
    else:
        sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS[1:])
        upsert = f"INSERT INTO enterprise SELECT * FROM s ON CONFLICT (id) DO UPDATE SET {sets}"
        dst = _q([*PSQL, "-d", target_db, "-c", "BEGIN",
                  "-c", "CREATE TEMP TABLE s (LIKE enterprise) ON COMMIT DROP",
                  "-c", "COPY s FROM STDIN", "-c", upsert, "-c", "COMMIT"])  # fmt: skip
    return _sh(f"{src} | {dst}")


def pg_to_maria(source_db: str, target_db: str, since: str | None = None) -> float:
    """Seconds to export the (changed) rows of ``source_db`` to a file and LOAD DATA them into
    MariaDB's ``target_db``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rows.tsv"
        export = f"COPY (SELECT {MARIA_SELECT} FROM enterprise{_where(since)}) TO STDOUT"
        load = f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE {{t}} CHARACTER SET utf8mb4"
        if since is None:
            sql = load.format(t="enterprise")
        else:
            sets = ", ".join(f"{c} = VALUES({c})" for c in COLUMNS[1:])
            sql = (
                "CREATE TEMPORARY TABLE s LIKE enterprise; " + load.format(t="s") + "; "
                f"INSERT INTO enterprise SELECT * FROM s ON DUPLICATE KEY UPDATE {sets}"
            )
        return _sh(
            f"{_q([*PSQL, '-d', source_db, '-c', export])} > {path} && "
            f"{_q([*MARIADB, target_db, '-e', sql])}"
        )
