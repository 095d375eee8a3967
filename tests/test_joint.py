"""Joint authorization and dedicated resources: a resource fusing SCJG's and GAJ's data is
approved only when both have approved, granted the fields both granted; one rejection rejects
it; a silent provider is decided for by the platform's review-timeout policy, each on its own
clock. A dedicated resource is requested only by its department. The catalog refuses an
undeclared department in ``sources`` or ``dedicated_to`` with its file and line.

Times are Asia/Shanghai wall-clock (``sh``) on the real 2026 calendar: a request on Wed
2026-09-30 is due from its reviewers by Tue 2026-10-13 23:59:59 (National Day, make-up Sat).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from exchange.catalog import load_catalog
from exchange.demo.run import create_provider
from exchange.kernel.errors import BadInput, CatalogError, Forbidden, IllegalTransition
from exchange.kernel.settings import Settings
from exchange.store.models import AuditEvent, Subscription
from exchange.workflow import service as svc
from exchange.workflow.grants import add_subscription
from exchange.workflow.housekeeping import tick
from exchange.workflow.models import Notification
from exchange.workflow.users import Principal
from exchange.workspace import Workspace
from tests.workflow_setup import CATALOG, FIELDS, add_people, form, sh

EXTRA = f"""\
  - code: FUSED
    name: 企业法人综合信息(市场监管+公安融合)
    kind: table
    provider: market_fe
    share: conditional
    sources: [SCJG, GAJ]
    source: {{table: enterprise}}
    mode: incremental
{FIELDS}
  - code: TAX-ONLY
    name: 企业登记信息-税务专用
    kind: table
    provider: market_fe
    share: unconditional
    dedicated_to: TAX
    source: {{table: enterprise}}
    mode: incremental
{FIELDS}
"""
APPLIED_AT = sh("2026-09-30T10:00")
DUE = "2026-10-13T23:59:59+08:00"
REQUESTED = ["id", "uscc", "name", "reg_capital"]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def joint_city(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Workspace, dict[str, Principal]]]:
    """The small city of ``tests.workflow_setup`` with a fused and a dedicated resource."""
    (tmp_path / "catalog.yaml").write_text(CATALOG + EXTRA, encoding="utf-8")
    create_provider(tmp_path / "market.db", 10)
    url = (
        f"sqlite:///{tmp_path / 'exchange.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_database")
    )
    ws = Workspace.open(tmp_path / "catalog.yaml", Settings(home=tmp_path, db_url=url))
    yield ws, add_people(ws)
    ws.close()


def applied(ws: Workspace, people: dict[str, Principal]) -> int:
    return svc.apply(ws, people["tax"], form("FUSED"), APPLIED_AT).id


def decision(ws: Workspace, sid: int) -> str:
    with ws.store.session() as s:
        return s.get_one(Subscription, sid).decision_reason or ""


def recipients(ws: Workspace, kind: str) -> list[str]:
    with ws.store.session() as s:
        q = sa.select(Notification.recipient).where(Notification.kind == kind)
        return list(s.execute(q.order_by(Notification.id)).scalars())


def test_each_source_provider_reviews_on_its_own_clock(
    joint_city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = joint_city
    sid = applied(ws, people)
    v = svc.show(ws, people["police"], sid, APPLIED_AT)  # GAJ sees it: one of its sources
    assert v.state == "under_review"
    assert {(d.kind, d.party, d.due, d.status) for d in v.deadlines} == {
        ("review.1", "provider SCJG", DUE, "running"),
        ("review.2", "provider GAJ", DUE, "running"),
    }
    assert recipients(ws, "review.requested") == ["provider:SCJG", "provider:GAJ"]
    assert [x.id for x in svc.list_for(ws, people["police"])] == [sid]


def test_both_approve_and_the_grant_is_the_intersection(
    joint_city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = joint_city
    sid = applied(ws, people)
    first = svc.review(ws, people["market"], sid, approve=True,
                       fields=["id", "uscc", "name"], now=sh("2026-10-08T09:00"))  # fmt: skip
    assert first.state == "under_review"  # GAJ has not answered
    with pytest.raises(IllegalTransition, match="department SCJG has already approved it"):
        svc.review(ws, people["market"], sid, approve=True, now=sh("2026-10-08T09:30"))
    done = svc.review(ws, people["police"], sid, approve=True,
                      fields=["id", "name", "reg_capital"], now=sh("2026-10-09T09:00"))  # fmt: skip
    assert done.state == "implementation"
    assert done.fields == ["id", "name"]  # what both granted
    assert {d.kind: d.status for d in done.deadlines}["review.2"] == "met"
    assert recipients(ws, "review.joint_result") == ["provider:SCJG", "provider:GAJ"]
    with ws.store.session() as s:
        kinds = list(
            s.execute(
                sa.select(AuditEvent.kind)
                .where(AuditEvent.subject == f"subscription:{sid}")
                .order_by(AuditEvent.id)
            ).scalars()
        )
    assert kinds == [
        "subscription.apply", "subscription.submit_for_review",
        "subscription.joint_approve", "subscription.joint_approve",  # SCJG's, then GAJ's
        "subscription.approve", "subscription.start_implementation",
    ]  # fmt: skip


def test_one_rejection_rejects_with_its_reason(
    joint_city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = joint_city
    sid = applied(ws, people)
    svc.review(ws, people["market"], sid, approve=True, now=sh("2026-10-08T09:00"))
    with pytest.raises(BadInput, match="a rejection needs a reason"):
        svc.review(ws, people["police"], sid, approve=False, now=sh("2026-10-08T10:00"))
    v = svc.review(ws, people["police"], sid, approve=False, reason="含公民身份信息, 未获融合授权",
                   now=sh("2026-10-08T10:00"))  # fmt: skip
    assert v.state == "rejected"
    assert decision(ws, sid) == "rejected by source provider GAJ: 含公民身份信息, 未获融合授权"
    assert recipients(ws, "subscription.rejected") == ["requester:TAX"]


def test_a_rejection_cancels_the_clocks_of_those_who_had_not_answered(
    joint_city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = joint_city
    sid = applied(ws, people)
    v = svc.review(ws, people["market"], sid, approve=False, reason="字段超出最小够用",
                   now=sh("2026-10-08T09:00"))  # fmt: skip
    assert {d.kind: d.status for d in v.deadlines} == {"review.1": "met", "review.2": "cancelled"}
    assert tick(ws, sh("2026-10-20T00:00"), policy="reject").breaches == 0


@pytest.mark.parametrize("policy", ["approve", "reject"])
def test_a_silent_provider_is_decided_for_by_the_timeout_policy(
    joint_city: tuple[Workspace, dict[str, Principal]], policy: str
) -> None:
    ws, people = joint_city
    sid = applied(ws, people)
    svc.review(ws, people["market"], sid, approve=True, fields=["id", "uscc", "name"],
               now=sh("2026-10-08T09:00"))  # fmt: skip
    reminded = tick(ws, sh("2026-10-13T23:59:59"), policy=policy)
    assert reminded.reminders == 1 and reminded.joint_timeouts == 0  # only GAJ is waited for
    report = tick(ws, sh("2026-10-14T00:00:01"), policy=policy)
    assert (report.joint_timeouts, report.breaches) == (1, 1)
    v = svc.show(ws, people["admin"], sid, sh("2026-10-14T00:00:01"))
    clocks = {d.kind: d.status for d in v.deadlines}
    assert clocks["review.1"] == "met" and clocks["review.2"] == "timeout"
    if policy == "approve":  # 视为同意: GAJ's silence grants what was requested
        assert report.approved_on_timeout == 1
        assert (v.state, v.fields) == ("implementation", ["id", "uscc", "name"])
    else:  # 超时拒绝
        assert report.rejected_on_timeout == 1
        assert v.state == "rejected"
        assert decision(ws, sid).startswith(
            "auto-completed: rejected by source provider GAJ: no answer within 5 working days"
        )
    assert recipients(ws, "sla.breached") == ["provider:GAJ"]
    assert tick(ws, sh("2026-10-14T00:00:01"), policy=policy).changed == 0


def test_both_silent_under_approve_grants_the_request(
    joint_city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = joint_city
    sid = applied(ws, people)
    report = tick(ws, sh("2026-10-14T00:00:01"), policy="approve")
    assert (report.joint_timeouts, report.approved_on_timeout, report.breaches) == (2, 1, 2)
    v = svc.show(ws, people["admin"], sid, sh("2026-10-14T00:00:01"))
    assert (v.state, v.fields) == ("implementation", REQUESTED)


def test_only_source_providers_review_and_an_admin_decides_for_the_rest(
    joint_city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = joint_city
    sid = applied(ws, people)
    with pytest.raises(IllegalTransition, match="not by requester"):
        svc.review(ws, people["tax"], sid, approve=True, now=sh("2026-10-08T09:00"))
    svc.review(ws, people["police"], sid, approve=True, fields=["id", "name"],
               now=sh("2026-10-08T09:00"))  # fmt: skip
    v = svc.review(ws, people["admin"], sid, approve=True, now=sh("2026-10-08T10:00"))
    assert (v.state, v.fields) == ("implementation", ["id", "name"])


def test_a_dedicated_resource_is_refused_to_another_department(
    joint_city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = joint_city
    with pytest.raises(Forbidden, match=r"TAX-ONLY is dedicated to department 税务局 \(TAX\)"):
        svc.apply(ws, people["hrss"], form("TAX-ONLY", "hrss"), APPLIED_AT)
    with pytest.raises(Forbidden, match="人力资源和社会保障局 \\(HRSS\\) may not request it"):
        svc.apply(ws, people["admin"], form("TAX-ONLY", "hrss"), APPLIED_AT)
    assert svc.apply(ws, people["tax"], form("TAX-ONLY"), APPLIED_AT).state == "implementation"
    until = dt.date(2027, 9, 30)
    with pytest.raises(Forbidden, match="TAX-ONLY is dedicated"):  # nor added by the platform
        add_subscription(ws, "TAX-ONLY", "hrss_fe", None, until, department="HRSS")
    assert add_subscription(ws, "TAX-ONLY", "tax_fe", None, until, department="TAX",
                            target_table="tax_only").status == "implementation"  # fmt: skip


def test_the_catalog_names_an_undeclared_source_or_dedicated_department(tmp_path: Path) -> None:
    bad = (CATALOG + EXTRA).replace("sources: [SCJG, GAJ]", "sources: [SCJG, GA]")
    bad = bad.replace("dedicated_to: TAX", "dedicated_to: SWJ")
    path = tmp_path / "catalog.yaml"
    path.write_text(bad, encoding="utf-8")
    lines = bad.splitlines()
    with pytest.raises(CatalogError) as err:
        load_catalog(path)
    text = str(err.value)
    sources_line = next(i for i, x in enumerate(lines, 1) if "sources:" in x)
    dedicated_line = next(i for i, x in enumerate(lines, 1) if "dedicated_to:" in x)
    assert f"catalog.yaml:{sources_line}" in text and "department 'GA' is not declared" in text
    assert f"catalog.yaml:{dedicated_line}" in text and "department 'SWJ' is not declared" in text
