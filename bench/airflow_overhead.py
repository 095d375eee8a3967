"""What a resource's run costs through Airflow (the scripted Celery stack) against ``exchange run``
of the same resource, both re-extracting everything (``full``), and where the difference goes.

    .venv/bin/python -m bench.airflow_overhead [--rows 1000000] [--repeat 3]

It brings up ``docker/local/stack.sh`` under a stack name of its own (api-server, scheduler,
dag-processor, triggerer and one Celery worker from the project's venv; PostgreSQL, MariaDB and
Redis on 127.0.0.1) with the sample city's ``--rows``-row enterprise registry delivered to two
subscribers (PostgreSQL and MariaDB), runs the DAG once to fill the targets (not counted), then,
round by round, a DAG run triggered over the REST API with ``full=true`` and an ``exchange run
--full`` whole process on the same catalog, store and targets; every round ends with the
stack's check that each subscriber holds the source projection. It brings the stack down at the
end, whatever happened.

For each DAG run, from Airflow's own timestamps: queued to end (the figure compared with the
``exchange run`` process, start-up included); the time no task of the run was running
(scheduling, Celery dispatch, the worker starting a task process); the time tasks ran, and of
it the fixed cost of a task: the ``subscribers`` task's duration (it reads one small JSON file,
so it is a task process's start-up, the DAG file's parse, its XCom pull and push) times the
six task levels of the DAG. What is left is the engine's work.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
STACK_SH = ROOT / "docker" / "local" / "stack.sh"
EXCHANGE = Path(sys.executable).with_name("exchange")
STACK = "airflow_exchange_bench"
ORDER = ("plan", "extract", "validate", "subscribers", "load", "record")
LEVELS = len(ORDER)  # the load tasks (one per subscriber) run side by side: one level
WAIT = 1800.0


def env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (comments and blank lines skipped), as the stack's shell reads them."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def stack(command: str, env: dict[str, str], timeout: float = 3600) -> None:
    done = subprocess.run(
        [str(STACK_SH), command], env=env, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise SystemExit(f"stack.sh {command} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")


def when(value: str | None) -> dt.datetime:
    if value is None:
        raise SystemExit("a task instance without its timestamps")
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass
class DagRun:
    """One DAG run's figures, in seconds, from Airflow's timestamps."""

    total: float  # queued to end
    idle: float  # no task of the run running
    busy: float  # some task running
    fixed: float  # one task's fixed cost (the subscribers task)
    tasks: dict[str, float]  # each task's duration


class Stack:
    """The running stack's REST API, logged in as its admin."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.api = env["AIRFLOW_API_URL"].rstrip("/")
        self.dag = f"exchange_{env['SAMPLE_RESOURCE']}"
        self.client = httpx.Client(timeout=60)

    def wait(self, what: str, probe: Any, every: float = 1.0) -> Any:
        deadline = time.monotonic() + WAIT
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = probe()
            except httpx.HTTPError as exc:
                last = exc
            else:
                if last:
                    return last
            time.sleep(every)
        raise SystemExit(f"timed out waiting for {what} (last: {last!r})")

    def login(self) -> None:
        self.wait("the api-server", lambda: self.client.get(f"{self.api}/api/v2/version"))
        password = json.loads(
            Path(self.env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).read_text()
        )["admin"]
        r = self.client.post(
            f"{self.api}/auth/token", json={"username": "admin", "password": password}
        )
        r.raise_for_status()
        self.client.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        self.wait(
            f"the DAG {self.dag}",
            lambda: self.client.get(f"{self.api}/api/v2/dags/{self.dag}").status_code == 200,
        )
        self.client.patch(
            f"{self.api}/api/v2/dags/{self.dag}", json={"is_paused": False}
        ).raise_for_status()

    def run(self, conf: dict[str, Any]) -> DagRun:
        """Trigger a DAG run, wait for it, and take its figures; it must succeed."""
        r = self.client.post(
            f"{self.api}/api/v2/dags/{self.dag}/dagRuns", json={"logical_date": None, "conf": conf}
        )
        r.raise_for_status()
        url = f"{self.api}/api/v2/dags/{self.dag}/dagRuns/{r.json()['dag_run_id']}"

        def ended() -> dict[str, Any] | None:
            doc: dict[str, Any] = self.client.get(url).json()
            return doc if doc["state"] in ("success", "failed") else None

        doc = self.wait("the DAG run to end", ended, every=0.5)
        tis = self.client.get(f"{url}/taskInstances").json()["task_instances"]
        if doc["state"] != "success":
            raise SystemExit(f"the DAG run failed: {[(t['task_id'], t['state']) for t in tis]}")
        return figures(doc, tis)


def figures(doc: dict[str, Any], tis: list[dict[str, Any]]) -> DagRun:
    """Queued to end, and how much of it some task ran (the union of the task intervals)."""
    start, end = when(doc["queued_at"]), when(doc["end_date"])
    spans = sorted((when(t["start_date"]), when(t["end_date"])) for t in tis)
    busy = 0.0
    reach = start
    for a, b in spans:
        if b > reach:
            busy += (b - max(a, reach)).total_seconds()
            reach = b
    total = (end - start).total_seconds()
    tasks = {
        t["task_id"] + (f"[{t['map_index']}]" if t["map_index"] >= 0 else ""): float(t["duration"])
        for t in tis
    }
    return DagRun(total, total - busy, busy, tasks["subscribers"], tasks)


def exchange_run(env: dict[str, str]) -> float:
    """``exchange run --full`` of the resource, the whole process, as an operator runs it."""
    started = time.perf_counter()
    done = subprocess.run(
        [str(EXCHANGE), "run", env["SAMPLE_RESOURCE"], "--full"],
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"exchange run failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return seconds


def verify(env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "docker" / "local" / "sample_city.py"), "verify"],
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    if done.returncode != 0 or done.stdout.count("equal to the source projection") != 2:
        raise SystemExit(f"the subscribers differ from the source:\n{done.stdout}{done.stderr}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "EXCHANGE_"))}
    base |= {"EXCHANGE_STACK": STACK, "SAMPLE_ROWS": str(args.rows)}
    state = ROOT / ".exchange" / "stacks" / STACK
    print(f"stack {STACK} up with {args.rows:,} rows ...", flush=True)
    try:
        stack("up", base)
        env = {**base, **env_file(ROOT / "docker" / "airflow.env"), **env_file(state / "stack.env")}
        measure(env, args.rows, args.repeat)
    finally:
        stack("down", base)


def measure(env: dict[str, str], rows: int, repeat: int) -> None:
    api = Stack(env)
    api.login()
    first = api.run({})  # the first delivery fills the targets: not counted
    verify(env)
    print(f"first DAG run (not counted): {first.total:.1f} s", flush=True)
    dags: list[DagRun] = []
    runs: list[float] = []
    for k in range(repeat):
        dags.append(api.run({"full": True}))
        verify(env)
        runs.append(exchange_run(env))
        verify(env)
        print(
            f"round {k + 1}: DAG run {dags[-1].total:.1f} s, exchange run {runs[-1]:.1f} s",
            flush=True,
        )
    report(dags, runs, rows)


def report(dags: list[DagRun], runs: list[float], rows: int) -> None:
    def med(values: list[float]) -> float:
        return statistics.median(values)

    total, run = med([d.total for d in dags]), med(runs)
    idle, busy, fixed = (
        med([d.idle for d in dags]),
        med([d.busy for d in dags]),
        med([d.fixed for d in dags]),
    )
    print()
    print(
        f"# Airflow (Celery, 1 worker) against exchange run, {rows:,} rows, full, "
        f"{len(runs)} rounds, {os.cpu_count()} cores; medians; every subscriber checked"
    )
    print("| | seconds | share of the DAG run |")
    print("| --- | ---: | ---: |")
    print(f"| exchange run --full (whole process) | {run:.1f} | |")
    print(f"| DAG run, queued to end | {total:.1f} | 100 % |")
    print(f"| no task running (scheduling, dispatch, process start) | {idle:.1f} | "
          f"{idle / total:.0%} |")  # fmt: skip
    print(f"| tasks running | {busy:.1f} | {busy / total:.0%} |")
    print(f"| of which fixed task cost ({LEVELS} levels × {fixed:.2f} s, subscribers task) | "
          f"{LEVELS * fixed:.1f} | {LEVELS * fixed / total:.0%} |")  # fmt: skip
    print(f"| of which the engine's work | {busy - LEVELS * fixed:.1f} | "
          f"{(busy - LEVELS * fixed) / total:.0%} |")  # fmt: skip
    print()
    names = sorted(
        {n for d in dags for n in d.tasks}, key=lambda n: (ORDER.index(n.split("[")[0]), n)
    )
    print("task durations (median): " + ", ".join(
        f"{n} {med([d.tasks[n] for d in dags if n in d.tasks]):.1f} s" for n in names))  # fmt: skip
    print(f"DAG run / exchange run: {ratio(dags, runs):.2f} ×")


def ratio(dags: list[DagRun], runs: list[float]) -> float:
    """The median of the round-by-round ratios."""
    return statistics.median(d.total / r for d, r in zip(dags, runs, strict=True))


if __name__ == "__main__":
    main()
