"""Subscriptions to api resources through the ordinary workflow: the form names no node (an api
is called through the gateway with an authorization code), the fields are checked against the
response's fields with no primary-key rule, the subscription has no node and no target table,
and its deadlines are those of any subscription: unconditional, the delivery clock runs 3
working days from the request until the code is issued (the ``deliver`` step).

Times are Asia/Shanghai wall-clock (``sh``), on the real 2026 calendar.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from exchange import audit
from exchange.api import create_app
from exchange.demo.run import create_provider
from exchange.kernel.errors import BadInput
from exchange.kernel.settings import Settings
from exchange.store.models import AuditEvent, Subscription
from exchange.workflow import service as svc
from exchange.workflow.application import Application
from exchange.workflow.transitions import move
from exchange.workflow.users import ENGINE, Principal, create_user, issue_token, principal_of
from exchange.workspace import Workspace
from tests.workflow_city import cli
from tests.workflow_setup import FIELDS, sh

API_FIELDS = """\
    fields:
      - {name: uscc, type: varchar, path: data.uscc}
      - {name: ent_name, type: varchar, path: data.name}
      - {name: legal_person, type: varchar, path: data.legal_person}
      - {name: shareholders, type: varchar, path: "data.shareholders[].name"}
"""
OPERATIONS = """\
    operations:
      - name: by_uscc
        method: GET
        path: /ent/{uscc}
        params:
          - {name: uscc, in: path, type: string, pattern: "^[0-9A-Z]{18}$"}
"""
CATALOG = f"""\
version: 1
departments: {{SCJG: 市场监督管理局, CITY: 市政务服务和大数据管理局, TAX: 税务局, HRSS: 人社局}}
nodes:
  - {{name: market_fe, kind: sqlite, department: SCJG, connection: {{path: market.db}}}}
  - {{name: city_fe, kind: sqlite, department: CITY, connection: {{path: city.db}}}}
  - {{name: tax_fe, kind: sqlite, department: TAX, connection: {{path: tax.db}}}}
  - {{name: hrss_fe, kind: sqlite, department: HRSS, connection: {{path: hrss.db}}}}
  - name: prov_gw
    kind: http
    title: 河南省政务数据共享平台接口网关
    department: CITY
    base_url: https://prov.example/api
    auth: {{scheme: header, header: X-Api-Key, credential: {{env: PROV_API_KEY}}}}
resources:
  - code: ENT-API
    name: 企业基本信息查询
    kind: api
    provider: prov_gw
    share: conditional
    origin:
      {{level: provincial, platform: 河南省政务数据共享平台, upstream_code: "41000000SCJG/00012"}}
{OPERATIONS}{API_FIELDS}
  - code: OPEN-API
    name: 企业名录查询
    kind: api
    provider: prov_gw
    share: unconditional
{OPERATIONS}{API_FIELDS}
  - code: OPEN
    name: 企业名录(无条件)
    kind: table
    provider: market_fe
    share: unconditional
    source: {{table: enterprise}}
    mode: incremental
{FIELDS}"""
DEPARTMENTS = {"tax": ("TAX", "tax_fe"), "hrss": ("HRSS", "hrss_fe")}


def write_catalog(home: Path, extra: str = "") -> Path:
    """The catalog above, and ``extra`` resources appended (a resource proxied later)."""
    path = home / "catalog.yaml"
    path.write_text(CATALOG + extra, encoding="utf-8")
    return path


def open_ws(home: Path, db_url: str | None, extra: str = "") -> Workspace:
    """The workspace over ``home``'s store, its catalog (re)written with ``extra``."""
    url = db_url or f"sqlite:///{home / 'exchange.db'}"
    return Workspace.open(write_catalog(home, extra), Settings(home=home, db_url=url))


def people(ws: Workspace) -> dict[str, Principal]:
    """admin; city (provider of CITY, which provides the api resources); market (provider of
    SCJG); requesters tax (TAX) and hrss (HRSS)."""
    with ws.store.session() as s:
        create_user(s, "admin", "admin", None, "test")
        create_user(s, "city", "provider", "CITY", "test")
        create_user(s, "market", "provider", "SCJG", "test")
        create_user(s, "tax", "requester", "TAX", "test")
        create_user(s, "hrss", "requester", "HRSS", "test")
        return {n: principal_of(s, n) for n in ("admin", "city", "market", "tax", "hrss")}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def city(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Workspace, dict[str, Principal]]]:
    url = None if request.param == "sqlite" else request.getfixturevalue("pg_database")
    create_provider(tmp_path / "market.db", 10)
    ws = open_ws(tmp_path, url)
    yield ws, people(ws)
    ws.close()


def api_form(resource: str = "ENT-API", requester: str = "tax", **over: Any) -> dict[str, Any]:
    code, _ = DEPARTMENTS[requester]
    data: dict[str, Any] = {
        "resource": resource,
        "fields": ["uscc", "ent_name"],
        "department_code": code,
        "purpose": "纳税人登记信息核验",
        "legal_basis": "《税收征收管理法》第十五条",
        "contact_name": "张三",
        "contact_phone": "0375-2661234",
        "contact_email": "zhangsan@example.gov.cn",
        "system_name": "金税三期",
        "system_ip": "59.207.1.20",
        "deploy_location": "市政务云",
        "usage_days": 365,
    }
    data.update(over)
    return {k: v for k, v in data.items() if v is not None}


def application(**over: Any) -> Application:
    return Application.model_validate(api_form(**over))


def stored(ws: Workspace, sid: int) -> Subscription:
    with ws.store.session() as s:
        sub = s.get(Subscription, sid)
        assert sub is not None
        return sub


def deadlines(view: svc.SubscriptionView) -> dict[str, tuple[str, str]]:
    return {d.kind: (d.due, d.status) for d in view.deadlines}


def code_issued(ws: Workspace, sid: int, at: dt.datetime) -> None:
    """What issuing the first authorization code does to the workflow (exchange.gateway.codes):
    the engine's ``deliver`` step, implementation → sign-off."""
    with ws.store.session() as s:
        sub = s.get(Subscription, sid)
        assert sub is not None
        move(s, sub, "deliver", ENGINE, at, "authorization code issued")


# -- the form and the grant -------------------------------------------------------------------


def test_an_unconditional_api_is_filed_with_no_node_and_no_target_and_its_delivery_clock_runs(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, p = city
    view = svc.apply(ws, p["tax"], application(resource="OPEN-API"), sh("2026-09-30T10:00"))

    assert view.state == "implementation"
    assert (view.kind, view.node, view.table, view.target) == ("api", "", "", "—")
    assert view.fields == ["uscc", "ent_name"]
    # 3 working days from the request, over National Day (Oct 8, 9 and the make-up Sat 10)
    assert deadlines(view) == {"delivery": ("2026-10-10T23:59:59+08:00", "running")}
    assert view.next_step == f"issue the authorization code: exchange code issue {view.id}"
    sub = stored(ws, view.id)
    assert (sub.subscriber_node, sub.target_table, sub.target_schema) == ("", "", None)


def test_issuing_the_code_is_the_implementation_it_stops_the_delivery_clock(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, p = city
    sid = svc.apply(ws, p["tax"], application(resource="OPEN-API"), sh("2026-11-30T10:00")).id

    code_issued(ws, sid, sh("2026-12-01T09:00"))

    view = svc.show(ws, p["tax"], sid, sh("2026-12-01T09:05"))
    assert view.state == "sign_off" and view.next_step is None
    assert deadlines(view)["delivery"] == ("2026-12-03T23:59:59+08:00", "met")
    assert [h.action for h in view.history or []][-1] == "deliver"


def test_a_conditional_api_is_reviewed_by_its_provider_who_may_grant_any_subset(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, p = city
    requested = ["uscc", "ent_name", "legal_person", "shareholders"]
    sid = svc.apply(ws, p["tax"], application(fields=requested), sh("2026-11-27T10:00")).id
    assert svc.show(ws, p["tax"], sid).state == "under_review"

    # no primary key to keep: a response is filtered to its granted fields, never merged
    view = svc.review(
        ws, p["city"], sid, approve=True, fields=["ent_name", "legal_person"],
        now=sh("2026-11-30T16:30"),
    )  # fmt: skip

    assert (view.state, view.fields) == ("implementation", ["ent_name", "legal_person"])
    assert deadlines(view)["delivery"] == ("2026-12-03T23:59:59+08:00", "running")
    assert view.next_step is not None and "exchange code issue" in view.next_step


def test_an_api_application_that_names_a_node_is_refused_naming_the_gateway(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, p = city
    with pytest.raises(BadInput, match="node: .*called through the gateway: leave node out"):
        svc.apply(ws, p["tax"], application(node="tax_fe"))


def test_an_api_application_with_a_target_table_is_refused(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, p = city
    with pytest.raises(BadInput, match="target_table: .*no target table"):
        svc.apply(ws, p["tax"], application(target_table="ent"))


def test_a_table_application_without_a_node_is_refused_naming_node(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, p = city
    form = application(resource="OPEN", fields=["id", "uscc"])
    with pytest.raises(BadInput, match="^node: resource OPEN is a table: name your"):
        svc.apply(ws, p["tax"], form)


def test_api_fields_are_checked_against_the_response_fields(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, p = city
    with pytest.raises(BadInput, match="has no field 'id_card' .*fields: uscc, ent_name"):
        svc.apply(ws, p["tax"], application(fields=["uscc", "id_card"]))
    # a subset without the first field is fine: there is no key to merge by
    assert svc.apply(ws, p["tax"], application(fields=["shareholders"])).fields == ["shareholders"]


def test_a_second_live_api_subscription_of_a_department_is_refused_naming_the_first(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, p = city
    first = svc.apply(ws, p["tax"], application(resource="OPEN-API")).id  # unconditional

    # a second one would be a second gateway quota, filed with no review
    for who, form in [
        (p["tax"], application(resource="OPEN-API", fields=["legal_person"])),
        (p["admin"], application(resource="OPEN-API")),  # on TAX's behalf
    ]:
        with pytest.raises(BadInput, match=rf"^department TAX already holds subscription {first} "):
            svc.apply(ws, who, form)
    assert "implementation" in str(_refusal(ws, p["tax"], application(resource="OPEN-API")))

    other = svc.apply(ws, p["hrss"], application(resource="OPEN-API", requester="hrss")).id
    another = svc.apply(ws, p["tax"], application(resource="ENT-API")).id  # another resource
    assert len({first, other, another}) == 3
    with ws.store.session() as s:
        count = s.execute(sa.select(sa.func.count()).select_from(Subscription)).scalar_one()
    assert count == 3


def test_a_pending_api_application_blocks_a_second_until_it_is_withdrawn_or_rejected(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, p = city
    first = svc.apply(ws, p["tax"], application()).id  # conditional: under review
    assert f"subscription {first} " in str(_refusal(ws, p["tax"], application()))

    svc.withdraw(ws, p["tax"], first, "wrong fields")
    second = svc.apply(ws, p["tax"], application(fields=["uscc"])).id
    assert f"subscription {second} " in str(_refusal(ws, p["tax"], application()))

    svc.review(ws, p["city"], second, approve=False, reason="no legal basis for uscc alone")
    third = svc.apply(ws, p["tax"], application())
    assert third.state == "under_review"


def test_api_subscriptions_hold_no_target_so_two_departments_never_clash(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, p = city
    tax = svc.apply(ws, p["tax"], application(resource="OPEN-API"))
    hrss = svc.apply(ws, p["hrss"], application(resource="OPEN-API", requester="hrss"))
    assert (stored(ws, tax.id).target_table, stored(ws, hrss.id).target_table) == ("", "")


def _refusal(ws: Workspace, who: Principal, form: Application) -> BadInput:
    with pytest.raises(BadInput) as refused:
        svc.apply(ws, who, form)
    return refused.value


def test_the_apply_event_is_audited_with_no_node_and_the_chain_holds(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, p = city
    sid = svc.apply(ws, p["tax"], application(resource="OPEN-API")).id
    with ws.store.session() as s:
        assert audit.check_chain(s).broken_id is None
        event = s.execute(
            sa.select(AuditEvent).where(
                AuditEvent.kind == "subscription.apply",
                AuditEvent.subject == f"subscription:{sid}",
            )
        ).scalar_one()
        assert (event.payload["node"], event.payload["table"]) == (None, "")


# -- what the CLI and the REST API show -------------------------------------------------------


def test_the_cli_shows_kind_api_no_target_and_the_code_to_issue(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, p = city
    sid = svc.apply(ws, p["tax"], application(resource="OPEN-API")).id
    table = svc.apply(
        ws, p["tax"], Application.model_validate(
            api_form(resource="OPEN", node="tax_fe", fields=["id", "uscc"])
        ),
    ).id  # fmt: skip

    shown = cli(ws, "subscription", "show", str(sid), "--as", "tax")
    assert shown.exit_code == 0, shown.output
    assert "  kind api  to —  granted: uscc, ent_name" in shown.stdout
    assert f"  next: issue the authorization code: exchange code issue {sid}" in shown.stdout

    listed = cli(ws, "subscription", "list", "--as", "tax").stdout
    assert "— (api)" in listed and "tax_fe.enterprise" in listed
    assert "kind api" not in cli(ws, "subscription", "show", str(table)).stdout


def test_the_rest_api_files_an_api_application_without_a_node(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, _ = city
    with ws.store.session() as s:
        token = issue_token(s, "tax", "test")
    client = TestClient(create_app(ws), headers={"Authorization": f"Bearer {token}"})

    r = client.post("/subscriptions", json=api_form(resource="OPEN-API"))
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["kind"], body["target"], body["node"]) == ("api", "—", "")
    assert body["next_step"] == f"issue the authorization code: exchange code issue {body['id']}"

    refused = client.post("/subscriptions", json=api_form(node="tax_fe"))
    assert refused.status_code == 400 and "leave node out" in refused.json()["detail"]
    listed = client.get("/subscriptions").json()["items"]
    assert [(i["kind"], i["target"]) for i in listed] == [("api", "—")]
