"""What parsing the DAGs of a large catalog costs Airflow, whole processes (interpreter start,
imports, catalog load, DAG construction), each beside a baseline measured in the same script:

- **dag-processor parse**: ``DagBag()`` of the DAGs folder for a catalog of N table resources
  (every DAG built), and for a 1-resource catalog;
- **task start**: what a worker's task process parses before it runs one task: the DAG file
  alone with Airflow's parsing context naming one DAG of the N (only that one is built);
- **baseline**: the same ``DagBag()`` of an empty folder: Airflow's own imports and machinery,
  which no change of ours can move.

    .venv/bin/python -m bench.dag_parse [--resources 200] [--repeat 5]

The commands run in turn (round by round, after one warm-up round that is not counted), so a
machine whose speed drifts moves them alike; what our DAG files add is each command minus the
baseline of the same round, and its median is checked against the target (≤ 0.5 s for the
N-resource parse). Wall and CPU seconds (user + system: what a busy machine moves least) are
printed for each, with the ratios to the baseline. Every parse is checked: no import error and
the DAG count it must build. Beside them, in this process: reading the catalog file the old way
(PyYAML's pure-Python parser twice: compose for the lines, safe_load for the values) against
``load_catalog`` (one libyaml read; validation; the model), and Airflow's own per-file parse
durations from the N-resource ``DagBag``. Airflow gets a home of its own (a migrated SQLite
metadata DB) and the repository's ``dags/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW = Path(sys.executable).with_name("airflow")
CYCLES = ("hourly", "daily", "weekly", "every_30_minutes")
NODES = 20

#: The child that parses the folder or file in argv[1]: prints the DAG count, the import errors
#: and Airflow's own parse duration of each file, as JSON.
PARSE = (
    "import json, sys; from pathlib import Path; "
    "from airflow.dag_processing.dagbag import DagBag; b = DagBag(dag_folder=sys.argv[1]); "
    "print(json.dumps({'dags': len(b.dags), 'errors': {k: str(v)[-500:] "
    "for k, v in b.import_errors.items()}, 'files': "
    "{(Path(s.file).name or Path(sys.argv[1]).name): "
    "s.duration.total_seconds() for s in b.dagbag_stats}}))"
)
TARGET = 0.5  # seconds our DAG files may add to a dag-processor parse of N resources
TASK_DAG = 7  # the resource whose DAG the task-start parse builds


def catalog_text(resources: int) -> str:
    """A catalog of ``resources`` table resources over 20 PostgreSQL nodes, mixed schedules."""
    nodes = "\n".join(
        f"  - {{name: fe_{i}, kind: postgresql, connection: {{env: FE_{i}}}}}" for i in range(NODES)
    )
    items = "\n".join(
        textwrap.dedent(f"""\
          - code: "R{i:04d}"
            name: resource {i}
            kind: table
            provider: fe_{i % NODES}
            share: unconditional
            update_cycle: {CYCLES[i % len(CYCLES)]}
            source: {{table: t{i}}}
            primary_key: [id]
            fields:
              - {{name: id, type: bigint, nullable: false}}
              - {{name: name, type: varchar, length: 100}}
              - {{name: updated_at, type: timestamp}}
        """)
        for i in range(resources)
    )
    return f"version: 1\nnodes:\n{nodes}\nresources:\n{textwrap.indent(items, '  ')}"


def airflow_env(home: Path) -> dict[str, str]:
    """An Airflow of its own in ``home`` (migrated once), reading this repository's DAGs."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "EXCHANGE_"))}
    env = {
        **base,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "dags" / "plugins"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    }
    done = subprocess.run(
        [str(AIRFLOW), "db", "migrate"], env=env, capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        raise SystemExit(f"airflow db migrate failed:\n{done.stderr[-3000:]}")
    return env


@dataclass
class Command:
    """One timed command: its label, what the child parses, its environment, and each counted
    run's wall and CPU seconds and Airflow's per-file parse durations."""

    label: str
    target: Path
    env: dict[str, str]
    dags: int  # the DAG count its parse must report
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    files: list[dict[str, float]] = field(default_factory=list)

    def once(self) -> tuple[float, float, dict[str, float]]:
        """One whole process, from its start to its exit: wall and CPU (user + system)
        seconds and the per-file durations; its parse checked."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", PARSE, str(self.target)],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        seconds = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        if done.returncode != 0:
            raise SystemExit(f"{self.label} failed:\n{done.stderr[-3000:]}")
        got = json.loads(done.stdout.strip().splitlines()[-1])
        if got["errors"] or got["dags"] != self.dags:
            raise SystemExit(f"{self.label}: {got['dags']} DAGs, not {self.dags}: {got}")
        return seconds, cpu, got["files"]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def ratio(a: list[float], b: list[float]) -> float:
    """The median of the round-by-round ratios a/b."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def added(a: list[float], b: list[float]) -> float:
    """The median of the round-by-round differences a - b."""
    return statistics.median(x - y for x, y in zip(a, b, strict=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--resources", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="exchange-bench-dag-parse-") as tmp:
        measure(Path(tmp), args.resources, args.repeat)


def measure(home: Path, n: int, repeat: int) -> None:
    print("migrating an Airflow metadata DB ...", flush=True)
    env = airflow_env(home / "airflow")
    catalogs = {}
    for size in (n, 1):
        catalogs[size] = home / f"catalog_{size}.yaml"
        catalogs[size].write_text(catalog_text(size), encoding="utf-8")
    empty = home / "no_dags"
    empty.mkdir()
    dags = ROOT / "dags"
    big = Command(
        f"parse {n} resources", dags, {**env, "EXCHANGE_CATALOG": str(catalogs[n])}, n + 1
    )
    one = Command("parse 1 resource", dags, {**env, "EXCHANGE_CATALOG": str(catalogs[1])}, 2)
    task = Command(
        f"task start (1 DAG of {n})",
        dags / "exchange_dags.py",
        {
            **env,
            "EXCHANGE_CATALOG": str(catalogs[n]),
            "_AIRFLOW_PARSING_CONTEXT_DAG_ID": f"exchange_R{TASK_DAG:04d}",
        },
        1,
    )
    bare = Command("baseline: DagBag of no DAGs", empty, env, 0)
    commands = (big, one, task, bare)
    for c in commands:  # the warm-up round: page cache, bytecode, first-run costs
        c.once()
    for k in range(repeat):
        for c in commands:
            wall, cpu, files = c.once()
            c.seconds.append(wall)
            c.cpu.append(cpu)
            c.files.append(files)
        print(f"round {k + 1}: " + ", ".join(f"{c.label} {c.seconds[-1]:.2f} s" for c in commands),
              flush=True)  # fmt: skip
    report(commands, big, one, task, bare, n)
    catalog_read(catalogs[n], repeat, n)


def report(
    commands: tuple[Command, ...], big: Command, one: Command, task: Command, bare: Command, n: int
) -> None:
    import airflow

    print()
    print(
        f"# DAG parse, whole processes, {len(big.seconds)} rounds, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, Airflow {airflow.__version__}"
    )
    print(
        "| command | wall s (median) | min | max | CPU s (median) | added to baseline, wall / CPU |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for c in commands:
        extra = (
            f"{added(c.seconds, bare.seconds):+.2f} / {added(c.cpu, bare.cpu):+.2f} s"
            if c is not bare
            else ""
        )
        print(
            f"| {c.label} | {c.median:.2f} | {min(c.seconds):.2f} | {max(c.seconds):.2f} | "
            f"{statistics.median(c.cpu):.2f} | {extra} |"
        )
    print()
    print("ratios to the baseline (median of the rounds' ratios), wall and CPU:")
    for c in (big, one, task):
        print(
            f"  {c.label} / {bare.label}: {ratio(c.seconds, bare.seconds):.2f} × wall, "
            f"{ratio(c.cpu, bare.cpu):.2f} × CPU"
        )
    per = (statistics.median(big.cpu) - statistics.median(one.cpu)) / max(n - 1, 1) * 1000
    print(f"  CPU a resource beyond the first: {per:.1f} ms")
    print("Airflow's own parse duration of each file (median, in the parsing process):")
    for c in (big, task):
        names = sorted({name for files in c.files for name in files})
        each = ", ".join(
            f"{name} {statistics.median(f.get(name, 0.0) for f in c.files):.2f} s" for name in names
        )
        print(f"  {c.label}: {each}")
    ours = added(big.seconds, bare.seconds)
    verdict = "met" if ours <= TARGET else "missed"
    print(
        f"TARGET what our DAG files add to a parse of {n} resources: {ours:.2f} s wall "
        f"(≤ {TARGET} s) {verdict}"
    )


def catalog_read(path: Path, repeat: int, n: int) -> None:
    """The catalog read alone, in this process: the old double pure-Python read beside
    ``load_catalog`` (the median of ``repeat`` runs each, after one that is not counted)."""
    import yaml

    from exchange.catalog import load_catalog

    text = path.read_text(encoding="utf-8")

    def old() -> None:
        yaml.compose(text, Loader=yaml.SafeLoader)
        yaml.safe_load(text)

    def new() -> None:
        load_catalog(path)

    timed = {}
    for label, fn in (("pure-Python compose + safe_load (the old read)", old),
                      ("load_catalog (read, validate, model)", new)):  # fmt: skip
        fn()
        runs = []
        for _ in range(repeat):
            started = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - started)
        timed[label] = statistics.median(runs)
    print(f"catalog of {n} resources, in this process (libyaml: {yaml.__with_libyaml__}):")
    for label, seconds in timed.items():
        print(f"  {label}: {seconds:.3f} s")
    old_s, new_s = timed.values()
    print(f"  load_catalog / the old YAML read alone: {new_s / old_s:.2f} ×")


if __name__ == "__main__":
    main()
