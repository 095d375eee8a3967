"""A run planned earlier and delivered later asks again, at each delivery, whether the
subscriber may still receive it.

A failed run stays resumable for as long as it takes to fix the source; meanwhile an admin may
remove or suspend a subscription, its usage period may end, or the catalog may give its node to
another department. The resumed run (or an Airflow load task running after its plan task) must
then deliver nothing to it: the subscriber is recorded ``skipped`` with the reason, its target
untouched, and the run still succeeds for the others. Tables and files alike.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from exchange import orchestration as orch
from exchange.flow import run_resource
from exchange.kernel.clock import today
from exchange.store.models import AuditEvent, Delivery, Run, Subscription
from exchange.workflow import service as svc
from exchange.workflow.grants import add_subscription
from exchange.workflow.users import Principal
from exchange.workspace import Workspace
from tests import workflow_city

UNTIL = dt.date.today() + dt.timedelta(days=300)
ROOT = Path(__file__).resolve().parents[1]
FOLDER = "410400-SCJG-0002"  # the demo catalog's folder resource (market_files)
city = workflow_city.city  # the fixture: OPEN from SCJG's market_fe to TAX's and HRSS's nodes
files_city = workflow_city.files_city  # the folder resource and SWJ's and RSJ's file nodes


def rows_on(ws: Workspace, node_db: str) -> int:
    path = Path(ws.catalog.path).parent / node_db
    if not path.exists():
        return 0
    with sqlite3.connect(path) as db:
        found = db.execute("SELECT name FROM sqlite_master WHERE name = 'enterprise'").fetchone()
        return db.execute("SELECT count(*) FROM enterprise").fetchone()[0] if found else 0


def break_the_source(ws: Workspace, broken: bool) -> None:
    """The provider's table gone (the run fails at extract), or back."""
    names = ("enterprise", "enterprise_away") if broken else ("enterprise_away", "enterprise")
    with sqlite3.connect(Path(ws.catalog.path).parent / "market.db") as db:
        db.execute(f"ALTER TABLE {names[0]} RENAME TO {names[1]}")


def failed_run(ws: Workspace) -> str:
    """A run of OPEN planned for every subscriber that fails at extract; its id."""
    break_the_source(ws, broken=True)
    with pytest.raises(Exception, match="enterprise"):
        run_resource(ws, "OPEN")
    with ws.store.session() as s:
        run_id, status = s.execute(sa.select(Run.id, Run.status)).one()
    assert status == "failed"
    return str(run_id)


def delivery(ws: Workspace, run_id: str, subscription_id: int) -> tuple[str, str | None]:
    with ws.store.session() as s:
        row = s.execute(
            sa.select(Delivery.status, Delivery.error).where(
                Delivery.run_id == run_id, Delivery.subscription_id == subscription_id
            )
        ).one()
        return row.status, row.error


def expire(ws: Workspace, subscription_id: int) -> None:
    """The usage period ended yesterday (the daily tick has not marked it expired yet)."""
    with ws.store.session() as s:
        sub = s.get(Subscription, subscription_id)
        assert sub is not None
        sub.valid_until = today() - dt.timedelta(days=1)


CHANGES: dict[str, tuple[Callable[[Workspace, Principal, int], object], str]] = {
    "removed": (
        lambda ws, admin, sid: svc.remove(ws, admin, sid, "added for the wrong bureau"),
        "is removed",
    ),
    "suspended": (
        lambda ws, admin, sid: svc.admin_step(ws, admin, sid, "suspend", "contract lapsed"),
        "is suspended",
    ),
    "expired": (lambda ws, admin, sid: expire(ws, sid), "usage period ended on"),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_resumed_table_run_delivers_nothing_to_a_subscription_no_longer_allowed(
    city: tuple[Workspace, dict[str, Principal]], change: str
) -> None:
    ws, people = city
    tax = add_subscription(ws, "OPEN", "tax_fe", None, UNTIL, department="TAX")
    hrss = add_subscription(ws, "OPEN", "hrss_fe", None, UNTIL, department="HRSS")
    run_id = failed_run(ws)
    act, why = CHANGES[change]
    act(ws, people["admin"], tax.id)
    break_the_source(ws, broken=False)

    summary = run_resource(ws, "OPEN")

    assert summary.run_id == run_id  # the same run, resumed with its old plan
    assert summary.status == "succeeded", summary.failures
    assert rows_on(ws, "tax.db") == 0
    assert rows_on(ws, "hrss.db") == 40
    status, error = delivery(ws, run_id, tax.id)
    assert status == "skipped"
    assert error is not None and why in error and f"subscription {tax.id}" in error
    assert delivery(ws, run_id, hrss.id)[0] == "delivered"
    with ws.store.session() as s:
        kinds = s.scalars(
            sa.select(AuditEvent.kind).where(AuditEvent.subject == f"subscription:{tax.id}")
        ).all()
    assert "delivery.skipped" in kinds


def move_node(ws: Workspace, node: str, to: str) -> Workspace:
    """The catalog now gives ``node`` to department ``to``; the workspace reopened on it."""
    path = Path(ws.catalog.path)
    doc = yaml.safe_load(path.read_text("utf-8"))
    next(n for n in doc["nodes"] if n["name"] == node)["department"] = to
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), "utf-8")
    return Workspace.open(path, ws.settings)


def test_a_resumed_table_run_skips_a_node_now_of_another_department_naming_both(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, _ = city
    tax = add_subscription(ws, "OPEN", "tax_fe", None, UNTIL, department="TAX")
    hrss = add_subscription(ws, "OPEN", "hrss_fe", None, UNTIL, department="HRSS")
    run_id = failed_run(ws)
    break_the_source(ws, broken=False)
    moved = move_node(ws, "tax_fe", "HRSS")
    try:
        summary = run_resource(moved, "OPEN")
    finally:
        moved.close()

    assert summary.run_id == run_id and summary.status == "succeeded"
    assert rows_on(ws, "tax.db") == 0
    assert rows_on(ws, "hrss.db") == 40
    status, error = delivery(ws, run_id, tax.id)
    assert status == "skipped"
    assert error == (
        "not delivered: node 'tax_fe' is the front-end of 人力资源和社会保障局 (HRSS), not of "
        f"税务局 (TAX), the department of subscription {tax.id}"
    )
    assert delivery(ws, run_id, hrss.id)[0] == "delivered"


# -- files, through the Airflow steps (the load task runs after the plan task) ---------------


def planned_and_pulled(ws: Workspace) -> str:
    """The plan and extract tasks of a folder run done; its id."""
    catalog = ws.catalog.path
    run_id = str(orch.plan_step(catalog, FOLDER)["run_id"])
    orch.extract_step(catalog, run_id)
    orch.validate_step(catalog, run_id)
    return run_id


def files_on(ws: Workspace, d: str) -> list[str]:
    return [p.name for p in (Path(ws.catalog.path).parent / "files" / d).rglob("*.pdf")]


@pytest.mark.parametrize("change", ["removed", "moved"])
def test_a_file_load_after_its_plan_delivers_nothing_to_a_subscription_no_longer_allowed(
    files_city: Workspace, change: str
) -> None:
    ws = files_city
    sub = add_subscription(ws, FOLDER, "tax_files", [], UNTIL, department="SWJ")
    run_id = planned_and_pulled(ws)
    if change == "removed":
        svc.remove(ws, Principal("admin", "admin"), sub.id, "added by mistake")
        why = f"subscription {sub.id} is removed"
    else:
        move_node(ws, "tax_files", "RSJ").close()
        why = "node 'tax_files' is the front-end of 人力资源和社会保障局 (RSJ), not of 税务局 (SWJ)"

    loaded = orch.load_step(ws.catalog.path, run_id, sub.id)  # skipped: no DeliveryFailed
    recorded = orch.record_step(ws.catalog.path, run_id)

    assert loaded["rows"] == 0
    assert recorded["status"] == "succeeded", recorded
    assert files_on(ws, "tax") == []
    status, error = delivery(ws, run_id, sub.id)
    assert status == "skipped" and error is not None and why in error
