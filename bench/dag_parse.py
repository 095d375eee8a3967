"""What parsing the DAGs of a large catalog costs Airflow: the whole process that parses the DAGs
folder (``DagBag()``: interpreter start, imports, catalog load, DAG construction) for a catalog
of N table resources, against the same process for a 1-resource catalog and against a process
that only imports Airflow.

    .venv/bin/python -m bench.dag_parse [--resources 200] [--repeat 5]

The three commands run in turn (N, 1, import, N, 1, import, ...) after one warm-up round that
is not counted, so a machine whose speed drifts moves all three alike; each ratio is taken
round by round and its median printed, for wall seconds and for CPU seconds (user + system:
what a busy machine moves least). Every parse is checked: no import error and one DAG per
resource plus the housekeeping DAG. Airflow gets a home of its own (a migrated SQLite metadata
DB) and the repository's ``dags/``.
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

#: The child that parses: prints the DAG count and the import errors as JSON.
PARSE = (
    "import json; from airflow.dag_processing.dagbag import DagBag; b = DagBag(); "
    "print(json.dumps({'dags': len(b.dags), 'errors': {k: str(v)[-500:] "
    "for k, v in b.import_errors.items()}}))"
)
IMPORT = "import airflow"


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
    """One timed command: its label, its environment, and each counted run's wall seconds."""

    label: str
    code: str
    env: dict[str, str]
    dags: int | None = None  # the DAG count its parse must report, if it parses
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def once(self) -> tuple[float, float]:
        """One whole process, from its start to its exit: wall and CPU (user + system)
        seconds; its parse checked."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", self.code],
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
        if self.dags is not None:
            got = json.loads(done.stdout.strip().splitlines()[-1])
            if got["errors"] or got["dags"] != self.dags:
                raise SystemExit(f"{self.label}: {got['dags']} DAGs, not {self.dags}: {got}")
        return seconds, cpu

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def ratio(a: list[float], b: list[float]) -> float:
    """The median of the round-by-round ratios a/b."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


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
    big = Command(
        f"parse {n} resources", PARSE, {**env, "EXCHANGE_CATALOG": str(catalogs[n])}, n + 1
    )
    one = Command("parse 1 resource", PARSE, {**env, "EXCHANGE_CATALOG": str(catalogs[1])}, 2)
    bare = Command("import airflow", IMPORT, env)
    commands = (big, one, bare)
    for c in commands:  # the warm-up round: page cache, bytecode, first-run costs
        c.once()
    for k in range(repeat):
        for c in commands:
            wall, cpu = c.once()
            c.seconds.append(wall)
            c.cpu.append(cpu)
        print(f"round {k + 1}: " + ", ".join(f"{c.label} {c.seconds[-1]:.2f} s" for c in commands),
              flush=True)  # fmt: skip
    report(commands, big, one, bare, n)


def report(
    commands: tuple[Command, ...], big: Command, one: Command, bare: Command, n: int
) -> None:
    import airflow

    print()
    print(
        f"# DAG parse, whole processes, {len(big.seconds)} rounds, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, Airflow {airflow.__version__}"
    )
    print("| command | wall s (median) | min | max | CPU s (median) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for c in commands:
        print(
            f"| {c.label} | {c.median:.2f} | {min(c.seconds):.2f} | {max(c.seconds):.2f} | "
            f"{statistics.median(c.cpu):.2f} |"
        )
    per = (statistics.median(big.cpu) - statistics.median(one.cpu)) / max(n - 1, 1) * 1000
    print()
    print("ratios (median of the rounds' ratios), wall and CPU:")
    for a, b in ((big, one), (one, bare), (big, bare)):
        print(
            f"  {a.label} / {b.label}: {ratio(a.seconds, b.seconds):.2f} × wall, "
            f"{ratio(a.cpu, b.cpu):.2f} × CPU"
        )
    print(f"  CPU a resource beyond the first: {per:.1f} ms")


if __name__ == "__main__":
    main()
