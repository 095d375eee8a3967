"""A supervising department acts for its units on subscriptions too, where the platform lets
it (``EXCHANGE_SUPERVISOR_ACTS_FOR_UNITS``): it applies for its unit's subscription (the unit
named), signs it off and holds its API code; every such step records both departments; it is
refused by name with the setting off, and for a department that is not its unit. Through the
service (as the CLI and the API resolve who acts), the CLI and the API; on SQLite and
PostgreSQL stores.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from exchange.accounts.departments import principal_for
from exchange.api import create_app
from exchange.gateway import codes
from exchange.gateway.keys import KEY_FILE_ENV
from exchange.kernel.errors import Forbidden
from exchange.kernel.settings import Settings
from exchange.store.models import AuditEvent
from exchange.workflow import service
from exchange.workflow.application import parse_application
from exchange.workflow.users import Principal, create_user, issue_token, principal_of
from exchange.workspace import Workspace
from tests.workflow_city import cli

CITY = "11410400MB0000001X"  # 平顶山市市场监督管理局 (a city department)
UNIT = "12410400MB0000002Y"  # 市场监管信息中心 (its second-level unit)
TAX = "11410400MB0000003Z"  # another city department
BIG_DATA = "11410400MB0000009Q"  # the platform's department, provider of the api
CATALOG = f"""\
version: 1
departments:
  "{CITY}": {{name: 平顶山市市场监督管理局, level: city_department}}
  "{UNIT}": {{name: 市场监管信息中心, level: second_level_unit, supervisor: "{CITY}"}}
  "{TAX}": 国家税务总局平顶山市税务局
  "{BIG_DATA}": 平顶山市大数据管理局
nodes:
  - name: prov_gw
    kind: http
    department: "{BIG_DATA}"
    base_url: https://prov.example/api
    auth: {{scheme: none}}
resources:
  - code: API-TAX
    name: 纳税信用查询
    kind: api
    provider: prov_gw
    share: unconditional
    operations:
      - {{name: by_uscc, method: GET, path: "/tax/{{uscc}}", params: [{{name: uscc, in: path}}]}}
    fields:
      - {{name: uscc, type: varchar, path: data.uscc}}
"""
SETTING = "EXCHANGE_SUPERVISOR_ACTS_FOR_UNITS"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def city(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Workspace, dict[str, Principal]]]:
    monkeypatch.delenv(KEY_FILE_ENV, raising=False)
    monkeypatch.delenv(SETTING, raising=False)
    url = (
        request.getfixturevalue("pg_database")
        if request.param == "postgresql"
        else f"sqlite:///{tmp_path / 'exchange.db'}"
    )
    (tmp_path / "catalog.yaml").write_text(CATALOG, encoding="utf-8")
    ws = Workspace.open(tmp_path / "catalog.yaml", Settings(home=tmp_path, db_url=url))
    with ws.store.session() as s:
        create_user(s, "admin", "admin", None, "test")
        create_user(s, "scjg", "requester", CITY, "test")
        create_user(s, "center", "requester", UNIT, "test")
        create_user(s, "tax", "requester", TAX, "test")
        people = {n: principal_of(s, n) for n in ("admin", "scjg", "center", "tax")}
    yield ws, people
    ws.close()


def form(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "resource": "API-TAX", "fields": ["uscc"], "purpose": "企业信用核查",
        "legal_basis": "《政务数据共享管理办法》", "contact_name": "张三",
        "contact_phone": "13812345678", "contact_email": "zhang@example.gov.cn",
        "system_name": "市场监管业务系统", "system_ip": "10.1.2.3", "deploy_location": "市政务云",
        "usage_days": 365, "department_code": UNIT,
    }  # fmt: skip
    data.update(over)
    return data


def acting(ws: Workspace, who: Principal, code: str, *, allowed: bool) -> Principal:
    """Who the workflow sees, as the CLI and the API resolve it."""
    with ws.store.session() as s:
        return principal_for(s, ws.catalog, who, code, allowed=allowed)


def events(ws: Workspace, subject: str) -> list[tuple[str, dict[str, Any]]]:
    with ws.store.session() as s:
        rows = s.scalars(
            sa.select(AuditEvent).where(AuditEvent.subject == subject).order_by(AuditEvent.id)
        ).all()
        return [(e.kind, dict(e.payload)) for e in rows]


def test_a_supervisor_applies_for_its_unit_and_both_departments_are_recorded(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, p = city
    for_unit = acting(ws, p["scjg"], UNIT, allowed=True)
    assert (for_unit.department, for_unit.acting_from) == (UNIT, CITY)

    v = service.apply(ws, for_unit, parse_application(form()))
    assert (v.department_code, v.applicant) == (UNIT, "scjg")
    ((kind, payload),) = [e for e in events(ws, f"subscription:{v.id}") if e[0].endswith("apply")]
    assert (payload["department"], payload["acting_department"]) == (UNIT, CITY)

    # The unit's own users see it; its API code is the supervisor's to issue for it, too.
    assert service.show(ws, p["center"], v.id).id == v.id
    issued = codes.issue(ws, for_unit, v.id)
    assert issued.code
    with pytest.raises(Forbidden):
        codes.issue(ws, p["scjg"], v.id)  # not named for the unit: its own department only
    service.sign_off(ws, for_unit, v.id)
    signed = [e for e in events(ws, f"subscription:{v.id}") if e[0] == "subscription.sign_off"]
    assert [(e["department"], e["acting_department"]) for _, e in signed] == [(UNIT, CITY)]


def test_refused_with_the_setting_off_and_for_a_department_not_its_unit(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, p = city
    with pytest.raises(Forbidden, match=f"may not act for its unit {UNIT}: .*{SETTING}"):
        acting(ws, p["scjg"], UNIT, allowed=False)
    with pytest.raises(Forbidden, match=f"may act only for its own department {CITY}, not {TAX}"):
        acting(ws, p["scjg"], TAX, allowed=True)
    with pytest.raises(Forbidden, match=f"may act only for its own department {UNIT}, not {CITY}"):
        acting(ws, p["center"], CITY, allowed=True)  # a unit does not act for its supervisor
    # Without acting for it, the supervisor's own user may not apply in the unit's name.
    with pytest.raises(Forbidden, match="may apply only for its own department"):
        service.apply(ws, p["scjg"], parse_application(form()))


def test_the_cli_and_the_api_name_the_unit(
    city: tuple[Workspace, dict[str, Principal]], monkeypatch: pytest.MonkeyPatch
) -> None:
    ws, p = city
    args = [
        "subscription", "apply", "API-TAX", "--fields", "uscc", "--purpose", "核查",
        "--legal-basis", "办法", "--contact-name", "张三", "--contact-phone", "13812345678",
        "--contact-email", "zhang@example.gov.cn", "--system-name", "系统",
        "--system-ip", "10.1.2.3", "--deploy-location", "政务云", "--usage-days", "30",
        "--department-code", UNIT, "--as", "scjg",
    ]  # fmt: skip
    out = cli(ws, *args)
    assert isinstance(out.exception, Forbidden) and SETTING in str(out.exception)

    monkeypatch.setenv(SETTING, "true")
    out = cli(ws, *args)
    assert out.exit_code == 0, out.output
    assert f"department {UNIT}" in out.output
    out = cli(ws, "subscription", "sign-off", "1", "--for-department", TAX, "--as", "scjg")
    assert isinstance(out.exception, Forbidden) and f"not {TAX}" in str(out.exception)

    with ws.store.session() as s:
        tokens = {n: issue_token(s, n, "test") for n in ("scjg", "tax")}
    client = TestClient(create_app(ws))

    def post(who: str, body: dict[str, Any]) -> Any:
        headers = {"Authorization": f"Bearer {tokens[who]}"}
        return client.post("/subscriptions", json=body, headers=headers)

    r = post("tax", form())
    assert r.status_code == 403 and "may apply only for its own department" in r.text
    monkeypatch.setenv(SETTING, "false")
    r = post("scjg", form())
    assert r.status_code == 403 and SETTING in r.text
