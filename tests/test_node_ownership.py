"""A department's front-end node receives only what was granted to that department.

The case a stranger hit: a requester of the tax bureau applied for an unconditional resource
naming the social-security bureau's node; the check compared the node's department with the
form's free-text department name (which said the other bureau's), so 50,052 rows with ID
numbers landed in a database that never asked for them. Here a requester of TAX tries to get
rows into HRSS's node (hrss_fe, hrss_files) by every path — the service, the CLI's ``apply``,
the REST API, the admin's ``subscription add`` for tables and files — and the exchange is run
after each: HRSS's node receives nothing, while TAX's own node does.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from exchange.api import create_app
from exchange.catalog.loader import load_catalog
from exchange.cli.app import app
from exchange.flow import run_resource
from exchange.kernel.errors import BadInput, CatalogError, Forbidden
from exchange.store.models import AuditEvent, Subscription
from exchange.workflow import service as svc
from exchange.workflow.application import Application
from exchange.workflow.grants import add_file_subscription, add_subscription
from exchange.workflow.users import Principal
from exchange.workspace import Workspace
from tests import workflow_city
from tests.workflow_setup import form, form_data, tokens

UNTIL = dt.date.today() + dt.timedelta(days=300)
ROOT = Path(__file__).resolve().parents[1]
# The other bureau's name as the stranger's form had it, its code, or nothing at all.
DEPARTMENT_NAMES = ["人力资源和社会保障局", "HRSS", None]


city = workflow_city.city  # the fixture (SQLite and PostgreSQL stores)
files_city = workflow_city.files_city
cli = workflow_city.cli


def rows_on(ws: Workspace, node_db: str) -> int:
    """How many rows a requester's front-end DB holds in the delivered table."""
    path = Path(ws.catalog.path).parent / node_db
    if not path.exists():
        return 0
    with sqlite3.connect(path) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return db.execute("SELECT count(*) FROM enterprise").fetchone()[0] if (
            "enterprise" in tables
        ) else 0  # fmt: skip


def subscriptions_on(ws: Workspace, node: str) -> list[int]:
    with ws.store.session() as s:
        return list(
            s.scalars(sa.select(Subscription.id).where(Subscription.subscriber_node == node))
        )


def the_strangers_form(department_name: str | None) -> dict[str, Any]:
    """TAX's requester asks for the unconditional resource on HRSS's node."""
    data = form_data("OPEN", "tax", node="hrss_fe", department_name=department_name)
    return {k: v for k, v in data.items() if v is not None}


def hrss_received_nothing(ws: Workspace) -> None:
    run_resource(ws, "OPEN")
    assert subscriptions_on(ws, "hrss_fe") == []
    assert rows_on(ws, "hrss.db") == 0


# -- every path ------------------------------------------------------------------------------


@pytest.mark.parametrize("department_name", DEPARTMENT_NAMES)
def test_a_requester_cannot_apply_for_another_departments_node(
    city: tuple[Workspace, dict[str, Principal]], department_name: str | None
) -> None:
    ws, people = city
    application = Application.model_validate(the_strangers_form(department_name))

    with pytest.raises((BadInput, Forbidden)) as refused:
        svc.apply(ws, people["tax"], application)

    assert "hrss_fe" in str(refused.value) or "department_name" in str(refused.value)
    hrss_received_nothing(ws)


def test_the_refusal_names_the_nodes_department_and_the_applicants(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    application = Application.model_validate(the_strangers_form(None))

    with pytest.raises(Forbidden) as refused:
        svc.apply(ws, people["tax"], application)

    assert str(refused.value) == (
        "node 'hrss_fe' is the front-end of 人力资源和社会保障局 (HRSS), not of 税务局 (TAX): "
        "name your department's own node"
    )


@pytest.mark.parametrize("department_name", DEPARTMENT_NAMES)
def test_cli_apply_cannot_target_another_departments_node(
    city: tuple[Workspace, dict[str, Principal]], department_name: str | None, tmp_path: Path
) -> None:
    ws, _ = city
    path = tmp_path / "form.yaml"
    path.write_text(yaml.safe_dump(the_strangers_form(department_name), allow_unicode=True))

    result = cli(ws, "subscription", "apply", "--form", str(path), "--as", "tax")

    assert isinstance(result.exception, (BadInput, Forbidden)), result.output
    hrss_received_nothing(ws)


@pytest.mark.parametrize("department_name", DEPARTMENT_NAMES)
def test_api_apply_cannot_target_another_departments_node(
    city: tuple[Workspace, dict[str, Principal]], department_name: str | None
) -> None:
    ws, _ = city
    token = tokens(ws)["tax"]
    with TestClient(create_app(ws), raise_server_exceptions=False) as client:
        r = client.post(
            "/subscriptions",
            json=the_strangers_form(department_name),
            headers={"Authorization": f"Bearer {token}"},
        )

    assert r.status_code in (400, 403, 422), r.text
    assert "hrss_fe" in r.text or "department_name" in r.text
    hrss_received_nothing(ws)


def test_an_admin_add_names_the_department_and_the_node_must_be_its(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, _ = city
    until = UNTIL.isoformat()

    wrong = cli(ws, "subscription", "add", "OPEN", "--node", "hrss_fe", "--department", "TAX",
                "--until", until)  # fmt: skip
    unnamed = cli(ws, "subscription", "add", "OPEN", "--node", "hrss_fe", "--until", until)
    unknown = cli(ws, "subscription", "add", "OPEN", "--node", "hrss_fe", "--department", "XX",
                  "--until", until)  # fmt: skip

    assert isinstance(wrong.exception, Forbidden)
    assert "front-end of 人力资源和社会保障局 (HRSS), not of 税务局 (TAX)" in str(wrong.exception)
    assert isinstance(unnamed.exception, BadInput)
    assert "name the department the subscription is for (--department HRSS)" in str(
        unnamed.exception
    )
    assert isinstance(unknown.exception, BadInput) and "no department 'XX'" in str(
        unknown.exception
    )
    with pytest.raises(Forbidden, match="front-end of"):
        add_subscription(ws, "OPEN", "hrss_fe", None, UNTIL, department="TAX")
    hrss_received_nothing(ws)


def test_an_admin_add_for_the_nodes_department_is_delivered_and_audited(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, _ = city

    added = cli(ws, "subscription", "add", "OPEN", "--node", "tax_fe", "--department", "TAX",
                "--until", UNTIL.isoformat())  # fmt: skip

    assert added.exit_code == 0, (added.output, added.exception)
    assert "tax_fe.enterprise for TAX" in added.stdout
    with ws.store.session() as s:
        sub = s.scalars(sa.select(Subscription)).one()
        assert (sub.department_code, sub.department_name) == ("TAX", "税务局")
        event = s.scalars(
            sa.select(AuditEvent).where(AuditEvent.kind == "subscription.added")
        ).one()
        assert event.payload["department"] == "TAX"
    run_resource(ws, "OPEN")
    assert rows_on(ws, "tax.db") == 40


# -- the end to end: every attempt, one exchange, HRSS untouched -------------------------------


def test_no_path_gets_a_row_of_tax_into_hrss_node_and_tax_gets_its_own(
    city: tuple[Workspace, dict[str, Principal]], tmp_path: Path
) -> None:
    ws, people = city
    attempts = 0
    for name in DEPARTMENT_NAMES:
        data = the_strangers_form(name)
        with pytest.raises((BadInput, Forbidden)):
            svc.apply(ws, people["tax"], Application.model_validate(data))
        path = tmp_path / "form.yaml"
        path.write_text(yaml.safe_dump(data, allow_unicode=True), "utf-8")
        assert cli(ws, "subscription", "apply", "--form", str(path), "--as", "tax").exit_code
        attempts += 2
    for dept in ("TAX", None):
        with pytest.raises((BadInput, Forbidden)):
            add_subscription(ws, "OPEN", "hrss_fe", None, UNTIL, department=dept)
        attempts += 1
    own = svc.apply(ws, people["tax"], form("OPEN", "tax", department_name=None))
    assert (own.node, own.department_code, own.department_name) == ("tax_fe", "TAX", "税务局")

    summary = run_resource(ws, "OPEN")

    assert attempts == 8 and summary.status == "succeeded"
    assert rows_on(ws, "tax.db") == 40
    assert rows_on(ws, "hrss.db") == 0 and subscriptions_on(ws, "hrss_fe") == []


# -- file subscriptions ----------------------------------------------------------------------


def test_a_file_subscription_lands_only_on_its_departments_file_node(
    files_city: Workspace,
) -> None:
    ws, code = files_city, "410400-SCJG-0002"
    with pytest.raises(Forbidden, match="front-end of 人力资源和社会保障局 \\(RSJ\\)"):
        add_file_subscription(ws, code, "hrss_files", UNTIL, department="SWJ")
    with pytest.raises(BadInput, match="--department RSJ"):
        add_subscription(ws, code, "hrss_files", [], UNTIL)
    refused = cli(ws, "subscription", "add", code, "--node", "hrss_files", "--department", "SWJ",
                  "--until", UNTIL.isoformat())  # fmt: skip
    assert isinstance(refused.exception, Forbidden)
    add_subscription(ws, code, "tax_files", [], UNTIL, department="SWJ")

    assert run_resource(ws, code).status == "succeeded"

    home = Path(ws.catalog.path).parent
    assert [p.name for p in (home / "files/tax").rglob("*.pdf")] == ["r1.pdf"]
    assert list((home / "files/hrss").rglob("*")) == []


# -- the catalog declares every node's department ---------------------------------------------


def test_a_node_of_an_undeclared_department_is_a_catalog_error(tmp_path: Path) -> None:
    doc = yaml.safe_load((ROOT / "schemas/examples/demo.yaml").read_text("utf-8"))
    doc["nodes"][2]["department"] = "人力资源和社会保障局"  # a name where the code belongs
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True), "utf-8")

    with pytest.raises(CatalogError) as bad:
        load_catalog(tmp_path / "c.yaml")

    assert any(
        "nodes[2].department: node 'hrss_fe': department '人力资源和社会保障局' is not declared "
        "in departments (declared: RSJ (人力资源和社会保障局), SCJG (市场监督管理局), SWJ (税务局))"
        in p
        for p in bad.value.problems
    ), bad.value.problems


def test_the_catalog_names_the_departments(tmp_path: Path) -> None:
    catalog = load_catalog(ROOT / "schemas/examples/demo.yaml")
    assert catalog.departments == {
        "SCJG": "市场监督管理局",
        "SWJ": "税务局",
        "RSJ": "人力资源和社会保障局",
    }
    assert {n.name: n.department for n in catalog.nodes.values()}["hrss_fe"] == "RSJ"


def test_a_user_of_an_undeclared_department_is_refused(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(
        (ROOT / "schemas/examples/demo.yaml").read_text("utf-8"), "utf-8"
    )
    env = {"EXCHANGE_HOME": str(tmp_path), "EXCHANGE_CATALOG": str(tmp_path / "c.yaml"),
           "EXCHANGE_DB_URL": f"sqlite:///{tmp_path / 'x.db'}"}  # fmt: skip
    runner = CliRunner()

    named = runner.invoke(app, ["user", "add", "swj", "--role", "requester",
                                "--department", "税务局"], env=env)  # fmt: skip
    coded = runner.invoke(app, ["user", "add", "swj", "--role", "requester",
                                "--department", "SWJ"], env=env)  # fmt: skip

    assert isinstance(named.exception, BadInput)
    assert "department '税务局' is not a department code of the catalog" in str(named.exception)
    assert "SWJ (税务局)" in str(named.exception)
    assert coded.exit_code == 0 and "swj (requester of SWJ)" in coded.stdout
