"""The CLI's fixed costs as a user meets them: whole processes, spawn to exit, beside the floor.

``.venv/bin/python -m bench.startup [--repeat 10] [--home DIR] [--rows N] [--as-is]`` builds the
demo store once (``exchange demo`` in ``--home``, a scratch directory by default: its SQLite
front-end DBs, catalog and metadata store), then times, in the same script and one after the
other, each command as a fresh process (``--repeat`` times, median):

* the floor: ``python -c pass`` with the same interpreter (interpreter start, site);
* ``exchange --help`` (target 0.3 s);
* ``exchange status`` on the demo store (target 0.5 s);
* a no-op ``exchange run`` of the demo's table resource: an incremental run whose source has
  no new rows since the last run (target 0.5 s; one warm-up run first makes it so).

``--against DIR`` times the same commands, taking turns, with another tree's packages (an
earlier commit's, from ``git archive``) on the same store, and prints this tree's ratio to it:
on a busy machine the ratio holds where the seconds do not.

Each line prints the median, the fastest, the ratio to the floor, the CPU seconds and peak RSS
of the process (``os.wait4``) and whether the target is met (by the median wall clock). The
project's own modules are byte-compiled first, as an installed package has them (an editable
install under ``PYTHONDONTWRITEBYTECODE`` would compile ~90 of them again in every process);
``--as-is`` measures the tree as it is.
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EXCHANGE = str(BIN / "exchange")
RESOURCE = "410400-SCJG-0001"  # the demo's table resource
PACKAGES = ("exchange", "connectors", "quality", "schemas")


@dataclass(frozen=True)
class Timed:
    """One command's runs: wall and CPU (user + system) seconds of each, the largest peak RSS
    (MB)."""

    label: str
    seconds: list[float]
    cpu: list[float]
    peak_mb: float

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def once(argv: Sequence[str], env: Mapping[str, str]) -> tuple[float, float, float]:
    """Wall seconds from spawn to exit, CPU seconds and the process's peak RSS in MB; a failing
    command stops the benchmark with its output."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        list(argv), env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} exited {proc.returncode}:\n{out.decode(errors='replace')}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def timed(
    label: str, argv: Sequence[str], envs: Sequence[Mapping[str, str]], repeat: int
) -> list[Timed]:
    """``argv`` in each environment, taking turns (the machine's load falls on all alike)."""
    runs: list[list[tuple[float, float, float]]] = [[] for _ in envs]
    for _ in range(repeat):
        for env, out in zip(envs, runs, strict=True):
            out.append(once(argv, env))
    return [
        Timed(label, [s for s, _, _ in out], [c for _, c, _ in out], max(m for _, _, m in out))
        for out in runs
    ]


def demo_env(home: Path) -> dict[str, str]:
    """The environment of a user working on the demo store (README: Demo)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_")}
    env["EXCHANGE_HOME"] = str(home)
    env["EXCHANGE_CATALOG"] = str(home / "catalog.yaml")
    return env


def build_demo(home: Path, rows: int, env: Mapping[str, str]) -> None:
    if (home / "catalog.yaml").exists() and (home / "exchange.db").exists():
        print(f"demo store: {home} (kept from an earlier run)")
        return
    print(f"demo store: building {rows:,} rows in {home} ...", flush=True)
    once([EXCHANGE, "demo", "--rows", str(rows), "--home", str(home)], env)


def compile_project() -> int:
    """Byte-compile the project's packages (what installing a wheel does); the file count."""
    for package in PACKAGES:
        compileall.compile_dir(REPO / package, quiet=1)
    return sum(1 for p in PACKAGES for _ in (REPO / p).rglob("*.py"))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--rows", type=int, default=100_000, help="rows of the demo's provider table")
    ap.add_argument("--home", type=Path, help="the demo store (kept); default: a scratch dir")
    ap.add_argument("--as-is", action="store_true", help="do not byte-compile the project first")
    ap.add_argument(
        "--against",
        type=Path,
        help="another source tree of the packages (git archive REV exchange connectors quality "
        "schemas | tar -x -C DIR), timed in turn with this one on the same store",
    )
    args = ap.parse_args(argv)

    scratch = None if args.home else Path(tempfile.mkdtemp(prefix="exchange-startup-"))
    home = (args.home if scratch is None else scratch / "demo").resolve()
    env = demo_env(home)
    envs = [env]
    if args.against:  # its packages first on the path, before this editable install's
        envs.append({**env, "PYTHONPATH": str(args.against.resolve())})
        compileall.compile_dir(args.against, quiet=1)
    load = os.getloadavg()
    try:
        if args.as_is:
            print("project bytecode: as the tree has it (--as-is)")
        else:
            print(f"project bytecode: compiled ({compile_project()} modules), as installed")
        build_demo(home, args.rows, env)
        once([EXCHANGE, "run", RESOURCE], env)  # the warm-up: nothing new after this one
        cases = [
            ("python -c pass (floor)", [sys.executable, "-c", "pass"], None),
            ("exchange --help", [EXCHANGE, "--help"], 0.3),
            ("exchange status", [EXCHANGE, "status"], 0.5),
            (f"exchange run {RESOURCE} (no-op)", [EXCHANGE, "run", RESOURCE], 0.5),
        ]
        results = [(timed(label, cmd, envs, args.repeat), target) for label, cmd, target in cases]
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)

    floor = results[0][0][0].median
    print(
        f"\nwhole process, spawn to exit, median of {args.repeat} (fastest); CPU = user + system "
        f"seconds (median); peak RSS. Load average before {load[0]:.1f}, after "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: above the core count the wall "
        "clock measures the machine's queue, and the CPU column is the process's own cost."
    )
    print(
        f"{'command':42} {'median s':>8} {'fastest':>8} {'× floor':>7} {'CPU s':>6} "
        f"{'RSS MB':>6}  target"
    )
    for (t, *other), target in results:
        verdict = (
            "" if target is None else f"≤ {target} s " + ("met" if t.median <= target else "missed")
        )
        print(
            f"{t.label:42} {t.median:8.3f} {min(t.seconds):8.3f} {t.median / floor:7.1f} "
            f"{statistics.median(t.cpu):6.3f} {t.peak_mb:6.0f}  {verdict}"
        )
        for o in other:
            print(
                f"{'  against ' + str(args.against):42} {o.median:8.3f} {min(o.seconds):8.3f} "
                f"{o.median / floor:7.1f} {statistics.median(o.cpu):6.3f} {o.peak_mb:6.0f}  "
                f"this tree: {t.median / o.median:.2f}× its wall, "
                f"{statistics.median(t.cpu) / statistics.median(o.cpu):.2f}× its CPU"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
