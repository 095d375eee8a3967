"""The benchmark measures a whole process as a user waits for it: its peak memory counts every
process of its tree, and its wall clock is split into the run's steps by the run's own record."""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from bench.one_run import Measured, measure_process, run_steps

HOLD = "import time; b = bytearray({mb} * 2**20); b[::4096] = b'x' * len(b[::4096]); {then}"


def test_the_peak_memory_of_a_process_tree_counts_a_child_running_beside_its_parent() -> None:
    child = HOLD.format(mb=80, then="time.sleep(3.0)")  # long enough for a starved sampler
    parent = HOLD.format(
        mb=80,
        then=f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}])",
    )
    # Measured from a small interpreter of its own, as the bench is run: a child forked from
    # pytest (a GB by the end of the suite) starts with pytest's high-water mark.
    probe = (
        "import json, os, sys; from bench.one_run import measure_process; "
        "m = measure_process([sys.executable, '-c', sys.argv[1]], os.environ); "
        "print(json.dumps([m.returncode, m.children, m.self_peak_mb, m.tree_peak_mb, m.peak_mb]))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(
        [sys.executable, "-c", probe, parent], env=env, capture_output=True, text=True,
        check=True, timeout=120,
    )  # fmt: skip
    returncode, children, self_peak_mb, tree_peak_mb, peak_mb = json.loads(done.stdout)
    assert returncode == 0, done.stderr
    assert children == 1
    assert self_peak_mb < 150  # the kernel's high-water mark: the larger one process
    assert tree_peak_mb >= 160  # both at once
    assert peak_mb == tree_peak_mb


def test_a_failing_command_is_measured_with_its_exit_code_and_output() -> None:
    m = measure_process([sys.executable, "-c", "print('no'); raise SystemExit(3)"], os.environ)
    assert m.returncode == 3
    assert "no" in m.output


def _store(home: Path, staging: Path, t0: dt.datetime) -> None:
    def at(s: float) -> str:
        return (t0 + dt.timedelta(seconds=s)).isoformat(sep=" ")

    with sqlite3.connect(home / "exchange.db") as db:
        db.executescript(
            "CREATE TABLE runs (id, resource_code, started_at, finished_at, staging_dir);"
            "CREATE TABLE subscriptions (id, subscriber_node, target_table);"
            "CREATE TABLE deliveries (run_id, subscription_id, seconds, finished_at);"
        )
        db.execute("INSERT INTO runs VALUES ('r1', 'R', ?, ?, ?)", (at(1.0), at(9.0), str(staging)))
        db.execute("INSERT INTO subscriptions VALUES (1, 'pg', 't1'), (2, 'maria', 't2')")
        db.execute("INSERT INTO deliveries VALUES ('r1', 1, 2.0, ?), ('r1', 2, 3.0, ?)",
                   (at(7.0), at(8.5)))  # fmt: skip


def test_the_wall_clock_is_split_into_steps_by_the_runs_record(tmp_path: Path) -> None:
    t0 = dt.datetime(2026, 12, 1, 12, 0, 0)
    epoch = t0.replace(tzinfo=dt.UTC).timestamp()
    staging = tmp_path / "runs" / "R" / "r1"
    staging.mkdir(parents=True)
    for name, s in (("plan.json", 0.9), ("extract.done.json", 4.0), ("validate.done.json", 5.0)):
        (staging / name).write_text("{}")
        os.utime(staging / name, (epoch + s, epoch + s))
    _store(tmp_path, staging, t0)
    m = Measured(seconds=10.0, started=epoch, ended=epoch + 10.0, self_peak_mb=200,
                 tree_peak_mb=0, children=0, samples=[(epoch + 4.5, 150.0)])  # fmt: skip

    steps = {s.name: round(s.seconds, 3) for s in run_steps(tmp_path, "R", m)}

    assert steps == {
        "start-up + plan": 0.9,
        "store the plan": 0.1,
        "extract": 3.0,
        "validate": 1.0,
        "load pg.t1": 2.0,
        "load maria.t2": 3.0,
        "record": 0.5,
        "exit": 1.0,
    }
    assert m.peak_between(epoch + 4.0, epoch + 5.0) == 150.0
