"""Peak memory of the validate step at 1M and 5M rows (issue 17: ≤ 250 MB at 1M, ≤ +10 % to 5M).

    .venv/bin/python -m bench.validate_memory [--rows 1000000,5000000] [--repeat 2] [--no-old]

The provider is the 16-column enterprise registry in PostgreSQL (``bench.registry_pg``, one
database per row count, kept between runs) with the demo resource's rules (24, ``unique`` on
``uscc`` and the duplicate-key check on ``id`` among them). For each row count the run is
planned and extracted once (not measured), then its validate step runs alone in a fresh
process each time, as an Airflow task runs it (``exchange.orchestration.validate_step``:
interpreter start-up and imports included), and its peak RSS is read from ``wait4`` (the
whole process). Beside it, in the same script on the same staged file, the old binding
(``--no-old`` skips it): the staged ``uscc`` column read whole for ``pc.unique`` and every key
hash sorted in memory. Then the source database's own ``GROUP BY … HAVING count(*) > 1`` on
the same columns (the issue's other approach), timed against the spilled-hash binding.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

CODE = "VM"
TARGET_MB = 250.0
GROWTH = 0.10


def source_db(rows: int) -> str:
    return f"exchange_bench_vm_{rows}"


def write_catalog(home: Path) -> Path:
    """The demo's registry resource (its fields and quality rules) read from the bench source."""
    demo = yaml.safe_load(
        resources.files("schemas").joinpath("examples/demo.yaml").read_text(encoding="utf-8")
    )
    base = next(r for r in demo["resources"] if r["code"] == "410400-SCJG-0001")
    doc = {
        "version": 1,
        "nodes": [
            {"name": "src", "kind": "postgresql", "connection": {"env": "BENCH_VM_SRC"}},
            {"name": "sink", "kind": "sqlite", "connection": {"path": str(home / "sink.db")}},
        ],
        "resources": [dict(base, code=CODE, provider="src", source={"table": "enterprise"})],
    }
    path = home / "catalog.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


def env_for(home: Path, rows: int) -> dict[str, str]:
    from bench.registry_pg import url

    return {
        **os.environ,
        "EXCHANGE_HOME": str(home),
        "EXCHANGE_DB_URL": f"sqlite:///{home / 'exchange.db'}",
        "BENCH_VM_SRC": url(source_db(rows)),
    }


def stage(home: Path, catalog: Path) -> str:
    """(child) Plan and extract a full run; its id."""
    from exchange import orchestration
    from exchange.workflow.grants import add_subscription
    from exchange.workspace import Workspace

    with Workspace.open(catalog) as ws:
        fields = list(ws.catalog.resource(CODE).field_names)
        until = dt.date.today() + dt.timedelta(days=300)
        add_subscription(ws, CODE, "sink", fields, until, target_table="enterprise")
    run_id = str(orchestration.plan_step(catalog, CODE, full=True)["run_id"])
    orchestration.extract_step(catalog, run_id)
    return run_id


def old_binding() -> None:
    """(child) The binding before issue 17: the whole staged column in memory for ``unique``,
    every key hash in one sorted array for the duplicate-key check."""
    import functools

    import numpy as np
    import pyarrow.parquet as pq

    from exchange.tables import validate as step
    from quality.rules import DuplicateKey, Rule, Unique

    def bound(rules: list[Rule], rd: Any, standing: np.ndarray) -> list[Rule]:
        out: list[Rule] = []
        for rule in rules:
            if isinstance(rule, Unique):
                path = rd.part("extract")
                rule = rule.over(pq.read_table(path, columns=[rule.field]).column(rule.field))
            elif isinstance(rule, DuplicateKey):
                keys = functools.partial(step._key_batches, rd, list(rule.keys), standing)
                rule = rule.over(keys)
            out.append(rule)
        return out

    step._bound_to_run = bound


def validate_once(catalog: Path, run_id: str, old: bool) -> dict[str, float]:
    """(child) The validate step alone, redone from scratch; seconds, and those of binding."""
    import numpy as np

    from exchange import orchestration
    from exchange.runs.handle import RunHandle
    from exchange.tables import validate as step
    from exchange.workspace import Workspace
    from quality.rules import Rule

    with Workspace.open(catalog) as ws:
        rd = RunHandle.open(ws, run_id).dir
        rd.done_file("validate").unlink(missing_ok=True)
    if old:
        old_binding()
    binding = step._bound_to_run
    spent = {"bind": 0.0}

    def timed(rules: list[Rule], rd: Any, standing: np.ndarray) -> list[Rule]:
        t0 = time.perf_counter()
        try:
            return binding(rules, rd, standing)
        finally:
            spent["bind"] += time.perf_counter() - t0

    step._bound_to_run = timed
    t0 = time.perf_counter()
    orchestration.validate_step(catalog, run_id)
    return {"seconds": time.perf_counter() - t0, "bind": spent["bind"]}


def child(args: list[str], env: dict[str, str]) -> tuple[dict[str, Any], float]:
    """This module with ``args`` in a fresh process: its last JSON line and its peak RSS in MB,
    from ``wait4`` (exactly that process, interpreter start-up and imports included)."""
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.validate_memory", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        assert proc.stdout is not None
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{args[0]} failed ({proc.returncode}):\n{err.read()[-3000:]}")
    return json.loads(out.strip().splitlines()[-1]), usage.ru_maxrss / 1024  # KiB on Linux


def group_by_seconds(rows: int) -> dict[str, float]:
    """The source's own duplicate check, each column as its own statement (bound names)."""
    import psycopg
    from psycopg import sql

    from bench.registry_pg import dsn

    out = {}
    with psycopg.connect(dsn(source_db(rows))) as conn:
        for col in ("uscc", "id"):
            query = sql.SQL("SELECT {c} FROM enterprise GROUP BY {c} HAVING count(*) > 1").format(
                c=sql.Identifier(col)
            )
            t0 = time.perf_counter()
            conn.execute(query).fetchall()
            out[col] = time.perf_counter() - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", default="1000000,5000000")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--no-old", action="store_true")
    args = ap.parse_args()
    from bench.registry_pg import ensure_source

    counts = [int(n) for n in args.rows.split(",")]
    figures: dict[tuple[int, str], list[tuple[float, float, float]]] = {}
    by_db: dict[int, dict[str, float]] = {}
    for n in counts:
        print(f"source {n:,} rows: {ensure_source(n, source_db(n)):.1f} s to build", flush=True)
        home = Path(tempfile.mkdtemp(prefix="exchange-vm-"))
        try:
            catalog = write_catalog(home)
            env = env_for(home, n)
            doc, _ = child(["--stage", str(home), str(catalog)], env)
            run_id = str(doc["run_id"])
            modes = ["new"] if args.no_old else ["new", "old"]
            for _ in range(args.repeat):
                for mode in modes:  # in turn, so both see the same machine load
                    got, peak = child(["--validate", str(catalog), run_id, mode], env)
                    figures.setdefault((n, mode), []).append((peak, got["seconds"], got["bind"]))
                    print(f"{n:,} rows, {mode}: {peak:.0f} MB, {got['seconds']:.2f} s "
                          f"(binding {got['bind']:.2f} s)", flush=True)  # fmt: skip
            by_db[n] = group_by_seconds(n)
        finally:
            shutil.rmtree(home, ignore_errors=True)
    report(counts, figures, by_db)


def report(
    counts: list[int],
    figures: dict[tuple[int, str], list[tuple[float, float, float]]],
    by_db: dict[int, dict[str, float]],
) -> None:
    def peak(n: int, mode: str) -> float:
        return max(p for p, _, _ in figures[(n, mode)])

    def med(n: int, mode: str, i: int) -> float:
        return statistics.median(f[i] for f in figures[(n, mode)])

    print("\nvalidate step alone, whole process (peak RSS: max of repeats; seconds: median)")
    print("| rows | mode | peak RSS MB | seconds | binding s | source GROUP BY s (uscc + id) |")
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    for n in counts:
        for mode in ("new", "old"):
            if (n, mode) in figures:
                db = by_db[n]["uscc"] + by_db[n]["id"] if mode == "new" else float("nan")
                print(f"| {n:,} | {mode} | {peak(n, mode):.0f} | {med(n, mode, 1):.2f} | "
                      f"{med(n, mode, 2):.2f} | {db:.2f} |")  # fmt: skip
    low, high = counts[0], counts[-1]
    first = peak(low, "new")
    print(f"\ntarget ≤ {TARGET_MB:.0f} MB at {low:,}: {first:.0f} MB "
          f"{'met' if first <= TARGET_MB else 'missed'}")  # fmt: skip
    if high != low:
        ratio = peak(high, "new") / first
        print(f"target ≤ {1 + GROWTH:.2f}× from {low:,} to {high:,}: {ratio:.3f}× "
              f"{'met' if ratio <= 1 + GROWTH else 'missed'}")  # fmt: skip
        if (high, "old") in figures:
            print(f"old binding: {peak(low, 'old'):.0f} → {peak(high, 'old'):.0f} MB "
                  f"({peak(high, 'old') / peak(low, 'old'):.3f}×)")  # fmt: skip
    for n in counts:
        ours = med(n, "new", 2)
        db = by_db[n]["uscc"] + by_db[n]["id"]
        print(f"{n:,} rows: source GROUP BY {db:.2f} s / spilled-hash binding {ours:.2f} s "
              f"= {db / ours if ours else float('nan'):.2f}×")  # fmt: skip


def entry() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["--stage"]:
        print(json.dumps({"run_id": stage(Path(argv[1]), Path(argv[2]))}))
    elif argv[:1] == ["--validate"]:
        print(json.dumps(validate_once(Path(argv[1]), argv[2], argv[3] == "old")))
    else:
        main()


if __name__ == "__main__":
    entry()
