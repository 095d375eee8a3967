"""One exchange run in a fresh process, for the benchmarks, measured two ways.

* ``measure_process`` (imported by ``bench.run``): ``exchange run CODE`` as a user types it.
  The wall clock runs from spawn to exit (interpreter start, imports, workspace, the run, its
  output, exit). Peak RSS is the larger of the kernel's high-water mark of the process
  (``os.wait4``: exact, no sampling gap, but only the largest single process of the tree) and
  the sum of the tree's RSS (the process and every descendant, from /proc) sampled every 50 ms
  (the only way to see children running side by side). ``run_steps`` then splits that wall
  clock into steps from the run's own record (the store's run and delivery rows, the staged
  done files), with the peak sampled RSS within each.
* ``python -m bench.one_run HOME CATALOG CODE [--full]``: the clock starts after the imports
  and stops when the run is recorded (the engine's own work: the figure of the earlier
  tables); prints seconds and peak RSS as JSON.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SAMPLE_S = 0.05


@dataclass
class Measured:
    """What one whole process took: wall seconds, peak RSS, and its RSS over time."""

    seconds: float
    started: float  # epoch seconds at spawn
    ended: float  # epoch seconds at exit
    self_peak_mb: float  # os.wait4's ru_maxrss
    tree_peak_mb: float  # the largest sampled sum over the process tree
    children: int  # the most descendants seen at once
    samples: list[tuple[float, float]] = field(default_factory=list)  # (epoch, tree MB)
    returncode: int = 0
    output: str = ""

    @property
    def peak_mb(self) -> float:
        return max(self.self_peak_mb, self.tree_peak_mb)

    def peak_between(self, start: float, end: float) -> float:
        """The peak sampled tree RSS in [start, end] (the nearest sample for a short step)."""
        inside = [mb for t, mb in self.samples if start <= t <= end]
        if inside:
            return max(inside)
        before = [mb for t, mb in self.samples if t <= end]
        return before[-1] if before else 0.0


PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm", encoding="ascii") as fh:
        return int(fh.read().split()[1]) * PAGE_MB


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as fh:
            kids += [int(k) for k in fh.read().split()]
    return kids


def _tree_mb(pid: int) -> tuple[float, int]:
    """The RSS of ``pid`` and all its descendants, in MB, and how many descendants.

    Read from /proc directly: psutil's children() scans every process of the machine (~4 ms
    of CPU a sample with a hundred processes), which would weigh on the measured run."""
    total, seen, todo = 0.0, 0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += _rss_mb(p)
            kids = _children(p)
        except OSError:  # it ended meanwhile
            continue
        seen += len(kids)
        todo += kids
    return total, seen


def measure_process(cmd: Sequence[str], env: Mapping[str, str]) -> Measured:
    """Run ``cmd`` to its end in a fresh process and measure it (output kept, not parsed)."""
    samples: list[tuple[float, float]] = []
    children = 0
    done = threading.Event()
    # Output to a file, not a pipe: nothing to drain while the main thread waits in wait4.
    with tempfile.TemporaryFile() as out:
        started = time.time()
        t0 = time.perf_counter()
        child = subprocess.Popen(list(cmd), env=dict(env), stdout=out, stderr=subprocess.STDOUT)

        def sample() -> None:
            nonlocal children
            while not done.is_set():
                mb, kids = _tree_mb(child.pid)
                if mb:
                    samples.append((time.time(), mb))
                    children = max(children, kids)
                done.wait(SAMPLE_S)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - t0
        ended = time.time()
        child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        done.set()
        sampler.join()
        out.seek(0)
        output = out.read().decode("utf-8", "replace")
    return Measured(
        seconds=seconds,
        started=started,
        ended=ended,
        self_peak_mb=usage.ru_maxrss / 1024,  # Linux: KiB
        tree_peak_mb=max((mb for _, mb in samples), default=0.0),
        children=children,
        samples=samples,
        returncode=child.returncode,
        output=output,
    )


@dataclass(frozen=True)
class Step:
    name: str
    start: float  # epoch seconds
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


def _epoch(stored: str) -> float:
    """A naive-UTC time as the store keeps it, as epoch seconds."""
    return dt.datetime.fromisoformat(stored).replace(tzinfo=dt.UTC).timestamp()


def run_steps(home: Path, code: str, m: Measured) -> list[Step]:
    """The steps of ``code``'s latest run in the store under ``home``, on ``m``'s clock.

    start-up + plan: spawn → the plan file (interpreter, imports, catalog, store, lease, the
    plan's source queries: the engine records no time between them); store the plan: → the run
    row; extract / validate: → their done files; to the first load: → the first delivery's
    start; one line per delivery (its own seconds; deliveries to different nodes overlap);
    record: the last delivery → the run's end; exit: → the process's end (printing the
    summary, closing the store, interpreter exit)."""
    with sqlite3.connect(home / "exchange.db") as db:
        run_id, started, finished, staging = db.execute(
            "SELECT id, started_at, finished_at, staging_dir FROM runs"
            " WHERE resource_code = ? ORDER BY started_at DESC LIMIT 1",
            (code,),
        ).fetchone()
        deliveries = db.execute(
            "SELECT s.subscriber_node, s.target_table, d.seconds, d.finished_at"
            " FROM deliveries d JOIN subscriptions s ON s.id = d.subscription_id"
            " WHERE d.run_id = ? ORDER BY d.finished_at",
            (run_id,),
        ).fetchall()
    staged = Path(staging)
    marks = [("store the plan", _epoch(started))]
    for name, path in (
        ("start-up + plan", staged / "plan.json"),
        ("extract", staged / "extract.done.json"),
        ("validate", staged / "validate.done.json"),
    ):
        if path.exists():
            marks.append((name, path.stat().st_mtime))
    marks.sort(key=lambda mark: mark[1])
    steps: list[Step] = []
    prev = m.started
    for name, t in marks:
        steps.append(Step(name, prev, t))
        prev = t
    last = marks[-1][1]
    loads = [
        Step(f"load {node}.{table}", _epoch(at) - float(seconds or 0.0), _epoch(at))
        for node, table, seconds, at in deliveries
    ]
    if loads and min(s.start for s in loads) > last:  # planning the deliveries, connecting
        steps.append(Step("to the first load", last, min(s.start for s in loads)))
    steps += loads
    last = max([last, *(s.end for s in loads)])
    if finished:
        steps.append(Step("record", last, _epoch(finished)))
        last = _epoch(finished)
    steps.append(Step("exit", last, m.ended))
    return steps


def main() -> None:
    from exchange.flow import run_resource
    from exchange.kernel.settings import Settings
    from exchange.workspace import Workspace

    home, catalog, code = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    full = "--full" in sys.argv[4:]
    ws = Workspace.open(catalog, Settings(home=home, db_url=f"sqlite:///{home / 'exchange.db'}"))
    started = time.perf_counter()
    summary = run_resource(ws, code, full=full)
    seconds = time.perf_counter() - started
    ws.close()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_mb": peak_mb,
                "status": summary.status,
                "extracted": summary.extracted,
                "failures": summary.failures,
            }
        )
    )


if __name__ == "__main__":
    main()
