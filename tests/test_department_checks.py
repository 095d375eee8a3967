"""Department codes are checked where they are given, and say where that was.

``exchange user add`` of a provider or requester needs the catalog to check the code against
(without one it says so instead of skipping the check); a bad code names the option or form
field it came from and lists the catalog's departments; a resource whose provider node belongs
to no department has no provider department: only a platform admin reviews it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from exchange.cli.app import app
from exchange.kernel.errors import BadInput, Forbidden
from exchange.kernel.settings import Settings
from exchange.store.models import Subscription
from exchange.workflow import service as svc
from exchange.workflow.grants import add_subscription
from exchange.workflow.models import SlaClock
from exchange.workflow.users import Principal
from exchange.workspace import Workspace
from tests.workflow_setup import CATALOG, add_people, form, open_city

UNTIL = dt.date.today() + dt.timedelta(days=300)
DEPARTMENTS = "GAJ (公安局), HRSS (人力资源和社会保障局), SCJG (市场监督管理局), TAX (税务局)"


def user_add(home: Path, catalog: Path, *args: str) -> tuple[int, BaseException | None, str]:
    env = {
        "EXCHANGE_HOME": str(home),
        "EXCHANGE_CATALOG": str(catalog),
        "EXCHANGE_DB_URL": f"sqlite:///{home / 'x.db'}",
    }
    got = CliRunner().invoke(app, ["user", "add", *args], env=env)
    return got.exit_code, got.exception, got.stdout


def test_user_add_without_a_catalog_says_it_cannot_check_the_department(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.yaml"

    _, exc, _ = user_add(tmp_path, missing, "swj", "--role", "requester", "--department", "SWJ")

    assert isinstance(exc, BadInput)  # exit 2 from the exchange command
    assert str(exc).startswith(f"--catalog: no catalog file {missing}")
    assert "department code is checked against the catalog's departments" in str(exc)


def test_an_admin_needs_no_catalog(tmp_path: Path) -> None:
    code, exc, out = user_add(tmp_path, tmp_path / "nowhere.yaml", "ops", "--role", "admin")
    assert code == 0, exc
    assert "ops (admin)" in out


@pytest.fixture
def city(tmp_path: Path) -> Iterator[tuple[Workspace, dict[str, Principal]]]:
    ws = open_city(tmp_path)
    yield ws, add_people(ws)
    ws.close()


def test_a_bad_department_names_the_option_or_field_and_the_departments(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    with pytest.raises(BadInput, match="^--department: the department code is empty$"):
        add_subscription(ws, "OPEN", "tax_fe", None, UNTIL, department=" ")
    with pytest.raises(BadInput) as unknown:
        add_subscription(ws, "OPEN", "tax_fe", None, UNTIL, department="SWJ")
    assert str(unknown.value) == (
        f"--department: no department 'SWJ' in the catalog (departments: {DEPARTMENTS})"
    )
    with pytest.raises(BadInput) as applied:
        svc.apply(ws, people["admin"], form("OPEN", department_code="SWJ", department_name=None))
    assert str(applied.value).startswith("department_code: no department 'SWJ' in the catalog")


@pytest.fixture
def nobodys_provider(tmp_path: Path) -> Iterator[tuple[Workspace, dict[str, Principal]]]:
    """The small city, but the provider node market_fe belongs to no department."""
    catalog = CATALOG.replace(
        "{name: market_fe, kind: sqlite, department: SCJG,", "{name: market_fe, kind: sqlite,"
    )
    assert catalog != CATALOG
    ws = open_city(tmp_path)
    (tmp_path / "catalog.yaml").write_text(catalog, "utf-8")
    ws.close()
    ws = Workspace.open(
        tmp_path / "catalog.yaml", Settings(home=tmp_path, db_url=ws.settings.db_url)
    )
    yield ws, add_people(ws)
    ws.close()


def test_a_provider_node_of_no_department_is_reviewed_by_admins_only(
    nobodys_provider: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = nobodys_provider
    resource = ws.catalog.resource("COND")
    assert svc.provider_department(ws, resource) is None

    applied = svc.apply(ws, people["tax"], form("COND"))

    with ws.store.session() as s:
        review_clock = s.execute(sa.select(SlaClock).where(SlaClock.kind == "review")).scalar_one()
        assert (review_clock.party_kind, review_clock.party) == ("provider", "platform")
    assert not svc.may_view(ws, people["market"], stored(ws, applied.id))
    with pytest.raises(Forbidden) as refused:
        svc.review(ws, people["market"], applied.id, approve=True, reason="ok")
    assert "node 'market_fe' of no department: only a platform admin reviews it" in str(
        refused.value
    )
    approved = svc.review(ws, people["admin"], applied.id, approve=True, reason="ok")
    assert approved.state == "implementation"


def stored(ws: Workspace, subscription_id: int) -> Subscription:
    with ws.store.session() as s:
        sub = s.get(Subscription, subscription_id)
        assert sub is not None
        return sub
