"""The exchange benchmark against the raw copy floor (issue 4).

    python -m bench.run [--rows 1000000] [--repeat 3] [--cases A,B,C]

A  full exchange PG→PG and PG→MariaDB (quality rules on), against psql COPY | psql COPY and
   psql COPY > file + LOAD DATA LOCAL INFILE;
B  incremental after updating 1 % of the rows and inserting 0.1 % new ids, against the changed
   rows copied into a temporary table and upserted the same raw way;
C  fan-out to 5 subscribers (3 PostgreSQL, 2 MariaDB) with different grants, against A PG→PG.
Every target is checked (row count and a checksum over every column) against the source.
Prints seconds (median of --repeat), rows/s, peak RSS and the ratio to the floor.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import psycopg
import pymysql
import yaml

from bench import floor
from bench.checksum import maria_checksum, pg_checksum
from bench.registry_pg import (
    ADMIN,
    DDL,
    FIELDS,
    MARIADB_DDL,
    SOURCE_DB,
    copy_text,
    dsn,
    ensure_source,
    url,
)
from exchange.demo.registry import enterprise_row, enterprise_rows

OURS = "exchange_bench_tgt"
FLOOR = "exchange_bench_floor"
ALL = [f.name for f in FIELDS]
# C: five subscribers, each granted a different field set (the key always included).
FANOUT = {
    "c_pg_all": ("pg", ALL),
    "c_pg_id": ("pg", ["id", "uscc", "name", "legal_person", "id_card", "updated_at"]),
    "c_pg_money": ("pg", ["id", "name", "reg_capital", "established", "status", "is_active"]),
    "c_my_addr": ("maria", ["id", "name", "address", "phone", "region_code", "industry"]),
    "c_my_scope": ("maria", ["id", "uscc", "scope", "remark", "updated_at"]),
}


def recreate_pg(db: str) -> None:
    with psycopg.connect(ADMIN, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        c.execute(f'CREATE DATABASE "{db}"')


def recreate_maria(db: str) -> None:
    with pymysql.connect(host="127.0.0.1", user="root", autocommit=True) as c, c.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{db}`")
        cur.execute(f"CREATE DATABASE `{db}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")


def floor_tables() -> None:
    recreate_pg(FLOOR)
    with psycopg.connect(dsn(FLOOR), autocommit=True) as c:
        c.execute(DDL)
    recreate_maria(FLOOR)
    with pymysql.connect(host="127.0.0.1", user="root", database=FLOOR) as c, c.cursor() as cur:
        cur.execute(MARIADB_DDL)


def catalog(home: Path) -> Path:
    """The demo's resource (fields and their quality rules), provided by the bench database."""
    demo = yaml.safe_load(
        resources.files("schemas").joinpath("examples/demo.yaml").read_text(encoding="utf-8")
    )
    base = next(r for r in demo["resources"] if r["code"] == "410400-SCJG-0001")
    nodes = [
        {"name": "src", "kind": "postgresql", "connection": {"env": "BENCH_SRC"}},
        {"name": "pg", "kind": "postgresql", "connection": {"env": "BENCH_PG"}},
        {"name": "maria", "kind": "mysql", "connection": {"env": "BENCH_MARIA"}},
    ]
    res = []
    for code in ("A_PG", "A_MARIA", "C_FANOUT"):
        r = dict(base, code=code, provider="src", source={"table": "enterprise"})
        res.append(r)
    path = home / "catalog.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "nodes": nodes, "resources": res},
                                   allow_unicode=True), encoding="utf-8")  # fmt: skip
    return path


@dataclass
class Case:
    name: str
    rows: int
    seconds: list[float] = field(default_factory=list)
    floor: list[float] = field(default_factory=list)
    peak_mb: float = 0.0
    checks: list[str] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def floor_median(self) -> float:
        return statistics.median(self.floor) if self.floor else float("nan")


class Bench:
    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.home = Path(tempfile.mkdtemp(prefix="exchange-bench-"))
        self.catalog = catalog(self.home)
        self.env = {
            **os.environ,
            "BENCH_SRC": url(SOURCE_DB),
            "BENCH_PG": url(OURS),
            "BENCH_MARIA": f"mysql://root@127.0.0.1:3306/{OURS}",
        }

    def exchange(self, *args: str) -> dict[str, object]:
        out = subprocess.run(
            [sys.executable, "-m", *args], env=self.env, capture_output=True, text=True
        )
        if out.returncode != 0:
            raise SystemExit(f"{args} failed:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]

    def subscribe(self, code: str, node: str, fields: list[str], table: str) -> None:
        until = (dt.date.today() + dt.timedelta(days=300)).isoformat()
        out = subprocess.run(
            [sys.executable, "-m", "exchange", "subscription", "add", code, "--node", node,
             "--fields", ",".join(fields), "--until", until, "--table", table,
             "--catalog", str(self.catalog)],
            env={**self.env, "EXCHANGE_HOME": str(self.home)}, capture_output=True, text=True,
        )  # fmt: skip
        if out.returncode != 0:
            raise SystemExit(f"subscription to {code} for {node} failed:\n{out.stderr}")

    def run(self, code: str) -> dict[str, object]:
        result = self.exchange("bench.one_run", str(self.home), str(self.catalog), code)
        if result["status"] != "succeeded":
            raise SystemExit(f"run of {code} failed: {result}")
        return result

    def measure(self, case: Case, code: str) -> None:
        """One run of ``code`` in a fresh process, added to ``case``."""
        r = self.run(code)
        case.seconds.append(float(r["seconds"]))  # type: ignore[arg-type]
        case.peak_mb = max(case.peak_mb, float(r["peak_mb"]))  # type: ignore[arg-type]
        floor_s = f" (floor {case.floor[-1]:.2f} s)" if case.floor else ""
        print(f"{case.name} run {len(case.seconds)}: {case.seconds[-1]:.2f} s{floor_s}", flush=True)

    def fresh(self) -> None:
        """New targets and a new metadata store: the next runs are first deliveries."""
        recreate_pg(OURS)
        recreate_maria(OURS)
        for p in self.home.glob("exchange.db*"):
            p.unlink()
        subprocess.run(["rm", "-rf", str(self.home / "runs")], check=True)
        self.subscribe("A_PG", "pg", ALL, "enterprise")
        self.subscribe("A_MARIA", "maria", ALL, "enterprise")
        for table, (node, fields) in FANOUT.items():
            self.subscribe("C_FANOUT", node, fields, table)


def verify(case: Case, tables: list[tuple[str, str, list[str]]]) -> None:
    for where, table, fields in tables:
        want = pg_checksum(dsn(SOURCE_DB), "enterprise", fields)
        db = where.split(":", 1)[1]
        got = (
            pg_checksum(dsn(db), table, fields)
            if where.startswith("pg")
            else maria_checksum(db, table, fields)
        )
        ok = "ok" if got == want else f"MISMATCH {got} != {want}"
        case.checks.append(f"{where}.{table}: {got[0]:,} rows {ok}")
        if got != want:
            raise SystemExit(f"{case.name}: {where}.{table} differs from the source: {got} {want}")


def max_updated_at() -> str:
    with psycopg.connect(dsn(SOURCE_DB)) as c:
        return str(c.execute("SELECT max(updated_at) FROM enterprise").fetchone()[0])  # type: ignore[index]


def change_source(rows: int, k: int) -> int:
    """Update 1 % of the rows (a different 1 % each k) and insert 0.1 % new ids."""
    stamp = dt.datetime(2026, 11, 24, 12, 0, 0) + dt.timedelta(minutes=k)
    new_from = 10 * rows + k * rows // 1000 + 1
    new = [r[:7] + (stamp,) + r[8:] for r in enterprise_rows(new_from, new_from + rows // 1000)]
    with psycopg.connect(dsn(SOURCE_DB)) as c:
        c.execute(
            "UPDATE enterprise SET updated_at = %s, status = status %% 4 + 1 WHERE id %% 100 = %s",
            (stamp, k),
        )
        with c.cursor().copy("COPY enterprise FROM STDIN") as copy:
            copy.write(copy_text(new))
    return rows // 100 + rows // 1000


def restore_source(rows: int, repeat: int) -> None:
    """Undo every change of case B, so that each run of the script starts from the same data."""
    changed = [i for i in range(1, rows + 1) if 1 <= i % 100 <= repeat]
    with psycopg.connect(dsn(SOURCE_DB)) as c:
        c.execute("DELETE FROM enterprise WHERE id > %s OR (id %% 100 BETWEEN 1 AND %s)",
                  (rows, repeat))  # fmt: skip
        with c.cursor().copy("COPY enterprise FROM STDIN") as copy:
            for start in range(0, len(changed), 50_000):
                chunk = [enterprise_row(i) for i in changed[start : start + 50_000]]
                copy.write(copy_text(chunk))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cases", default="A,B,C")
    args = ap.parse_args()
    n, cases = args.rows, set(args.cases.split(","))
    print(f"building the source ({n:,} rows) ...", flush=True)
    built = ensure_source(n)
    print(f"source ready ({built:.1f} s)", flush=True)
    bench = Bench(n)
    results: list[Case] = []
    a_pg = Case("A full PG→PG", n)
    a_my = Case("A full PG→MariaDB", n)
    c_fan = Case("C fan-out 5 subscribers", n)
    b_pg = Case("B incremental PG→PG", 0)
    b_my = Case("B incremental PG→MariaDB", 0)
    try:
        for _ in range(args.repeat):
            bench.fresh()
            if "A" in cases or "B" in cases:
                floor_tables()
                a_pg.floor.append(floor.pg_to_pg(FLOOR))
                a_my.floor.append(floor.pg_to_maria(FLOOR))
                bench.measure(a_pg, "A_PG")
                bench.measure(a_my, "A_MARIA")
            if "C" in cases:
                bench.measure(c_fan, "C_FANOUT")
        if "A" in cases or "B" in cases:
            verify(a_pg, [(f"pg:{OURS}", "enterprise", ALL), (f"pg:{FLOOR}", "enterprise", ALL)])
            verify(a_my, [(f"maria:{OURS}", "enterprise", ALL),
                          (f"maria:{FLOOR}", "enterprise", ALL)])  # fmt: skip
        if "C" in cases:
            verify(c_fan, [(f"{'pg' if node == 'pg' else 'maria'}:{OURS}", t, f)
                           for t, (node, f) in FANOUT.items()])  # fmt: skip
        if "B" in cases:
            for k in range(args.repeat):
                since = max_updated_at()
                changed = change_source(n, k + 1)
                b_pg.rows = b_my.rows = changed
                b_pg.floor.append(floor.pg_to_pg(FLOOR, since))
                b_my.floor.append(floor.pg_to_maria(FLOOR, since))
                bench.measure(b_pg, "A_PG")
                bench.measure(b_my, "A_MARIA")
            verify(b_pg, [(f"pg:{OURS}", "enterprise", ALL), (f"pg:{FLOOR}", "enterprise", ALL)])
            verify(b_my, [(f"maria:{OURS}", "enterprise", ALL),
                          (f"maria:{FLOOR}", "enterprise", ALL)])  # fmt: skip
    finally:
        if "B" in cases:
            restore_source(n, args.repeat)
    results = [c for c in (a_pg, a_my, b_pg, b_my, c_fan) if c.seconds]
    report(results, a_pg, n)


def report(results: list[Case], a_pg: Case, n: int) -> None:
    import pyarrow

    print()
    print(
        f"# exchange benchmark, {dt.date.today()}, N = {n:,}, {os.cpu_count()} cores, "
        f"{platform.python_version()}, pyarrow {pyarrow.__version__}, "
        f"PostgreSQL {pg_version()}, MariaDB {maria_version()}"
    )
    print("| case | rows | seconds (median) | rows/s | peak RSS MB | floor s | ratio |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for c in results:
        if c.name.startswith("C"):
            base, label = a_pg.median, "× A PG→PG"
        else:
            base, label = c.floor_median, "× floor"
        print(
            f"| {c.name} | {c.rows:,} | {c.median:.2f} | {c.rows / c.median:,.0f} | "
            f"{c.peak_mb:.0f} | {base:.2f} | {c.median / base:.2f} {label} |"
        )
    for c in results:
        for line in c.checks:
            print(f"  check {c.name}: {line}")


def pg_version() -> str:
    with psycopg.connect(ADMIN) as c:
        return str(c.execute("SHOW server_version").fetchone()[0]).split()[0]  # type: ignore[index]


def maria_version() -> str:
    with pymysql.connect(host="127.0.0.1", user="root") as c, c.cursor() as cur:
        cur.execute("SELECT VERSION()")
        return str(cur.fetchone()[0]).split("-")[0]  # type: ignore[index]


if __name__ == "__main__":
    main()
