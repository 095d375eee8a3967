"""Data demands: a department files a demand for data nobody shares, the platform assigns it to
the provider, which answers within 5 working days (the statutory calendar), is reminded and in
breach after the deadline; each kind of answer; who sees and does what; CLI and REST API.

Times are Asia/Shanghai wall-clock (``sh``) on the real 2026 calendar: National Day Oct 1-7
off, Sat Oct 10 a make-up workday.
"""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from exchange.api import create_app
from exchange.kernel.errors import BadInput, Forbidden, IllegalTransition, NotFound
from exchange.store.models import AuditEvent
from exchange.workflow import demands
from exchange.workflow.demands import DemandAnswer, DemandForm
from exchange.workflow.housekeeping import tick
from exchange.workflow.models import Notification
from exchange.workflow.users import Principal
from exchange.workspace import Workspace
from tests import workflow_city
from tests.workflow_city import cli
from tests.workflow_setup import sh, tokens

city = workflow_city.city

FORM = DemandForm(
    title="企业欠税信息",
    description="欠税企业名单: 统一社会信用代码, 欠税金额, 按月更新",
    purpose="招投标信用审查",
    legal_basis="《优化营商环境条例》第三十五条",
)
FILED_AT = sh("2026-09-29T09:00")
ASSIGNED_AT = sh("2026-09-30T10:00")


def assigned(ws: Workspace, people: dict[str, Principal], provider: str = "SCJG") -> int:
    """A demand of TAX's, assigned on Wed 2026-09-30 (the eve of National Day)."""
    d = demands.file_demand(ws, people["tax"], FORM, FILED_AT)
    demands.assign(ws, people["admin"], d.id, provider, ASSIGNED_AT)
    return d.id


def outbox(ws: Workspace, kind_prefix: str = "demand.") -> list[tuple[str, str]]:
    with ws.store.session() as s:
        rows = s.execute(
            sa.select(Notification)
            .where(Notification.kind.startswith(kind_prefix))
            .order_by(Notification.id)
        ).scalars()
        return [(n.kind, n.recipient) for n in rows]


def audited(ws: Workspace, demand_id: int) -> list[str]:
    with ws.store.session() as s:
        return list(
            s.execute(
                sa.select(AuditEvent.kind)
                .where(AuditEvent.subject == f"demand:{demand_id}")
                .order_by(AuditEvent.id)
            ).scalars()
        )


def test_the_answer_clock_skips_national_day_and_counts_the_make_up_saturday(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    did = assigned(ws, people)
    v = demands.show(ws, people["admin"], did, ASSIGNED_AT)
    # Oct 8, Oct 9, Sat Oct 10 (make-up), Oct 12, Oct 13
    assert v.answer_due == "2026-10-13T23:59:59+08:00"
    assert (v.state, v.answer_clock) == ("assigned", "running")
    assert outbox(ws) == [
        ("demand.filed", "platform:platform"),
        ("demand.assigned", "provider:SCJG"),
        ("demand.assigned", "requester:TAX"),
    ]


def test_the_provider_is_reminded_then_in_breach_once(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    did = assigned(ws, people)
    assert tick(ws, sh("2026-10-01T10:00:01")).demand_reminders == 1  # 24 h: normal urgency
    assert tick(ws, sh("2026-10-01T10:00:01")).changed == 0  # idempotent
    last = tick(ws, sh("2026-10-13T23:59:59"))
    assert (last.demand_reminders, last.breaches) == (1, 0)  # one reminder per day, not 13
    report = tick(ws, sh("2026-10-14T00:00:01"))
    assert report.breaches == 1
    assert tick(ws, sh("2026-10-20T00:00:00")).breaches == 0
    assert ("demand.breached", "provider:SCJG") in outbox(ws)
    assert demands.show(ws, people["tax"], did, sh("2026-10-14T08:00")).answer_clock == "overdue"

    refusal = DemandAnswer(answer="refuse", text="涉及商业秘密")
    late = demands.answer(ws, people["market"], did, refusal, sh("2026-10-15T09:00"))
    assert (late.state, late.answer_clock) == ("answered", "late")
    assert audited(ws, did).count("demand.breached") == 1


def test_an_answer_on_time_meets_the_clock(city: tuple[Workspace, dict[str, Principal]]) -> None:
    ws, people = city
    did = assigned(ws, people)
    v = demands.answer(ws, people["market"], did, DemandAnswer(answer="existing", resource="COND"),
                       sh("2026-10-13T23:00"))  # fmt: skip
    assert (v.answer_clock, v.resource) == ("met", "COND")
    assert tick(ws, sh("2026-10-20T00:00")).breaches == 0


def test_an_existing_resource_is_pointed_to_and_the_requester_told_to_apply(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    did = assigned(ws, people)
    at = sh("2026-10-09T10:00")
    with pytest.raises(NotFound, match="no resource 'NOPE'"):
        demands.answer(
            ws, people["market"], did, DemandAnswer(answer="existing", resource="NOPE"), at
        )
    with pytest.raises(BadInput, match="SECRET is not shared"):
        demands.answer(
            ws, people["market"], did, DemandAnswer(answer="existing", resource="SECRET"), at
        )
    with pytest.raises(BadInput, match="name the resource"):
        demands.answer(ws, people["market"], did, DemandAnswer(answer="existing"), at)
    v = demands.answer(
        ws, people["market"], did, DemandAnswer(answer="existing", resource="COND"), at
    )
    assert (v.state, v.answer, v.resource, v.next_actions) == (
        "answered",
        "existing",
        "COND",
        ["close"],
    )
    with ws.store.session() as s:
        told = s.execute(
            sa.select(Notification).where(Notification.kind == "demand.answered")
        ).scalar_one()
    assert told.recipient == "requester:TAX"
    assert told.payload["resource"] == "COND" and "apply" in told.payload["next"]

    closed = demands.close(ws, people["tax"], did, "已申请 COND", sh("2026-10-09T11:00"))
    assert closed.state == "closed"
    assert audited(ws, did) == ["demand.file", "demand.assign", "demand.answer", "demand.close"]
    with pytest.raises(IllegalTransition, match="is in state closed"):
        demands.close(ws, people["tax"], did, None, sh("2026-10-09T12:00"))


def test_a_commitment_to_publish_names_a_date_after_today(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    did = assigned(ws, people)
    at = sh("2026-10-09T10:00")
    with pytest.raises(BadInput, match="give the date"):
        demands.answer(ws, people["market"], did, DemandAnswer(answer="publish"), at)
    with pytest.raises(BadInput, match="is not after today"):
        today = DemandAnswer(answer="publish", publish_by=dt.date(2026, 10, 9))
        demands.answer(ws, people["market"], did, today, at)
    v = demands.answer(ws, people["market"], did,
                       DemandAnswer(answer="publish", publish_by=dt.date(2026, 11, 30),
                                    text="新建欠税名单库表"), at)  # fmt: skip
    assert (v.answer, v.publish_by, v.answer_text) == ("publish", "2026-11-30", "新建欠税名单库表")


def test_a_refusal_needs_its_reason(city: tuple[Workspace, dict[str, Principal]]) -> None:
    ws, people = city
    did = assigned(ws, people)
    at = sh("2026-10-09T10:00")
    with pytest.raises(BadInput, match="give the reason"):
        demands.answer(ws, people["market"], did, DemandAnswer(answer="refuse", text="  "), at)
    v = demands.answer(ws, people["market"], did,
                       DemandAnswer(answer="refuse", text="数据涉及国家秘密"), at)  # fmt: skip
    assert (v.answer, v.answer_text) == ("refuse", "数据涉及国家秘密")


def test_each_party_sees_and_does_only_its_own_part(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    mine = assigned(ws, people)  # TAX's, assigned to SCJG
    theirs = demands.file_demand(ws, people["hrss"], FORM, FILED_AT).id  # HRSS's, unassigned
    at = sh("2026-10-09T10:00")

    assert [v.id for v in demands.list_for(ws, people["admin"])] == [mine, theirs]
    assert [v.id for v in demands.list_for(ws, people["tax"])] == [mine]
    assert [v.id for v in demands.list_for(ws, people["hrss"])] == [theirs]
    assert [v.id for v in demands.list_for(ws, people["market"])] == [mine]
    assert demands.list_for(ws, people["police"]) == []
    assert [v.id for v in demands.list_for(ws, people["admin"], "filed")] == [theirs]
    with pytest.raises(Forbidden, match="may not see demand"):
        demands.show(ws, people["police"], mine)
    with pytest.raises(Forbidden, match="may not see demand"):
        demands.show(ws, people["tax"], theirs)

    with pytest.raises(Forbidden, match="only for its own department"):
        demands.file_demand(ws, people["tax"], FORM.model_copy(update={"department_code": "HRSS"}))
    with pytest.raises(Forbidden, match="requesters file them"):
        demands.file_demand(ws, people["market"], FORM)
    with pytest.raises(Forbidden, match="only on behalf of a department"):
        demands.file_demand(ws, people["admin"], FORM)
    with pytest.raises(IllegalTransition, match="assign is done by admin, not by requester"):
        demands.assign(ws, people["hrss"], theirs, "SCJG", at)
    with pytest.raises(NotFound, match="no department 'NOPE'"):
        demands.assign(ws, people["admin"], theirs, "NOPE", at)
    with pytest.raises(IllegalTransition, match="is in state filed: answer is allowed only"):
        demands.answer(ws, people["market"], theirs, DemandAnswer(answer="refuse", text="x"), at)
    with pytest.raises(Forbidden, match="it is assigned to 市场监督管理局 \\(SCJG\\)"):
        demands.answer(ws, people["police"], mine, DemandAnswer(answer="refuse", text="x"), at)
    with pytest.raises(Forbidden, match="it was filed by 税务局 \\(TAX\\)"):
        demands.close(ws, people["hrss"], mine, None, at)
    # an unanswered demand the requester no longer needs: closing it stops the clock
    assert demands.close(ws, people["hrss"], theirs, "不再需要", at).state == "closed"
    assert demands.close(ws, people["admin"], mine, "撤回", at).answer_clock == "cancelled"
    assert tick(ws, sh("2026-10-20T00:00")).breaches == 0


def test_the_cli_files_assigns_answers_closes_and_lists(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, _ = city
    r = cli(ws, "demand", "file", "--title", "企业欠税信息", "--description", "欠税企业名单",
            "--purpose", "信用审查", "--legal-basis", "条例第三十五条", "--as", "tax",
            "--at", "2026-09-29T09:00")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "demand 1  企业欠税信息  [filed]  department TAX" in r.output
    r = cli(ws, "demand", "assign", "1", "--provider", "SCJG", "--at", "2026-09-30T10:00")
    assert r.exit_code == 0, r.output
    assert "answer due 2026-10-13T23:59:59+08:00  running" in r.output
    r = cli(ws, "demand", "answer", "1", "--kind", "publish", "--publish-by", "2026-11-30",
            "--as", "market", "--at", "2026-10-09T10:00")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "answer publish (publish by 2026-11-30)" in r.output
    r = cli(ws, "demand", "answer", "1", "--kind", "refuse", "--as", "police")
    assert isinstance(r.exception, IllegalTransition)  # exit 2 from the console entry point
    assert "is in state answered" in str(r.exception)
    r = cli(ws, "demand", "list", "--as", "hrss")
    assert r.exit_code == 0 and "no demands" in r.output
    r = cli(ws, "demand", "close", "1", "--as", "tax", "--at", "2026-10-09T11:00")
    assert r.exit_code == 0 and "[closed]" in r.output
    r = cli(ws, "demand", "show", "1", "--as", "tax")
    assert r.exit_code == 0, r.output
    assert "assign: filed -> assigned  by platform" in r.output
    assert "legal basis: 条例第三十五条" in r.output


def test_the_api_files_assigns_answers_and_scopes_demands(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, _ = city
    keys = tokens(ws)
    app = create_app(ws)

    def as_(name: str) -> TestClient:
        return TestClient(app, headers={"Authorization": f"Bearer {keys[name]}"})

    r = as_("tax").post("/demands", json=FORM.model_dump(exclude_none=True))
    assert r.status_code == 201, r.text
    did = r.json()["id"]
    assert as_("police").get(f"/demands/{did}").status_code == 403
    assert as_("tax").post(f"/demands/{did}/assign", json={"provider": "SCJG"}).status_code == 409
    r = as_("admin").post(f"/demands/{did}/assign", json={"provider": "SCJG"})
    assert r.status_code == 200 and r.json()["state"] == "assigned"
    assert [d["id"] for d in as_("market").get("/demands").json()["items"]] == [did]
    assert as_("police").get("/demands").json()["items"] == []
    r = as_("market").post(f"/demands/{did}/answer", json={"answer": "refuse"})
    assert r.status_code == 422  # the spec says a refusal has its text
    r = as_("market").post(f"/demands/{did}/answer",
                           json={"answer": "existing", "resource": "COND"})  # fmt: skip
    assert r.status_code == 200 and r.json()["answer"] == "existing"
    r = as_("tax").post(f"/demands/{did}/close", json={"note": "已申请"})
    assert r.status_code == 200 and r.json()["state"] == "closed"
    assert [s["action"] for s in as_("tax").get(f"/demands/{did}").json()["history"]] == [
        "file", "assign", "answer", "close",
    ]  # fmt: skip
