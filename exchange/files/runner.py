"""All steps of one file or folder run in this process (what ``exchange run`` does for files).

plan → pull once → (tabular files with table subscribers: to_table → validate → load each)
→ push to each file subscriber → record. Airflow can call the same steps one task at a time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from exchange.files.plan import plan_files
from exchange.files.pull import pull, pulled_files
from exchange.files.push import push_subscriber, record_files
from exchange.pipeline.load import load_subscriber
from exchange.pipeline.plan import run_dir_of
from exchange.pipeline.record import RunSummary, finish
from exchange.pipeline.validate import validate
from exchange.workspace import Workspace

if TYPE_CHECKING:
    from exchange.pipeline.runner import Reporter


def load_tables(ws: Workspace, run_id: str, reporter: Reporter) -> None:
    """Deliver a tabular file run's rows to its table subscribers (the table load path)."""
    from exchange.files.tabular import to_table

    _, rd = run_dir_of(ws, run_id)
    plan = rd.plan()
    tables = [d for d in plan["deliveries"] if d.get("kind") == "table"]
    if not tables:
        return
    to_table(ws, run_id, {d["subscription_id"] for d in tables})
    validated = validate(ws, run_id)
    if getattr(validated, "held", None):
        return  # quality held the run back: nothing goes out, the files stay owed
    pulled = pulled_files(rd)
    parsed = set(rd.read_done("extract").get("files", []))
    for d in tables:
        sid = d["subscription_id"]
        result = load_subscriber(
            ws, run_id, sid, reporter.task(f"load {d['node']}.{d['table']}", validated.valid)
        )
        reporter.delivered(result)
        if result.status == "delivered":
            mine = [
                pulled[f["path"]]
                for f in plan["files"]
                if sid in f["subscribers"] and f["path"] in parsed
            ]
            record_files(ws, run_id, sid, mine)


def run_files(
    ws: Workspace, resource_code: str, *, full: bool = False, reporter: Reporter | None = None
) -> RunSummary:
    """Plan (or resume), pull once, deliver to every subscriber, record."""
    from exchange.pipeline.runner import QuietReporter

    rep = reporter or QuietReporter()
    run_id = plan_files(ws, resource_code, full=full)
    _, rd = run_dir_of(ws, run_id)
    plan = rd.plan()
    total = sum(f["size"] for f in plan["files"])
    pull(ws, run_id, rep.task(f"pull {resource_code} (bytes)", total))
    load_tables(ws, run_id, rep)
    for d in plan["deliveries"]:
        if d.get("kind") != "files":
            continue
        sid = d["subscription_id"]
        mine = sum(f["size"] for f in plan["files"] if sid in f["subscribers"])
        result = push_subscriber(
            ws, run_id, sid, rep.task(f"push {d['node']}:{d['table']} (bytes)", mine)
        )
        rep.delivered(result)
    return finish(ws, run_id)
