"""What validation costs: the validate step of a real run, as a share of the same run's
extract + load time (issue 6; target ≤ 0.25).

    .venv/bin/python -m bench.validation [--rows 1000000] [--source pg|sqlite]

The provider table is the demo's enterprise registry (deterministic from the row id, every
code with a valid check character), N rows, in PostgreSQL (``bench.registry_pg`` in a database
of its own, kept between runs) or, with ``--source sqlite`` or no server, in a SQLite file
generated here and cached. The catalog is the demo's resource with all its quality rules
(required, lengths, USCC and resident ID check characters, region code, phone, code list,
ranges, not-in-the-future, unique USCC, a cross-field comparison). One subscriber receives
every field (PostgreSQL, or SQLite).

Two runs: every row valid (valid/ is then the extract file itself), and, on PostgreSQL, a
--full run after damaging 0.17 % of the codes at the source (scattered, so valid/ and
quarantine/ are written; the rows are put back afterwards). Prints the seconds of each step,
the shares, and the rules-only time (evaluate() on in-memory batches).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource as rlimit
import sqlite3
import tempfile
import time
from importlib import resources
from pathlib import Path

import yaml

from exchange import flow
from exchange.demo.registry import COLUMNS
from exchange.kernel.clock import local_now
from exchange.kernel.settings import Settings
from exchange.workflow.grants import add_subscription
from exchange.workspace import Workspace
from quality import evaluate, rules_for_resource
from quality.rules import Unique

CODE = "410400-SCJG-0001"
SOURCE_DB = "exchange_bench_validation_src"
TARGET_DB = "exchange_bench_validation_tgt"
CACHE = Path(".exchange/bench")


def demo_resource() -> dict[str, object]:
    doc = yaml.safe_load(
        resources.files("schemas").joinpath("examples/demo.yaml").read_text(encoding="utf-8")
    )
    (table,) = [r for r in doc["resources"] if r["code"] == CODE]
    return dict(table)


def sqlite_source(rows: int) -> Path:
    """The registry in a SQLite file, generated once per row count."""
    from exchange.demo.run import create_provider

    CACHE.mkdir(parents=True, exist_ok=True)
    path = (CACHE / f"validation_provider_{rows}.db").resolve()
    if path.exists():
        with sqlite3.connect(path) as db:
            if db.execute("SELECT count(*) FROM enterprise").fetchone() == (rows,):
                return path
    print(f"generating {rows:,} registry rows into {path} (once) ...", flush=True)
    create_provider(path, rows)
    return path


def pg_reachable() -> bool:
    try:
        import psycopg

        psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", connect_timeout=2).close()
    except Exception:  # noqa: BLE001  # any failure means: no server to use
        return False
    return True


def setup(home: Path, rows: int, source: str) -> Path:
    """Provider, subscriber and catalog; return the catalog path."""
    table = demo_resource()
    table["batch_size"] = 50_000
    if source == "pg":
        import psycopg

        from bench.registry_pg import ensure_source, url

        # A database of its own: the exchange benchmark may be using its source right now.
        print(f"provider: PostgreSQL {SOURCE_DB} ({rows:,} rows, built once)", flush=True)
        ensure_source(rows, SOURCE_DB)
        with psycopg.connect(
            "host=127.0.0.1 user=postgres dbname=postgres", autocommit=True
        ) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{TARGET_DB}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{TARGET_DB}"')
        os.environ["BENCH_VALIDATION_SRC"] = url(SOURCE_DB)
        os.environ["BENCH_VALIDATION_TGT"] = url(TARGET_DB)
        nodes = [
            {"name": "src", "kind": "postgresql", "connection": {"env": "BENCH_VALIDATION_SRC"}},
            {"name": "tgt", "kind": "postgresql", "connection": {"env": "BENCH_VALIDATION_TGT"}},
        ]
    else:
        src = sqlite_source(rows)
        print(f"provider: SQLite {src} ({rows:,} rows)", flush=True)
        nodes = [
            {"name": "src", "kind": "sqlite", "connection": {"path": str(src)}},
            {"name": "tgt", "kind": "sqlite", "connection": {"path": str(home / "tgt.db")}},
        ]
    table["provider"] = "src"
    path = home / "catalog.yaml"
    doc = {"version": 1, "nodes": nodes, "resources": [table]}
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


def timed(label: str, fn):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    print(f"  {label:<10} {seconds:8.2f} s", flush=True)
    return out, seconds


def rules_alone(rows: int) -> tuple[float, int]:
    """evaluate() alone on in-memory Arrow batches of the registry (generated here), and the
    rule count: what the rules cost without the Parquet reading and writing around them."""
    from connectors.arrow_types import arrow_schema, rows_to_batch
    from exchange.catalog import load_catalog
    from exchange.demo.registry import enterprise_rows

    path = Path(str(resources.files("schemas").joinpath("examples/demo.yaml")))
    res = load_catalog(path).resource(CODE)
    batch = rows_to_batch(list(enterprise_rows(1, 50_001)), arrow_schema(res.fields))
    rules = rules_for_resource(res, local_now())
    repeats = max(1, rows // batch.num_rows)
    t0 = time.perf_counter()
    bound = [r.over(batch.column(r.field)) if isinstance(r, Unique) else r for r in rules]
    for _ in range(repeats):
        evaluate(batch, bound)
    return (time.perf_counter() - t0) * rows / (repeats * batch.num_rows), len(rules)


def one_run(ws: Workspace, sub_id: int, label: str, full: bool) -> dict[str, float]:
    """Plan, extract, validate, load, record, each step timed; print and return the figures."""
    print(f"{label}:", flush=True)
    run = flow.plan(ws, CODE, full=full)
    rows, t_extract = timed("extract", lambda: flow.extract(ws, run).rows)
    checked, t_validate = timed("validate", lambda: flow.validate(ws, run))
    loaded, t_load = timed("load", lambda: flow.deliver(ws, run, sub_id))
    summary = flow.record(ws, run)
    assert loaded.status == "delivered", loaded
    assert checked.valid + checked.quarantined == rows
    share = t_validate / (t_extract + t_load)
    print(f"  rows      {rows:8,d}   valid {checked.valid:,}, quarantined {checked.quarantined:,}"
          f" ({summary.status})")  # fmt: skip
    print(f"  validation / (extract + load) = {t_validate:.2f} / {t_extract + t_load:.2f} "
          f"= {share:.3f}  (target <= 0.25: {'met' if share <= 0.25 else 'NOT met'})")  # fmt: skip
    return {"share": share, "validate": t_validate, "extract_load": t_extract + t_load}


# A handful of damaged codes (0.17 %), as the demo does: scattered through every batch, so
# the validate step must write valid/ and quarantine/ files of its own.
DAMAGE_PG = [
    "UPDATE enterprise SET uscc = left(uscc, 17) || CASE right(uscc, 1) WHEN '0' THEN '1' "
    "ELSE '0' END WHERE id % 1000 = 500",
    "UPDATE enterprise SET phone = left(phone, 5) WHERE id % 1500 = 321",
]


def damage_pg(rows: int, undo: bool = False) -> None:
    """Damage the benchmark's own source (or put the rows back as the registry has them)."""
    import psycopg

    from bench.registry_pg import dsn
    from exchange.demo.registry import enterprise_row

    with psycopg.connect(dsn(SOURCE_DB), autocommit=True) as conn:
        if not undo:
            for sql in DAMAGE_PG:
                conn.execute(sql)
            return
        ids = [i for i in range(1, rows + 1) if i % 1000 == 500 or i % 1500 == 321]
        with conn.cursor() as cur:
            cur.executemany(
                "UPDATE enterprise SET uscc = %s, phone = %s WHERE id = %s",
                [(enterprise_row(i)[1], enterprise_row(i)[11], i) for i in ids],
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--source", choices=["pg", "sqlite"], default=None)
    args = ap.parse_args()
    source = args.source or ("pg" if pg_reachable() else "sqlite")
    with tempfile.TemporaryDirectory(prefix="bench-validation-") as tmp:
        home = Path(tmp)
        catalog = setup(home, args.rows, source)
        ws = Workspace.open(
            catalog, Settings(home=home, db_url=f"sqlite:///{home / 'exchange.db'}")
        )
        try:
            until = dt.date.today() + dt.timedelta(days=30)
            sub = add_subscription(ws, CODE, "tgt", COLUMNS, until, target_table="enterprise")
            label = f"run of {CODE}, {args.rows:,} rows, {source} -> {source}, every row valid"
            clean = one_run(ws, sub.id, label, full=False)
            damaged = None
            if source == "pg":
                damage_pg(args.rows)
                try:
                    label = "the same, --full, with 0.17 % of the rows damaged"
                    damaged = one_run(ws, sub.id, label, full=True)
                finally:
                    damage_pg(args.rows, undo=True)
        finally:
            ws.close()
    t_rules, n_rules = rules_alone(args.rows)
    peak = rlimit.getrusage(rlimit.RUSAGE_SELF).ru_maxrss / 1024
    print(f"rules: {n_rules} (required, lengths, USCC and resident ID check characters, region, "
          f"phone, code list, ranges, not-in-the-future, unique, cross-field)")  # fmt: skip
    print(f"rules alone (evaluate on in-memory batches of the registry): {t_rules:.2f} s, "
          f"{args.rows / t_rules / 1e6:.2f} M rows/s; peak RSS {peak:,.0f} MB")  # fmt: skip
    shares = [clean["share"]] + ([damaged["share"]] if damaged else [])
    print("share of validation in extract + load: " + ", ".join(f"{x:.3f}" for x in shares))


if __name__ == "__main__":
    main()
