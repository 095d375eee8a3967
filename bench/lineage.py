"""What OpenLineage emission costs a whole run: ``exchange run`` of the demo's registry table
(SQLite provider, two SQLite subscribers with different grants) with lineage off and on (the
file transport), each trial a full run in a fresh process and a fresh home.

    python -m bench.lineage [--rows 1000000] [--repeat 3]

Prints the median seconds of each, the events written, and the overhead (target: <= 2 %).
Off and on alternate (off first, then on first), so that a drift of the machine and the
writes of the run before weigh on both alike. The cost of the two events alone is timed too,
in a fresh process on the first home with lineage on: the run-to-run noise of a busy machine
is larger than it.
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
from importlib import resources
from pathlib import Path

from exchange.demo.run import GRANTS, RESOURCE, create_provider
from exchange.kernel.settings import Settings
from exchange.workflow.grants import add_subscription
from exchange.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]


def prepare(home: Path, provider: Path) -> Path:
    """A fresh home: the demo's catalog, the provider's DB, the two subscriptions."""
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    catalog = home / "catalog.yaml"
    text = resources.files("schemas").joinpath("examples/demo.yaml").read_text(encoding="utf-8")
    catalog.write_text(text, encoding="utf-8")
    shutil.copy(provider, home / "provider.db")
    settings = Settings(home=home, db_url=f"sqlite:///{home / 'exchange.db'}")
    until = dt.date.today() + dt.timedelta(days=365)
    with Workspace.open(catalog, settings) as ws:
        for node, fields in GRANTS.items():
            add_subscription(
                ws, RESOURCE, node, fields, until, target_table="enterprise",
                department=ws.catalog.node(node).department,
            )  # fmt: skip
    return catalog


def one_run(home: Path, catalog: Path, lineage: bool) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENLINEAGE")}
    if lineage:
        env |= {
            "OPENLINEAGE__TRANSPORT__TYPE": "file",
            "OPENLINEAGE__TRANSPORT__LOG_FILE_PATH": str(home / "lineage.jsonl"),
            "OPENLINEAGE__TRANSPORT__APPEND": "true",
        }
    out = subprocess.run(
        [sys.executable, "-m", "bench.one_run", str(home), str(catalog), RESOURCE],
        cwd=home,  # no ./openlineage.yml of the checkout's: off means off
        env=env | {"PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    events = home / "lineage.jsonl"
    result["events"] = len(events.read_text().splitlines()) if events.exists() else 0
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-lineage-") as tmp:
        base = Path(tmp)
        provider = base / "provider.db"
        print(f"creating the provider with {args.rows:,} rows …", flush=True)
        create_provider(provider, args.rows)
        times: dict[bool, list[float]] = {False: [], True: []}
        events, emission = 0, 0.0
        for i in range(args.repeat):
            # Each pair in the other order than the last: the second run of a pair pays for
            # the first one's writes still being flushed to disk.
            for lineage in (False, True) if i % 2 == 0 else (True, False):
                home = base / f"home-{i}-{'on' if lineage else 'off'}"
                catalog = prepare(home, provider)
                got = one_run(home, catalog, lineage)
                assert got["status"] == "succeeded", got
                times[lineage].append(float(str(got["seconds"])))
                events = int(str(got["events"])) if lineage else events
                assert lineage or got["events"] == 0, "lineage off wrote events"
                print(
                    f"  run {i + 1} lineage {'on ' if lineage else 'off'}: "
                    f"{got['seconds']:.2f} s, {got['events']} events",
                    flush=True,
                )
                if lineage and i == 0:
                    emission = emission_seconds(home, catalog)
                shutil.rmtree(home, ignore_errors=True)
    off, on = statistics.median(times[False]), statistics.median(times[True])
    overhead = (on - off) / off * 100
    print(f"rows {args.rows:,}, median of {args.repeat}")
    print(f"lineage off: {off:.2f} s   on (file transport, {events} events): {on:.2f} s")
    print(f"ratio on/off: {on / off:.4f}   overhead: {overhead:+.2f} % (target <= 2 %)")
    print(
        f"emission alone (START + COMPLETE, median of {EMISSIONS}): {emission * 1000:.1f} ms "
        f"= {emission / off * 100:.3f} % of the run"
    )


EMISSIONS = 20


def emission_seconds(home: Path, catalog: Path) -> float:
    """What the run's two events cost to build and write, timed alone in a fresh process (the
    whole-run medians above carry the machine's noise, which is larger at this size)."""
    code = f"""
import statistics, time
from pathlib import Path
from exchange import lineage
from exchange.kernel.settings import Settings
from exchange.runs.handle import RunHandle
from exchange.store.models import Run
from exchange.workspace import Workspace
home = Path({str(home)!r})
db = f"sqlite:///{{home / 'exchange.db'}}"
ws = Workspace.open(Path({str(catalog)!r}), Settings(home=home, db_url=db))
with ws.store.session() as s:
    run_id = s.query(Run.id).one()[0]
run = RunHandle.open(ws, run_id)
lineage.run_started(ws, run); lineage.run_ended(ws, run_id)  # the client is made once a process
times = []
for _ in range({EMISSIONS}):
    t = time.perf_counter()
    lineage.run_started(ws, run)
    lineage.run_ended(ws, run_id)
    times.append(time.perf_counter() - t)
print(statistics.median(times))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENLINEAGE")} | {
        "OPENLINEAGE__TRANSPORT__TYPE": "file",
        "OPENLINEAGE__TRANSPORT__LOG_FILE_PATH": str(home / "again.jsonl"),
        "OPENLINEAGE__TRANSPORT__APPEND": "true",
        "PYTHONPATH": str(REPO),
    }
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=home, env=env, capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
