"""Departments as data: the catalog's ``departments`` in both forms (code -> name, and code
-> {name, level, supervisor}) with the hierarchy's errors at their file:line; the store's
departments table loaded from it and managed by the CLI; and the free-text department values
of an older installation reported (unknown, a department's name, ambiguous), mapped only by
an operator's explicit ``map``."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from exchange.accounts import departments as dep
from exchange.catalog.loader import load_catalog
from exchange.catalog.model import Department
from exchange.kernel.errors import BadInput, CatalogError, NotFound
from exchange.kernel.settings import Settings
from exchange.store.models import AuditEvent, Subscription
from exchange.workflow.models import User
from exchange.workspace import Workspace
from tests.workflow_city import cli

CATALOG = """\
version: 1
departments:
  CITY: {name: 市场监督管理局, level: city_department}
  UNIT: {name: 市场监管信息中心, level: second_level_unit, supervisor: CITY}
  TAX: 税务局
  TWIN1: 信息中心
  TWIN2: 信息中心
nodes: []
resources: []
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "catalog.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_both_forms_of_departments_are_read(tmp_path: Path) -> None:
    catalog = load_catalog(write(tmp_path, CATALOG))
    assert catalog.departments["UNIT"] == "市场监管信息中心"  # code -> name, as before
    assert catalog.department_info["UNIT"] == Department(
        "UNIT", "市场监管信息中心", "second_level_unit", "CITY"
    )
    assert catalog.department_info["TAX"] == Department("TAX", "税务局")
    assert "UNIT (市场监管信息中心)" in catalog.department_list()


def test_the_hierarchy_s_errors_name_file_line_and_key(tmp_path: Path) -> None:
    text = """\
version: 1
departments:
  CITY: {name: 市场监督管理局}
  UNIT: {name: 信息中心, level: second_level_unit}
  LOOP1: {name: a, supervisor: LOOP2}
  LOOP2: {name: b, supervisor: LOOP1}
  SELF: {name: c, supervisor: SELF}
  LOST: {name: d, level: county_department, supervisor: NOWHERE}
  BAD: {name: e, level: province}
nodes: []
resources: []
"""
    with pytest.raises(CatalogError) as info:
        load_catalog(write(tmp_path, text))
    found = "\n".join(info.value.problems)
    assert (
        "catalog.yaml:4 departments.UNIT: department 'UNIT' is a second_level_unit: name " in found
    )
    assert (
        "catalog.yaml:5 departments.LOOP1.supervisor: department 'LOOP1': its supervisors "
        "form a cycle" in found
    )
    assert (
        "catalog.yaml:7 departments.SELF.supervisor: department 'SELF' cannot supervise itself"
        in found
    )
    assert (
        "catalog.yaml:8 departments.LOST.supervisor: department 'LOST': supervisor 'NOWHERE' "
        "is not declared" in found
    )
    assert "catalog.yaml:9 departments.BAD" in found  # fmt: skip


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    w = Workspace.open(
        write(tmp_path, CATALOG), Settings(home=tmp_path, db_url=f"sqlite:///{tmp_path / 'x.db'}")
    )
    yield w  # type: ignore[misc]
    w.close()


def test_the_store_loads_the_catalog_s_departments_and_takes_new_ones(ws: Workspace) -> None:
    with ws.store.session() as s:
        assert dep.sync(s, ws.catalog, "op") == ["CITY", "TAX", "TWIN1", "TWIN2", "UNIT"]
        assert dep.sync(s, ws.catalog, "op") == []  # nothing changed
        row = dep.add(s, ws.catalog, "LAB", "质检中心", "second_level_unit", "CITY", "op")
        assert (row.level, row.supervisor, row.source) == ("second_level_unit", "CITY", "store")
        with pytest.raises(BadInput, match="a county_department names its supervisor"):
            dep.add(s, ws.catalog, "X", "x", "county_department", None, "op")
        with pytest.raises(NotFound, match="supervisor: no department 'NOPE'"):
            dep.add(s, ws.catalog, "X", "x", "second_level_unit", "NOPE", "op")
        with pytest.raises(BadInput, match="level 'ministry' is not one of"):
            dep.add(s, ws.catalog, "X", "x", "ministry", None, "op")
        kinds = s.scalars(
            sa.select(AuditEvent.kind)
            .where(AuditEvent.subject == "department:LAB")
            .order_by(AuditEvent.id)
        ).all()
        assert kinds == ["department.added"]
    out = cli(ws, "department", "list")
    assert out.exit_code == 0, out.output
    assert "LAB  质检中心  second_level_unit  under CITY  (store)" in out.output
    assert "UNIT  市场监管信息中心  second_level_unit  under CITY  (catalog)" in out.output


def test_free_text_departments_are_reported_and_mapped_only_when_told(ws: Workspace) -> None:
    with ws.store.session() as s:  # an older installation's users and subscriptions
        for name, department in [
            ("a", "CITY"),  # a code already: nothing to do
            ("b", "税务局"),  # the name of exactly one department
            ("c", "信息中心"),  # the name of two: ambiguous
            ("d", "某某局"),  # nobody's
        ]:
            s.add(User(name=name, role="requester", department=department))
        s.add(
            Subscription(
                resource_code="R", subscriber_node="n", target_table="t", fields=[],
                valid_until=sa.func.current_date(), department_code="税务局",
            )
        )  # fmt: skip
    with ws.store.session() as s:
        found = {
            (u.value, u.table): (u.rows, u.verdict, u.name_of) for u in dep.unmapped(s, ws.catalog)
        }
    assert found == {
        ("税务局", "users"): (1, "name of a department", ("TAX",)),
        ("税务局", "subscriptions"): (1, "name of a department", ("TAX",)),
        ("信息中心", "users"): (1, "ambiguous", ("TWIN1", "TWIN2")),
        ("某某局", "users"): (1, "unknown", ()),
    }  # fmt: skip
    out = cli(ws, "department", "unmapped")
    assert out.exit_code == 1
    assert "'信息中心'  in users (1 row(s))  ambiguous: TWIN1, TWIN2" in out.output
    assert "4 unmapped department value(s)" in out.output

    out = cli(ws, "department", "map", "税务局", "TAX")
    assert out.exit_code == 0, out.output
    assert "users: 1, subscriptions: 1, api_usage: 0 row(s) now TAX" in out.output
    with ws.store.session() as s:
        assert s.scalar(sa.select(User.department).where(User.name == "b")) == "TAX"
        sub = s.scalars(sa.select(Subscription)).one()
        assert (sub.department_code, sub.department_name) == ("TAX", "税务局")
        assert {u.value for u in dep.unmapped(s, ws.catalog)} == {"信息中心", "某某局"}
        with pytest.raises(NotFound, match="CODE: no department 'NOPE'"):
            dep.map_value(s, ws.catalog, "某某局", "NOPE", "op")
