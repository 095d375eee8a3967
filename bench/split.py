"""A split full extract against the unsplit run of the same table (issue 17, item 4).

    python -m bench.split [--rows 1000000] [--repeat 3] [--chunks 4] [--targets pg,maria]

The demo resource (its quality rules on) twice over one PostgreSQL source table: ``*_SPLIT``
with ``split: {by: id, chunks: N}`` and ``*_PLAIN`` without, each run as ``exchange run CODE
--full`` in a fresh process (whole process: start-up included, peak RSS of the process tree,
``bench.one_run.measure_process``), into fresh targets (a first delivery) in turn, so a
machine getting busier weighs on both. Every target is checked against the source by row count
and an all-column checksum. Prints the medians and the ratio split / unsplit per target.

The split run extracts and loads its ranges in threads of one process (Airflow's mapped tasks
on several Celery workers are not measured here: that needs the docker stack).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

import yaml

from bench.checksum import maria_checksum, pg_checksum
from bench.one_run import Measured, Step, measure_process, run_steps
from bench.registry_pg import FIELDS, dsn, ensure_source, url
from bench.run import print_steps, recreate_maria, recreate_pg

TARGET_DB = "exchange_bench_split"
ALL = [f.name for f in FIELDS]
EXCHANGE = str(Path(sys.executable).with_name("exchange"))


def catalog(home: Path, chunks: int, targets: list[str]) -> Path:
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
    for target in targets:
        plain = dict(base, code=f"{target}_PLAIN", provider="src", source={"table": "enterprise"})
        res += [plain, dict(plain, code=f"{target}_SPLIT", split={"by": "id", "chunks": chunks})]
    path = home / "catalog.yaml"
    doc = {"version": 1, "nodes": nodes, "resources": res}
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


def subscribe(cat: Path, env: dict[str, str], code: str, node: str, table: str) -> None:
    until = (dt.date.today() + dt.timedelta(days=300)).isoformat()
    out = subprocess.run(
        [EXCHANGE, "subscription", "add", code, "--node", node, "--fields", ",".join(ALL),
         "--until", until, "--target-table", table, "--catalog", str(cat)],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"subscription to {code} failed:\n{out.stderr}")


def checksum(target: str, table: str) -> tuple[int, int]:
    if target == "pg":
        return pg_checksum(dsn(TARGET_DB), table, ALL)
    return maria_checksum(TARGET_DB, table, ALL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--chunks", type=int, default=4)
    ap.add_argument("--targets", default="pg,maria")
    args = ap.parse_args()
    targets = args.targets.split(",")
    # Its own copy of the source: other benchmarks change theirs (B updates and inserts rows).
    source = f"{TARGET_DB}_src_{args.rows}"
    print(f"source {source}: built in {ensure_source(args.rows, source):.1f} s", flush=True)
    want = pg_checksum(dsn(source), "enterprise", ALL)
    root = Path(tempfile.mkdtemp(prefix="split-bench-"))
    home, pristine = root / "home", root / "pristine"
    home.mkdir()
    env = {
        **os.environ,
        "BENCH_SRC": url(source),
        "BENCH_PG": url(TARGET_DB),
        "BENCH_MARIA": f"mysql://root@127.0.0.1:3306/{TARGET_DB}",
        "EXCHANGE_HOME": str(home),
    }
    env.pop("EXCHANGE_DB_URL", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    cat = catalog(home, args.chunks, targets)
    for target in targets:
        for kind in ("PLAIN", "SPLIT"):
            subscribe(cat, env, f"{target}_{kind}", target, f"ent_{kind.lower()}")
    shutil.copytree(home, pristine)
    seconds: dict[str, list[float]] = {}
    peak: dict[str, float] = {}
    last: dict[str, tuple[Measured, list[Step]]] = {}  # each code's last run, by step
    try:
        for i in range(args.repeat):
            order = ("PLAIN", "SPLIT") if i % 2 == 0 else ("SPLIT", "PLAIN")
            for target in targets:
                for kind in order:
                    recreate_pg(TARGET_DB)
                    recreate_maria(TARGET_DB)
                    shutil.rmtree(home)
                    shutil.copytree(pristine, home)
                    code = f"{target}_{kind}"
                    m = measure_process(
                        [EXCHANGE, "run", code, "--full", "--catalog", str(cat)], env
                    )
                    if m.returncode != 0:
                        raise SystemExit(f"exchange run {code} failed:\n{m.output[-3000:]}")
                    got = checksum(target, f"ent_{kind.lower()}")
                    if got != want:
                        raise SystemExit(f"{code}: target differs from the source: {got} {want}")
                    seconds.setdefault(code, []).append(m.seconds)
                    last[code] = (m, run_steps(home, code, m))
                    peak[code] = max(peak.get(code, 0.0), m.peak_mb)
                    print(f"  round {i + 1}: {code} {m.seconds:.2f} s, {m.peak_mb:.0f} MB, "
                          f"{got[0]:,} rows, checksum ok", flush=True)  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\n{args.rows:,} rows, split in {args.chunks}, {os.cpu_count()} CPUs, "
          f"median of {args.repeat}, whole process:")  # fmt: skip
    for target in targets:
        plain = statistics.median(seconds[f"{target}_PLAIN"])
        split = statistics.median(seconds[f"{target}_SPLIT"])
        print(
            f"  PG→{'PG' if target == 'pg' else 'MariaDB'}: unsplit {plain:.2f} s "
            f"({peak[f'{target}_PLAIN']:.0f} MB), split {split:.2f} s "
            f"({peak[f'{target}_SPLIT']:.0f} MB): split / unsplit {split / plain:.2f}x"
        )
    for code, (m, steps) in last.items():
        print_steps(code, m, steps)


if __name__ == "__main__":
    main()
