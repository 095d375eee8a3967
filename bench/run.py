"""The exchange benchmark against the raw copy floor (issues 4 and 17).

    python -m bench.run [--rows 1000000] [--repeat 3] [--cases A,B,C] [--modes whole,after]
                        [--big-rows 5000000] [--big-cases pg,maria] [--quick] [--profile]

A  full exchange PG→PG and PG→MariaDB (the demo resource's 24 quality rules on), against
   psql COPY | psql COPY and psql COPY > file + LOAD DATA LOCAL INFILE;
B  incremental after updating 1 % of the rows and inserting 0.1 % new ids, against the changed
   rows copied into a temporary table and upserted the same raw way;
C  fan-out to 5 subscribers (3 PostgreSQL, 2 MariaDB) with different grants, against A PG→PG;
A at --big-rows (a second table, built once and kept like the first): time and the growth of
   peak RSS from --rows to --big-rows.
Each run is a fresh process, measured two ways (``--modes``): ``whole`` is ``exchange run`` as
a user types it, wall clock from spawn to exit, peak RSS of the process tree
(``bench.one_run.measure_process``); ``after`` is ``bench.one_run``'s clock after the imports
(the figure of the earlier tables). The floor's psql and mariadb processes are whole processes
too. Targets are judged on ``whole``. Every target is checked (row count and a checksum over
every column) against the source. ``--profile``: one A PG→PG ``exchange run`` under py-spy
(every thread; cProfile, main thread only, when py-spy is not installed), with its steps.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import shutil
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
from bench.one_run import Measured, Step, measure_process, run_steps
from bench.registry_pg import (
    ADMIN,
    DDL,
    FIELDS,
    MARIADB_DDL,
    copy_text,
    dsn,
    ensure_source,
    source_db,
    url,
)
from exchange.demo.registry import enterprise_row, enterprise_rows

# Per process: two benchmarks at once (or --profile beside a run) never drop each other's
# targets; dropped again at the end (``drop_targets``).
OURS = f"exchange_bench_tgt_{os.getpid()}"
FLOOR = f"exchange_bench_floor_{os.getpid()}"
ALL = [f.name for f in FIELDS]
# C: five subscribers, each granted a different field set (the key always included).
FANOUT = {
    "c_pg_all": ("pg", ALL),
    "c_pg_id": ("pg", ["id", "uscc", "name", "legal_person", "id_card", "updated_at"]),
    "c_pg_money": ("pg", ["id", "name", "reg_capital", "established", "status", "is_active"]),
    "c_my_addr": ("maria", ["id", "name", "address", "phone", "region_code", "industry"]),
    "c_my_scope": ("maria", ["id", "uscc", "scope", "remark", "updated_at"]),
}
# Issue 17's targets: whole process over the floor (C: over A PG→PG), and peak RSS.
TARGETS = {"A_PG": 1.25, "A_MARIA": 1.15, "B_PG": 1.5, "B_MARIA": 1.1, "C": 1.5}
RSS_MB = 250.0  # at 1M rows
RSS_GROWTH = 0.10  # from 1M to 5M rows
EXCHANGE = str(Path(sys.executable).with_name("exchange"))


def recreate_pg(db: str) -> None:
    with psycopg.connect(ADMIN, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')  # bench-owned names
        c.execute(f'CREATE DATABASE "{db}"')


def recreate_maria(db: str) -> None:
    with pymysql.connect(host="127.0.0.1", user="root", autocommit=True) as c, c.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{db}`")
        cur.execute(f"CREATE DATABASE `{db}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")


def drop_targets() -> None:
    with psycopg.connect(ADMIN, autocommit=True) as c:
        for db in (OURS, FLOOR):
            c.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')  # bench-owned names
    with pymysql.connect(host="127.0.0.1", user="root", autocommit=True) as c, c.cursor() as cur:
        for db in (OURS, FLOOR):
            cur.execute(f"DROP DATABASE IF EXISTS `{db}`")


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
    """One line of the table: a case's runs in both modes and the floor beside them."""

    name: str
    key: str  # in TARGETS
    rows: int
    table_rows: int  # the source table's size (the RSS target is for 1M)
    whole: list[float] = field(default_factory=list)
    after: list[float] = field(default_factory=list)
    floor: list[float] = field(default_factory=list)
    peak_mb: float = 0.0  # whole process tree
    after_peak_mb: float = 0.0
    children: int = 0
    checks: list[str] = field(default_factory=list)
    last: tuple[Measured, list[Step]] | None = None  # the last whole run, with its steps

    @staticmethod
    def median(xs: list[float]) -> float:
        return statistics.median(xs) if xs else float("nan")


class Bench:
    """A home, a catalog and a store with the subscriptions, on the ``rows``-row source."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.source = source_db(rows)
        self.root = Path(tempfile.mkdtemp(prefix="exchange-bench-"))
        self.home = self.root / "home"
        self.pristine = self.root / "pristine"
        self.home.mkdir()
        self.catalog = catalog(self.home)
        self.env = {
            **os.environ,
            "BENCH_SRC": url(self.source),
            "BENCH_PG": url(OURS),
            "BENCH_MARIA": f"mysql://root@127.0.0.1:3306/{OURS}",
            "EXCHANGE_HOME": str(self.home),
        }
        self.env.pop("EXCHANGE_DB_URL", None)
        # A user's install has its bytecode compiled (make's --compile-bytecode); where this
        # variable is set, every process would compile each module edited since, again.
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.subscribe("A_PG", "pg", ALL, "enterprise")
        self.subscribe("A_MARIA", "maria", ALL, "enterprise")
        for table, (node, fields) in FANOUT.items():
            self.subscribe("C_FANOUT", node, fields, table)
        # Each first delivery starts from this home (store with the subscriptions, audit key
        # and witness), copied back: 7 `subscription add` processes each time would cost ~7 s.
        shutil.copytree(self.home, self.pristine)

    def subscribe(self, code: str, node: str, fields: list[str], table: str) -> None:
        until = (dt.date.today() + dt.timedelta(days=300)).isoformat()
        out = subprocess.run(
            [sys.executable, "-m", "exchange", "subscription", "add", code, "--node", node,
             "--fields", ",".join(fields), "--until", until, "--table", table,
             "--catalog", str(self.catalog)],
            env=self.env, capture_output=True, text=True,
        )  # fmt: skip
        if out.returncode != 0:
            raise SystemExit(f"subscription to {code} for {node} failed:\n{out.stderr}")

    def fresh(self) -> None:
        """New targets and the store as it was before any run: the next runs are first
        deliveries."""
        recreate_pg(OURS)
        recreate_maria(OURS)
        shutil.rmtree(self.home)
        shutil.copytree(self.pristine, self.home)

    def measure(self, case: Case, code: str, mode: str) -> None:
        """One run of ``code`` in a fresh process, ``whole`` or ``after`` the imports."""
        if mode == "whole":
            m = measure_process([EXCHANGE, "run", code, "--catalog", str(self.catalog)], self.env)
            if m.returncode != 0:
                raise SystemExit(
                    f"exchange run {code} failed ({m.returncode}):\n{m.output[-3000:]}"
                )
            case.whole.append(m.seconds)
            case.peak_mb = max(case.peak_mb, m.peak_mb)
            case.children = max(case.children, m.children)
            case.last = (m, run_steps(self.home, code, m))
            took = f"{m.seconds:.2f} s whole, {m.peak_mb:.0f} MB"
        else:
            out = subprocess.run(
                [sys.executable, "-m", "bench.one_run", str(self.home), str(self.catalog), code],
                env=self.env, capture_output=True, text=True,
            )  # fmt: skip
            if out.returncode != 0:
                raise SystemExit(f"bench.one_run {code} failed:\n{out.stderr[-3000:]}")
            r = json.loads(out.stdout.strip().splitlines()[-1])
            if r["status"] != "succeeded":
                raise SystemExit(f"run of {code} failed: {r}")
            case.after.append(float(r["seconds"]))
            case.after_peak_mb = max(case.after_peak_mb, float(r["peak_mb"]))
            took = f"{case.after[-1]:.2f} s after imports"
        floor_s = f" (floor {case.floor[-1]:.2f} s)" if case.floor else ""
        print(f"  {case.name}, {mode}: {took}{floor_s}", flush=True)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


_source_sums: dict[tuple[str, tuple[str, ...]], tuple[int, int]] = {}


def source_checksum(db: str, fields: list[str]) -> tuple[int, int]:
    """The source's checksum, computed once until the source changes (``change_source``)."""
    key = (db, tuple(fields))
    if key not in _source_sums:
        _source_sums[key] = pg_checksum(dsn(db), "enterprise", fields)
    return _source_sums[key]


def verify(case: Case, source: str, tables: list[tuple[str, str, list[str]]], label: str) -> None:
    for where, table, fields in tables:
        want = source_checksum(source, fields)
        db = where.split(":", 1)[1]
        got = (
            pg_checksum(dsn(db), table, fields)
            if where.startswith("pg")
            else maria_checksum(db, table, fields)
        )
        if got != want:
            raise SystemExit(f"{case.name}: {where}.{table} differs from the source: {got} {want}")
        case.checks.append(f"{label} {where}.{table}: {got[0]:,} rows, checksum ok")


def a_targets(case: Case) -> list[tuple[str, str, list[str]]]:
    where = "pg" if case.key == "A_PG" else "maria"
    return [(f"{where}:{OURS}", "enterprise", ALL), (f"{where}:{FLOOR}", "enterprise", ALL)]


C_TARGETS = [
    (f"{'pg' if node == 'pg' else 'maria'}:{OURS}", t, f) for t, (node, f) in FANOUT.items()
]


def max_updated_at(db: str) -> str:
    with psycopg.connect(dsn(db)) as c:
        return str(c.execute("SELECT max(updated_at) FROM enterprise").fetchone()[0])  # type: ignore[index]


def change_source(db: str, rows: int, k: int) -> int:
    """Update 1 % of the rows (a different 1 % each k) and insert 0.1 % new ids."""
    _source_sums.clear()
    stamp = dt.datetime(2026, 11, 24, 12, 0, 0) + dt.timedelta(minutes=k)
    new_from = 10 * rows + k * rows // 1000 + 1
    new = [r[:7] + (stamp,) + r[8:] for r in enterprise_rows(new_from, new_from + rows // 1000)]
    with psycopg.connect(dsn(db)) as c:
        c.execute(
            "UPDATE enterprise SET updated_at = %s, status = status %% 4 + 1 WHERE id %% 100 = %s",
            (stamp, k),
        )
        with c.cursor().copy("COPY enterprise FROM STDIN") as copy:
            copy.write(copy_text(new))
    return rows // 100 + rows // 1000


def restore_source(db: str, rows: int, changes: int) -> None:
    """Undo every change of case B, so that each run of the script starts from the same data."""
    _source_sums.clear()
    changed = [i for i in range(1, rows + 1) if 1 <= i % 100 <= changes]
    with psycopg.connect(dsn(db)) as c:
        c.execute("DELETE FROM enterprise WHERE id > %s OR (id %% 100 BETWEEN 1 AND %s)",
                  (rows, changes))  # fmt: skip
        with c.cursor().copy("COPY enterprise FROM STDIN") as copy:
            for start in range(0, len(changed), 50_000):
                chunk = [enterprise_row(i) for i in changed[start : start + 50_000]]
                copy.write(copy_text(chunk))


def full_cases(bench: Bench, cases: list[Case], repeat: int, modes: list[str]) -> None:
    """A (and C) ``repeat`` times: the floors, then each mode from fresh targets (the modes in
    turn first, so that a machine getting busier weighs on both); checked in the last round."""
    for i in range(repeat):
        print(f"round {i + 1} of {repeat}, {bench.rows:,} rows", flush=True)
        floor_tables()
        for case in cases:
            if case.key == "A_PG":
                case.floor.append(floor.pg_to_pg(bench.source, FLOOR))
            elif case.key == "A_MARIA":
                case.floor.append(floor.pg_to_maria(bench.source, FLOOR))
        for mode in modes if i % 2 == 0 else modes[::-1]:
            bench.fresh()
            for case in cases:
                bench.measure(case, "C_FANOUT" if case.key == "C" else case.key, mode)
            if i == repeat - 1:
                for case in cases:
                    targets = C_TARGETS if case.key == "C" else a_targets(case)
                    verify(case, bench.source, targets, mode)


def incremental_cases(bench: Bench, cases: list[Case], repeat: int, modes: list[str]) -> int:
    """B: each measured run after a change of its own; returns how many changes were made.
    The targets hold A's delivery (``full_cases`` ran before)."""
    k = 0
    for _ in range(repeat):
        for mode in modes:
            k += 1
            since = max_updated_at(bench.source)
            changed = change_source(bench.source, bench.rows, k)
            for case in cases:
                case.rows = changed
                base = "A_PG" if case.key == "B_PG" else "A_MARIA"
                copy = floor.pg_to_pg if base == "A_PG" else floor.pg_to_maria
                case.floor.append(copy(bench.source, FLOOR, since))
                bench.measure(case, base, mode)
    for case in cases:
        where = "pg" if case.key == "B_PG" else "maria"
        verify(case, bench.source,
               [(f"{where}:{OURS}", "enterprise", ALL), (f"{where}:{FLOOR}", "enterprise", ALL)],
               "after B")  # fmt: skip
    return k


def compile_bytecode() -> None:
    """Compile the project's modules now, so that no measured process compiles one (a module
    edited since the install would otherwise be compiled by the first process to import it)."""
    import compileall

    root = Path(__file__).resolve().parent.parent
    for package in ("exchange", "connectors", "quality", "bench"):
        compileall.compile_dir(root / package, quiet=1)


def startup_figures(quick: bool) -> None:
    """Issue 17 item 2's figures, from ``bench.startup`` (its own script) when it is there."""
    if importlib.util.find_spec("bench.startup") is None:
        print(
            "\nstart-up: bench/startup.py is not there yet, so its figures are left out "
            "(`exchange --help` ≤ 0.3 s, `exchange status` ≤ 0.5 s, an empty run ≤ 0.5 s)"
        )
        return
    print("\n# start-up (bench.startup)", flush=True)
    cmd = [sys.executable, "-m", "bench.startup"]
    usage = subprocess.run([*cmd, "--help"], capture_output=True, text=True).stdout
    if quick and "--repeat" in usage:
        cmd += ["--repeat", "3"]
    subprocess.run(cmd, check=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=None, help="default 1,000,000 (--quick: 100,000)")
    ap.add_argument("--repeat", type=int, default=None, help="default 3 (--quick: 1)")
    ap.add_argument("--cases", default="A,B,C")
    ap.add_argument("--modes", default="whole,after", help="whole: `exchange run`; after: "
                    "the clock after the imports")  # fmt: skip
    ap.add_argument(
        "--big-rows", type=int, default=None,
        help="A at this many rows too (0: not); default 5,000,000 (--quick: 0)",
    )  # fmt: skip
    ap.add_argument("--big-cases", default="pg,maria", help="which A at --big-rows")
    ap.add_argument("--big-repeat", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="100k rows, 1 round, no big table")
    ap.add_argument("--no-startup", action="store_true", help="leave out bench.startup")
    ap.add_argument("--profile", action="store_true",
                    help="only profile one A PG→PG `exchange run` at --rows")  # fmt: skip
    args = ap.parse_args()
    n = args.rows or (100_000 if args.quick else 1_000_000)
    repeat = args.repeat or (1 if args.quick else 3)
    big = args.big_rows if args.big_rows is not None else (0 if args.quick else 5_000_000)
    cases, modes = set(args.cases.split(",")), args.modes.split(",")
    compile_bytecode()
    if args.profile:
        profile(n)
        return
    print(f"building the source ({n:,} rows; kept) ...", flush=True)
    print(f"source ready ({ensure_source(n, source_db(n)):.1f} s)", flush=True)
    bench = Bench(n)
    a_pg = Case("A full PG→PG", "A_PG", n, n)
    a_my = Case("A full PG→MariaDB", "A_MARIA", n, n)
    c_fan = Case("C fan-out 5 subscribers", "C", n, n)
    b_pg = Case("B incremental PG→PG", "B_PG", 0, n)
    b_my = Case("B incremental PG→MariaDB", "B_MARIA", 0, n)
    full = ([a_pg, a_my] if "A" in cases or "B" in cases else []) + (
        [c_fan] if "C" in cases else []
    )
    changes = 0
    big_cases: list[Case] = []
    try:
        try:
            full_cases(bench, full, repeat, modes)
            if "B" in cases:
                changes = incremental_cases(bench, [b_pg, b_my], repeat, modes)
        finally:
            if changes:
                restore_source(bench.source, n, changes)
            bench.close()
        if big:
            print(f"building the big source ({big:,} rows; kept) ...", flush=True)
            print(f"source ready ({ensure_source(big, source_db(big)):.1f} s)", flush=True)
            wanted = set(args.big_cases.split(","))
            if "pg" in wanted:
                big_cases.append(Case("A full PG→PG", "A_PG", big, big))
            if "maria" in wanted:
                big_cases.append(Case("A full PG→MariaDB", "A_MARIA", big, big))
            big_bench = Bench(big)
            try:
                full_cases(big_bench, big_cases, args.big_repeat, modes)
            finally:
                big_bench.close()
    finally:
        # What was measured is reported even when a later case failed (a long run's figures
        # are not lost with it); a case without both figures shows nan.
        ran = [c for c in (a_pg, a_my, b_pg, b_my, c_fan) if c.whole or c.after]
        report(ran, [c for c in big_cases if c.whole or c.after], a_pg, n)
        drop_targets()
    if not args.no_startup:
        startup_figures(args.quick)


def verdict(value: float, bound: float) -> str:
    return "met" if value <= bound else "**missed**"


def report(results: list[Case], big: list[Case], a_pg: Case, n: int) -> None:
    import pyarrow

    print()
    print(
        f"# exchange benchmark, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, N = {n:,}, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end, "
        f"Python {platform.python_version()}, pyarrow {pyarrow.__version__}, "
        f"PostgreSQL {pg_version()}, MariaDB {maria_version()}; medians; whole = `exchange run` "
        "from spawn to exit, after = clock after the imports"
    )
    print("| case | rows | whole s | after s | floor s | whole ratio | target | after ratio "
          "| peak RSS MB (tree) | RSS target |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- |")
    for c in results + big:
        whole, after = Case.median(c.whole), Case.median(c.after)
        if c.key == "C":
            base, unit = Case.median(a_pg.whole), "× A"
            after_base = Case.median(a_pg.after)
        else:
            base = after_base = Case.median(c.floor)
            unit = "×"
        bound = TARGETS[c.key]
        ratio = whole / base
        if c.table_rows == n:
            rss = f"≤ {RSS_MB:.0f} {verdict(c.peak_mb, RSS_MB)}"
        else:
            small = next((s for s in results if s.key == c.key), None)
            growth = c.peak_mb / small.peak_mb - 1 if small and small.peak_mb else float("nan")
            rss = (
                f"{growth:+.0%} from {n:,} rows: ≤ +{RSS_GROWTH:.0%} {verdict(growth, RSS_GROWTH)}"
            )
        print(
            f"| {c.name} | {c.rows:,} | {whole:.2f} | {after:.2f} | {base:.2f} | "
            f"{ratio:.2f} {unit} | ≤ {bound} {verdict(ratio, bound)} | "
            f"{after / after_base:.2f} {unit} | {c.peak_mb:.0f} | {rss} |"
        )
    kids = max((c.children for c in results + big), default=0)
    after_rss = ", ".join(f"{c.name} {c.after_peak_mb:.0f} MB" for c in results + big if c.after)
    print(
        "(peak RSS: os.wait4's high-water mark of the `exchange run` process, or the sum "
        f"over its process tree (/proc) sampled every 50 ms if larger; children seen: {kids}; "
        f"bench.one_run's own: {after_rss})"
    )
    for c in results + big:
        for line in c.checks:
            print(f"  check {c.name} ({c.table_rows:,}): {line}")
    for c in results + big:
        if c.key in ("A_PG", "A_MARIA") and c.last:
            print_steps(f"{c.name}, {c.rows:,} rows", *c.last)


def print_steps(title: str, m: Measured, steps: list[Step]) -> None:
    print(f"\nsteps of the last whole run, {title}: {m.seconds:.2f} s, peak {m.peak_mb:.0f} MB")
    print("| step | seconds | share | peak RSS MB in it |")
    print("| --- | ---: | ---: | ---: |")
    for s in steps:
        print(f"| {s.name} | {s.seconds:.2f} | {s.seconds / m.seconds:.0%} | "
              f"{m.peak_between(s.start, s.end):.0f} |")  # fmt: skip


def profile(n: int) -> None:
    """One A PG→PG `exchange run` under a profiler, from fresh targets, with its steps."""
    print(f"source ready ({ensure_source(n, source_db(n)):.1f} s)", flush=True)
    bench = Bench(n)
    try:
        bench.fresh()
        out = Path(tempfile.gettempdir()) / "exchange-bench-profile"
        spy = shutil.which("py-spy")
        if spy:
            # Every thread (the loads run in a pool), waiting included (wall time), at 100 Hz.
            cmd = [spy, "record", "--threads", "--idle", "--rate", "100", "--format", "raw",
                   "-o", f"{out}.txt", "--", EXCHANGE, "run", "A_PG",
                   "--catalog", str(bench.catalog)]  # fmt: skip
        else:
            cmd = [sys.executable, "-m", "cProfile", "-o", f"{out}.pstats", "-m", "exchange",
                   "run", "A_PG", "--catalog", str(bench.catalog)]  # fmt: skip
        m = measure_process(cmd, bench.env)
        if m.returncode != 0:
            raise SystemExit(f"profiled run failed:\n{m.output[-3000:]}")
        print_steps(f"A PG→PG under {'py-spy' if spy else 'cProfile'}, {n:,} rows", m,
                    run_steps(bench.home, "A_PG", m))  # fmt: skip
        if spy:
            print(f"\ncollapsed stacks: {out}.txt (flamegraph.pl or speedscope)")
            summarize_stacks(Path(f"{out}.txt"))
        else:
            import pstats

            stats = pstats.Stats(f"{out}.pstats")
            stats.sort_stats("cumulative").print_stats(40)
            stats.sort_stats("tottime").print_stats(25)
    finally:
        bench.close()
        drop_targets()


def summarize_stacks(path: Path, top: int = 20) -> None:
    """Per thread: its seconds of samples, the project's functions most often on its stack
    (inclusive) and the functions most often at its top (self: where the time is spent)."""
    import re
    from collections import Counter

    line_no = re.compile(r":\d+\)$")  # a function counts once, whatever its line
    ours = ("(exchange/", "(connectors/", "(quality/")
    inclusive: dict[str, Counter[str]] = {}
    leaf: dict[str, Counter[str]] = {}
    totals: Counter[str] = Counter()
    for line in path.read_text(encoding="utf-8").splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [line_no.sub(")", f) for f in stack.split(";")]
        thread = next((f for f in frames if f.startswith("thread ")), "thread ?")
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        n = int(count)
        totals[thread] += n
        mine = {f for f in frames if any(o in f for o in ours)}
        inclusive.setdefault(thread, Counter()).update(dict.fromkeys(mine, n))
        leaf.setdefault(thread, Counter())[frames[-1] if frames else "?"] += n
    for thread, samples in totals.most_common():
        print(f"\n{thread}: {samples / 100:.2f} s of samples")
        print("  the project's functions on the stack (inclusive):")
        for name, n in inclusive[thread].most_common(top):
            print(f"  {n / samples:6.1%} {n / 100:7.2f} s  {name}")
        print("  at the top of the stack (self):")
        for name, n in leaf[thread].most_common(top // 2):
            print(f"  {n / samples:6.1%} {n / 100:7.2f} s  {name}")


def pg_version() -> str:
    with psycopg.connect(ADMIN) as c:
        return str(c.execute("SHOW server_version").fetchone()[0]).split()[0]  # type: ignore[index]


def maria_version() -> str:
    with pymysql.connect(host="127.0.0.1", user="root") as c, c.cursor() as cur:
        cur.execute("SELECT VERSION()")
        return str(cur.fetchone()[0]).split("-")[0]  # type: ignore[index]


if __name__ == "__main__":
    main()
