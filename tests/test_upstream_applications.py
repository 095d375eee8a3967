"""Upstream applications: a department asks, through the city, for a national or provincial
resource the city does not proxy yet. The platform forwards it within its working days
(housekeeping records a breach), records the upstream decision, and once the resource is in
the city catalog with its origin files the department's form as its subscription. Each step
has its history row and its ``upstream.<action>`` audit event.

Times are Asia/Shanghai wall-clock (``sh``), on the real 2026 calendar.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from fastapi.testclient import TestClient

from exchange import audit
from exchange.api import create_app
from exchange.demo.run import create_provider
from exchange.kernel.errors import BadInput, Forbidden, IllegalTransition, NotFound
from exchange.store.models import AuditEvent, Subscription
from exchange.workflow import upstream as up
from exchange.workflow.config import WorkflowSettings
from exchange.workflow.housekeeping import tick
from exchange.workflow.models import Notification, UpstreamApplication
from exchange.workflow.users import Principal, issue_token
from exchange.workspace import Workspace
from tests.test_api_subscriptions import open_ws, people
from tests.workflow_city import cli
from tests.workflow_setup import sh

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "schemas/examples/upstream_application.yaml"
UPSTREAM_CODE = "41000000RSJ/00021"
# The resource as the city proxies it, once approved: a provincial table landed on the city's
# own front-end DB, its origin naming the upstream code.
PROXIED = f"""
  - code: PROV-SI
    name: 企业职工社会保险参保信息
    kind: table
    provider: city_fe
    share: unconditional
    origin:
      {{level: provincial, platform: 河南省政务数据共享平台, upstream_code: "{UPSTREAM_CODE}"}}
    source: {{table: social_insurance}}
    primary_key: [uscc]
    fields:
      - {{name: uscc, type: char, length: 18, nullable: false}}
      - {{name: insured_count, type: integer}}
      - {{name: paid_until, type: date}}
"""


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def city(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Workspace, dict[str, Principal], str | None]]:
    """The api catalog of test_api_subscriptions (ENT-API proxies 41000000SCJG/00012) and its
    people; the store's URL, to reopen it once the catalog proxies the resource."""
    url = None if request.param == "sqlite" else request.getfixturevalue("pg_database")
    create_provider(tmp_path / "market.db", 10)
    ws = open_ws(tmp_path, url)
    yield ws, people(ws), url
    ws.close()


def request_data(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "level": "provincial",
        "platform": "河南省政务数据共享平台",
        "upstream_code": UPSTREAM_CODE,
        "resource_name": "企业职工社会保险参保信息",
        "kind": "table",
        "fields": ["uscc", "insured_count"],
        "node": "tax_fe",
        "target_table": "social_insurance",
        "department_code": "TAX",
        "purpose": "核验从业人数",
        "legal_basis": "《税收征收管理法》第六条",
        "contact_name": "李明",
        "contact_phone": "0375-2661234",
        "contact_email": "liming@tax.example.gov.cn",
        "system_name": "金税三期",
        "system_ip": "59.207.10.21",
        "deploy_location": "市政务云",
        "usage_days": 365,
    }
    data.update(over)
    return {k: v for k, v in data.items() if v is not None}


def request(**over: Any) -> up.UpstreamRequest:
    return up.parse_upstream_request(request_data(**over))


def proxied_ws(ws: Workspace, url: str | None) -> Workspace:
    """The same store under the catalog that now proxies the resource (PROV-SI)."""
    return open_ws(Path(ws.settings.home), url, PROXIED)


def events(ws: Workspace, subject: str) -> list[str]:
    with ws.store.session() as s:
        assert audit.check_chain(s).broken_id is None
        return list(
            s.scalars(
                sa.select(AuditEvent.kind)
                .where(AuditEvent.subject == subject)
                .order_by(AuditEvent.id)
            )
        )


def notes(ws: Workspace) -> list[tuple[str, str]]:
    with ws.store.session() as s:
        return [
            (n.kind, n.recipient)
            for n in s.scalars(sa.select(Notification).order_by(Notification.id))
        ]


# -- the life of an upstream application ------------------------------------------------------


def test_an_upstream_application_is_forwarded_approved_proxied_and_filed_as_a_subscription(
    city: tuple[Workspace, dict[str, Principal], str | None],
) -> None:
    ws, p, url = city
    applied = up.apply(ws, p["tax"], request(), sh("2026-11-27T10:00"))
    assert (applied.state, applied.department_code, applied.applicant) == ("drafted", "TAX", "tax")
    # 3 working days after Fri 11-27: Mon, Tue, Wed
    assert (applied.forward_due, applied.forward_status) == (
        "2026-12-02T23:59:59+08:00", "running"
    )  # fmt: skip
    assert applied.next_actions == ["forward", "withdraw"]

    forwarded = up.forward(ws, p["admin"], applied.id, "已报省大数据局", sh("2026-11-30T09:00"))
    assert (forwarded.state, forwarded.forward_status) == ("forwarded", "met")
    decided = up.decide(
        ws, p["admin"], applied.id, approved=True, approval_ref="豫数共享〔2026〕31号",
        now=sh("2026-12-10T15:00"),
    )  # fmt: skip
    assert (decided.state, decided.approval_ref) == ("approved_upstream", "豫数共享〔2026〕31号")

    city_ws = proxied_ws(ws, url)
    try:
        done = up.proxied(city_ws, p["admin"], applied.id, "PROV-SI", now=sh("2026-12-11T10:00"))
        assert (done.state, done.resource_code) == ("proxied", "PROV-SI")
        assert done.subscription_id is not None
        with city_ws.store.session() as s:
            sub = s.get(Subscription, done.subscription_id)
            assert sub is not None
            assert (sub.resource_code, sub.department_code, sub.applicant) == (
                "PROV-SI", "TAX", "tax"
            )  # fmt: skip
            assert (sub.subscriber_node, sub.target_table, sub.fields) == (
                "tax_fe", "social_insurance", ["uscc", "insured_count"]
            )  # fmt: skip
            # unconditional: filed at once, its own delivery clock from the filing
            assert sub.status == "implementation" and sub.purpose == "核验从业人数"

        shown = up.show(city_ws, p["tax"], applied.id)
        assert [(h.action, h.from_state, h.to_state, h.actor) for h in shown.history or []] == [
            ("apply", None, "drafted", "tax"),
            ("forward", "drafted", "forwarded", "admin"),
            ("approve", "forwarded", "approved_upstream", "admin"),
            ("proxy", "approved_upstream", "proxied", "admin"),
        ]
        assert shown.history and shown.history[1].reason == "已报省大数据局"
        assert events(city_ws, f"upstream:{applied.id}") == [
            "upstream.apply", "upstream.forward", "upstream.approve", "upstream.proxy",
        ]  # fmt: skip
        assert ("upstream.proxied", "requester:TAX") in notes(city_ws)
    finally:
        city_ws.close()


def test_the_forward_deadline_counts_working_days_over_national_day(
    city: tuple[Workspace, dict[str, Principal], str | None],
) -> None:
    ws, p, _ = city
    view = up.apply(ws, p["tax"], request(), sh("2026-09-30T10:00"))
    assert view.forward_due == "2026-10-10T23:59:59+08:00"  # Oct 8, 9 and the make-up Sat 10
    assert ("upstream.requested", "platform:platform") in notes(ws)


def test_the_forward_days_come_from_the_environment(
    city: tuple[Workspace, dict[str, Principal], str | None], monkeypatch: pytest.MonkeyPatch
) -> None:
    ws, p, _ = city
    monkeypatch.setenv("EXCHANGE_UPSTREAM_FORWARD_DAYS", "5")
    assert WorkflowSettings.from_env().upstream_forward_days == 5
    view = up.apply(ws, p["tax"], request(), sh("2026-11-27T10:00"))
    assert view.forward_due == "2026-12-04T23:59:59+08:00"
    monkeypatch.setenv("EXCHANGE_UPSTREAM_FORWARD_DAYS", "three")
    with pytest.raises(BadInput, match="EXCHANGE_UPSTREAM_FORWARD_DAYS='three'"):
        WorkflowSettings.from_env()


def test_a_forward_deadline_in_a_year_the_calendar_does_not_know_is_provisional(
    city: tuple[Workspace, dict[str, Principal], str | None],
) -> None:
    ws, p, _ = city
    view = up.apply(ws, p["tax"], request(), sh("2041-03-01T10:00"))
    assert view.forward_due.endswith(" (provisional)")


def test_housekeeping_breaches_an_unforwarded_application_once_and_it_shows_overdue(
    city: tuple[Workspace, dict[str, Principal], str | None],
) -> None:
    ws, p, _ = city
    aid = up.apply(ws, p["tax"], request(), sh("2026-11-27T10:00")).id

    assert tick(ws, sh("2026-12-02T23:00")).upstream_forward_breaches == 0
    first = tick(ws, sh("2026-12-03T09:00"))
    assert first.upstream_forward_breaches == 1 and "upstream forward breaches 1" in str(first)
    assert tick(ws, sh("2026-12-04T09:00")).upstream_forward_breaches == 0  # idempotent

    overdue = up.show(ws, p["admin"], aid, sh("2026-12-03T11:00"))
    assert (overdue.forward_status, overdue.forward_late_hours) == ("overdue", 11.0)
    assert events(ws, f"upstream:{aid}") == ["upstream.apply", "upstream.forward_breached"]
    assert ("upstream.forward_breached", "platform:platform") in notes(ws)
    with ws.store.session() as s:
        app = s.get(UpstreamApplication, aid)
        assert app is not None and app.forward_breached_at == sh("2026-12-02T23:59:59")

    late = up.forward(ws, p["admin"], aid, now=sh("2026-12-03T12:00"))
    assert (late.forward_status, late.forward_late_hours) == ("late", 12.0)
    assert events(ws, f"upstream:{aid}")[-1] == "upstream.forward"  # the breach is not repeated


def test_a_rejected_application_records_the_reason_and_goes_no_further(
    city: tuple[Workspace, dict[str, Principal], str | None],
) -> None:
    ws, p, _ = city
    aid = up.apply(ws, p["tax"], request()).id
    up.forward(ws, p["admin"], aid)
    with pytest.raises(BadInput, match="--reason: a refusal"):
        up.decide(ws, p["admin"], aid, approved=False)
    with pytest.raises(BadInput, match="--approval-ref"):
        up.decide(ws, p["admin"], aid, approved=True)

    view = up.decide(ws, p["admin"], aid, approved=False, reason="用途与申请依据不符")
    assert (view.state, view.decision_reason, view.next_actions) == (
        "rejected_upstream", "用途与申请依据不符", []
    )  # fmt: skip
    with pytest.raises(IllegalTransition, match="is in state rejected_upstream"):
        up.proxied(ws, p["admin"], aid, "ENT-API")
    with pytest.raises(IllegalTransition, match="withdraw is allowed only from drafted, forwarded"):
        up.withdraw(ws, p["tax"], aid, "不再需要")
    assert ("upstream.rejected", "requester:TAX") in notes(ws)


def test_the_requester_withdraws_before_the_decision_and_nobody_else_may(
    city: tuple[Workspace, dict[str, Principal], str | None],
) -> None:
    ws, p, _ = city
    drafted = up.apply(ws, p["tax"], request()).id
    with pytest.raises(Forbidden, match="hrss .* may not withdraw upstream application"):
        up.withdraw(ws, p["hrss"], drafted, "not mine")
    assert up.withdraw(ws, p["tax"], drafted, "不再需要").state == "withdrawn"

    forwarded = up.apply(ws, p["tax"], request()).id  # the first is final: it may apply again
    up.forward(ws, p["admin"], forwarded)
    view = up.withdraw(ws, p["tax"], forwarded, "改走市级资源")
    assert (view.state, view.forward_status) == ("withdrawn", "met")
    assert up.show(ws, p["tax"], drafted).forward_status == "cancelled"


# -- who may do what --------------------------------------------------------------------------


def test_only_the_platform_forwards_decides_and_records_the_proxy(
    city: tuple[Workspace, dict[str, Principal], str | None],
) -> None:
    ws, p, _ = city
    aid = up.apply(ws, p["tax"], request()).id
    for who in (p["tax"], p["city"]):
        with pytest.raises(Forbidden, match="only a platform admin may"):
            up.forward(ws, who, aid)
        with pytest.raises(Forbidden, match="only a platform admin may"):
            up.decide(ws, who, aid, approved=True, approval_ref="x")
        with pytest.raises(Forbidden, match="only a platform admin may"):
            up.proxied(ws, who, aid, "ENT-API")
    with pytest.raises(Forbidden, match="may not apply"):
        up.apply(ws, p["city"], request())


def test_a_requester_lists_and_sees_only_its_departments_applications(
    city: tuple[Workspace, dict[str, Principal], str | None],
) -> None:
    ws, p, _ = city
    mine = up.apply(ws, p["tax"], request()).id
    theirs = up.apply(
        ws, p["hrss"], request(department_code="HRSS", node="hrss_fe")
    ).id  # fmt: skip

    assert [v.id for v in up.list_page(ws, p["admin"])[1]] == [mine, theirs]
    assert [v.id for v in up.list_page(ws, p["tax"])[1]] == [mine]
    assert up.list_page(ws, p["city"]) == (0, [])
    assert up.list_page(ws, p["admin"], state="drafted", limit=1)[0] == 2
    with pytest.raises(Forbidden, match="may not see upstream application"):
        up.show(ws, p["tax"], theirs)
    with pytest.raises(NotFound, match="no upstream application 99"):
        up.show(ws, p["admin"], 99)
    with pytest.raises(BadInput, match="no state 'nope'"):
        up.list_page(ws, p["admin"], state="nope")


# -- what an application must say -------------------------------------------------------------


def test_a_resource_the_city_proxies_already_is_applied_for_as_any_other(
    city: tuple[Workspace, dict[str, Principal], str | None],
) -> None:
    ws, p, _ = city
    with pytest.raises(BadInput, match="proxied already as resource ENT-API: apply for it with"):
        up.apply(ws, p["tax"], request(upstream_code="41000000SCJG/00012", kind="api"))


def test_where_the_data_lands_is_checked_when_applying(
    city: tuple[Workspace, dict[str, Principal], str | None],
) -> None:
    ws, p, _ = city
    with pytest.raises(BadInput, match="^node: table data lands on a node"):
        up.apply(ws, p["tax"], request(node=None))
    with pytest.raises(BadInput, match="^node: an api resource is called through the gateway"):
        up.apply(ws, p["tax"], request(kind="api", target_table=None))
    with pytest.raises(Forbidden, match="'hrss_fe' is the front-end of 人社局 .HRSS., not of"):
        up.apply(ws, p["tax"], request(node="hrss_fe"))
    with pytest.raises(Forbidden, match="may apply only for its own department"):
        up.apply(ws, p["tax"], request(department_code="HRSS"))
    with pytest.raises(BadInput, match="kind: Input should be 'table', 'file', 'folder' or 'api'"):
        request(kind="view")


def test_a_second_live_application_for_the_same_upstream_resource_is_refused(
    city: tuple[Workspace, dict[str, Principal], str | None],
) -> None:
    ws, p, _ = city
    first = up.apply(ws, p["tax"], request()).id
    with pytest.raises(BadInput, match=f"already: upstream application {first}"):
        up.apply(ws, p["tax"], request())


def test_the_proxy_must_be_in_the_catalog_with_the_applications_upstream_code(
    city: tuple[Workspace, dict[str, Principal], str | None],
) -> None:
    ws, p, _ = city
    aid = up.apply(ws, p["tax"], request()).id
    with pytest.raises(IllegalTransition, match="proxy is allowed only from approved_upstream"):
        up.proxied(ws, p["admin"], aid, "PROV-SI")
    up.forward(ws, p["admin"], aid)
    up.decide(ws, p["admin"], aid, approved=True, approval_ref="豫数共享〔2026〕31号")

    with pytest.raises(NotFound, match="no resource 'PROV-SI' in the catalog: add the proxied"):
        up.proxied(ws, p["admin"], aid, "PROV-SI")
    with pytest.raises(BadInput, match="ENT-API is not the proxy .*'41000000SCJG/00012'"):
        up.proxied(ws, p["admin"], aid, "ENT-API")
    with pytest.raises(BadInput, match="OPEN is not the proxy .*: it has no origin"):
        up.proxied(ws, p["admin"], aid, "OPEN")
    assert up.show(ws, p["admin"], aid).state == "approved_upstream"  # nothing changed


def test_upstream_field_names_are_mapped_to_the_proxys_names_when_filing(
    city: tuple[Workspace, dict[str, Principal], str | None],
) -> None:
    ws, p, url = city
    aid = up.apply(ws, p["tax"], request(fields=["统一社会信用代码", "参保人数"])).id
    assert up.show(ws, p["tax"], aid).fields == ["统一社会信用代码", "参保人数"]
    up.forward(ws, p["admin"], aid)
    up.decide(ws, p["admin"], aid, approved=True, approval_ref="豫数共享〔2026〕31号")
    city_ws = proxied_ws(ws, url)
    try:
        with pytest.raises(BadInput, match="no field '统一社会信用代码', '参保人数' .*--fields"):
            up.proxied(city_ws, p["admin"], aid, "PROV-SI")
        done = up.proxied(city_ws, p["admin"], aid, "PROV-SI", ["uscc", "insured_count"])
        with city_ws.store.session() as s:
            sub = s.get(Subscription, done.subscription_id)
            assert sub is not None and sub.fields == ["uscc", "insured_count"]
    finally:
        city_ws.close()


def test_an_upstream_api_is_filed_as_an_api_subscription_with_no_node(
    city: tuple[Workspace, dict[str, Principal], str | None],
) -> None:
    ws, p, url = city
    aid = up.apply(
        ws, p["tax"], request(upstream_code="GJ-00007", kind="api", node=None, target_table=None,
                              fields=["uscc", "ent_name"]),
    ).id  # fmt: skip
    up.forward(ws, p["admin"], aid)
    up.decide(ws, p["admin"], aid, approved=True, approval_ref="国数共享〔2026〕7号")
    api = PROXIED_API.replace("GJ-CODE", "GJ-00007")
    city_ws = open_ws(Path(ws.settings.home), url, api)
    try:
        done = up.proxied(city_ws, p["admin"], aid, "GJ-API")
        with city_ws.store.session() as s:
            sub = s.get(Subscription, done.subscription_id)
            assert sub is not None
            assert (sub.subscriber_node, sub.target_table, sub.status) == ("", "", "under_review")
    finally:
        city_ws.close()


PROXIED_API = """
  - code: GJ-API
    name: 企业信息查询(国家)
    kind: api
    provider: prov_gw
    share: conditional
    origin: {level: national, platform: 国家数据共享交换平台, upstream_code: "GJ-CODE"}
    operations:
      - {name: by_uscc, method: GET, path: "/ent/{uscc}", params: [{name: uscc, in: path}]}
    fields:
      - {name: uscc, type: varchar, path: data.uscc}
      - {name: ent_name, type: varchar, path: data.name}
"""


# -- the CLI, the example form and the REST API -----------------------------------------------


def test_the_example_form_has_the_keys_of_an_upstream_request_and_applies_through_the_cli(
    city: tuple[Workspace, dict[str, Principal], str | None],
) -> None:
    ws, _, _ = city
    assert set(yaml.safe_load(EXAMPLE.read_text("utf-8"))) <= set(up.UpstreamRequest.model_fields)

    applied = cli(ws, "upstream", "apply", "--form", str(EXAMPLE), "--as", "tax",
                  "--at", "2026-11-27T10:00")  # fmt: skip
    assert applied.exit_code == 0, applied.output
    assert "upstream application 1  provincial 河南省政务数据共享平台  41000000RSJ/00021" in (
        applied.stdout
    )
    assert "  forward due 2026-12-02T23:59:59+08:00  running" in applied.stdout

    listed = cli(ws, "upstream", "list", "--at", "2026-12-03T09:00").stdout
    assert "2026-12-02T23:59:59+08:00 OVERDUE" in listed
    assert cli(ws, "upstream", "list", "--as", "hrss").stdout.count("41000000RSJ") == 0

    forwarded = cli(ws, "upstream", "forward", "1", "--at", "2026-11-30T09:00")
    assert forwarded.exit_code == 0 and "[forwarded]" in forwarded.stdout
    refused = cli(ws, "upstream", "decide", "1", "--approved")
    assert isinstance(refused.exception, BadInput) and "--approval-ref" in str(refused.exception)
    decided = cli(
        ws, "upstream", "decide", "1", "--approved", "--approval-ref", "豫数共享〔2026〕31号"
    )
    assert decided.exit_code == 0 and "  approval 豫数共享〔2026〕31号" in decided.stdout
    not_proxy = cli(ws, "upstream", "proxied", "1", "--resource", "OPEN")
    assert isinstance(not_proxy.exception, BadInput)
    assert "it has no origin" in str(not_proxy.exception)

    shown = cli(ws, "upstream", "show", "1", "--as", "tax")
    assert shown.exit_code == 0, shown.output
    assert "  2026-11-30T09:00:00+08:00  forward: drafted -> forwarded  by platform:" in (
        shown.stdout
    )
    assert "  purpose: 核验企业所得税申报中的从业人数" in shown.stdout
    other = cli(ws, "upstream", "show", "1", "--as", "hrss")
    assert isinstance(other.exception, Forbidden)
    assert "may not see upstream application 1" in str(other.exception)


def test_the_rest_api_takes_every_step_and_refuses_as_the_service_does(
    city: tuple[Workspace, dict[str, Principal], str | None],
) -> None:
    ws, _, _ = city
    with ws.store.session() as s:
        tokens = {n: issue_token(s, n, "test") for n in ("admin", "tax", "hrss")}
    app = create_app(ws)
    client = {
        n: TestClient(app, headers={"Authorization": f"Bearer {t}"}) for n, t in tokens.items()
    }

    r = client["tax"].post("/upstream-applications", json=request_data())
    assert r.status_code == 201, r.text
    aid = r.json()["id"]
    assert r.json()["state"] == "drafted" and r.json()["forward_status"] == "running"
    assert client["tax"].post(f"/upstream-applications/{aid}/forward", json={}).status_code == 403
    bad = client["tax"].post("/upstream-applications", json=request_data(node="hrss_fe"))
    assert bad.status_code == 403

    assert client["admin"].post(f"/upstream-applications/{aid}/forward", json={"note": "已报"}
                                ).json()["state"] == "forwarded"  # fmt: skip
    approval = {"decision": "approved", "approval_ref": "豫数共享〔2026〕31号"}
    r = client["admin"].post(f"/upstream-applications/{aid}/decide", json=approval)
    assert r.status_code == 200 and r.json()["state"] == "approved_upstream", r.text
    r = client["admin"].post(f"/upstream-applications/{aid}/proxied", json={"resource": "NOPE"})
    assert r.status_code == 404
    r = client["tax"].post(f"/upstream-applications/{aid}/withdraw", json={"reason": "x"})
    assert r.status_code == 409

    assert client["hrss"].get(f"/upstream-applications/{aid}").status_code == 403
    page = client["tax"].get("/upstream-applications", params={"state": "approved_upstream"})
    assert page.json()["total"] == 1 and page.json()["items"][0]["id"] == aid
    assert client["hrss"].get("/upstream-applications").json()["total"] == 0
    detail = client["tax"].get(f"/upstream-applications/{aid}").json()
    assert [h["action"] for h in detail["history"]] == ["apply", "forward", "approve"]
