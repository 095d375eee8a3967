"""The subscription workflow: states, roles, deadlines on the statutory calendar, housekeeping.

Times are given in Asia/Shanghai wall-clock (``sh``) and passed explicitly, so every deadline
below is on the real 2026 calendar (National Day: Oct 1-7 off, Sat Oct 10 a make-up workday).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from exchange import audit
from exchange.flow import run_resource
from exchange.kernel.errors import BadInput, Forbidden, IllegalTransition, NotFound
from exchange.store import Store, Subscription
from exchange.store.db import _alembic_config, create_store_engine
from exchange.workflow import service as svc
from exchange.workflow import states as st
from exchange.workflow.application import parse_application
from exchange.workflow.grants import add_subscription
from exchange.workflow.housekeeping import tick
from exchange.workflow.models import DepartmentSuspension, Notification, SubscriptionTransition
from exchange.workflow.users import Principal
from exchange.workspace import Workspace
from tests import workflow_city
from tests.workflow_setup import form, form_data, sh

STARS = svc.Stars(
    matches_description=5, data_quality=4, timeliness=5, implementation_service=5,
    review_efficiency=4,
)  # fmt: skip


city = workflow_city.city  # the fixture (SQLite and PostgreSQL stores)


def deadlines(view: svc.SubscriptionView) -> dict[str, tuple[str, str]]:
    return {d.kind: (d.due, d.status) for d in view.deadlines}


def notifications(ws: Workspace) -> list[tuple[str, str]]:
    with ws.store.session() as s:
        return [
            (n.kind, n.recipient)
            for n in s.execute(sa.select(Notification).order_by(Notification.id)).scalars()
        ]


def target_ids(ws: Workspace, node_db: str) -> list[int]:
    path = Path(ws.catalog.path).parent / node_db
    if not path.exists():
        return []
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        if "enterprise" not in tables:
            return []
        return [r[0] for r in db.execute("SELECT id FROM enterprise ORDER BY id")]


# -- the state machine as data ----------------------------------------------------------------

LEGAL = [
    (st.APPLIED, "submit_for_review", "system", st.UNDER_REVIEW),
    (st.APPLIED, "file", "system", st.FILING),
    (st.UNDER_REVIEW, "approve", "provider", st.FILING),
    (st.UNDER_REVIEW, "reject", "system", st.REJECTED),
    (st.FILING, "start_implementation", "system", st.IMPLEMENTATION),
    (st.UNDER_REVIEW, "withdraw", "requester", st.WITHDRAWN),
    (st.IMPLEMENTATION, "deliver", "engine", st.SIGN_OFF),
    (st.SIGN_OFF, "sign_off", "requester", st.EVALUATION),
    (st.EVALUATION, "evaluate", "system", st.CLOSED),
    (st.CLOSED, "expire", "system", st.EXPIRED),
    (st.SIGN_OFF, "suspend", "admin", st.SUSPENDED),
]


@pytest.mark.parametrize(("state", "action", "actor", "target"), LEGAL)
def test_legal_steps(state: str, action: str, actor: str, target: str) -> None:
    assert st.next_state(state, action, actor) == target


@pytest.mark.parametrize(
    ("state", "action", "actor", "message"),
    [
        (st.IMPLEMENTATION, "withdraw", "requester", "is in state implementation: withdraw is"),
        (st.CLOSED, "approve", "provider", "approve is allowed only from under_review"),
        (st.REJECTED, "resume", "admin", "resume is allowed only from suspended"),
        (st.UNDER_REVIEW, "approve", "requester", "approve is done by admin or provider or sys"),
        (st.APPLIED, "teleport", "admin", "unknown action 'teleport'"),
        (st.EXPIRED, "expire", "system", "expire is allowed only from"),
    ],
)
def test_illegal_steps_are_refused_with_the_reason(
    state: str, action: str, actor: str, message: str
) -> None:
    with pytest.raises(IllegalTransition, match=message):
        st.next_state(state, action, actor)


def test_resume_returns_to_the_state_before_the_suspension() -> None:
    assert st.next_state(st.SUSPENDED, "resume", "admin", resume_to=st.EVALUATION) == (
        st.EVALUATION
    )
    with pytest.raises(IllegalTransition):
        st.next_state(st.SUSPENDED, "resume", "admin", resume_to=None)


def test_final_states_accept_nothing_and_only_approved_states_are_delivered() -> None:
    for state in st.FINAL:
        assert st.allowed_actions(state) == []
    assert st.DELIVERABLE == {st.IMPLEMENTATION, st.SIGN_OFF, st.EVALUATION, st.CLOSED}


# -- the application form ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"urgency": "urgent"}, "urgent request needs urgency_reason"),
        ({"urgency": "critical", "urgency_reason": "  "}, "critical request needs urgency_reason"),
        ({"usage_days": 1096}, "usage_days: Input should be less than or equal to 1095"),
        ({"usage_days": 0}, "usage_days"),
        ({"system_ip": "10.0.0.300"}, "system_ip: Value error, '10.0.0.300' is not an IP"),
        ({"contact_email": "zhangsan"}, "contact_email"),
        ({"fields": []}, "fields"),
        ({"fields": ["id", "id"]}, "requested twice"),
        ({"purpose": ""}, "purpose"),
        ({"colour": "blue"}, "colour: Extra inputs are not permitted"),
    ],
)
def test_an_incomplete_or_wrong_form_names_the_field(
    change: dict[str, object], message: str
) -> None:
    data = form_data(**change)
    with pytest.raises(BadInput, match=message):
        parse_application(data)


def test_urgent_with_a_reason_and_ipv6_are_accepted() -> None:
    f = parse_application(
        form_data(urgency="urgent", urgency_reason="年度汇算", system_ip="fd00::1")
    )
    assert (f.urgency, f.system_ip) == ("urgent", "fd00::1")


@pytest.mark.parametrize(
    ("resource", "change", "error", "message"),
    [
        ("SECRET", {}, BadInput, "not shared"),
        ("NOPE", {}, NotFound, "no resource 'NOPE'"),
        ("COND", {"fields": ["id", "password"]}, BadInput, "has no field 'password'"),
        ("COND", {"fields": ["name"]}, BadInput, "primary key id"),
        ("COND", {"node": "hrss_fe"}, Forbidden, "front-end of 人力资源和社会保障局"),
        ("COND", {"department_code": "HRSS"}, Forbidden, "only for its own department"),
    ],
)
def test_applications_that_cannot_be_accepted(
    city: tuple[Workspace, dict[str, Principal]],
    resource: str,
    change: dict[str, object],
    error: type[Exception],
    message: str,
) -> None:
    ws, people = city
    with pytest.raises(error, match=message):
        svc.apply(ws, people["tax"], form(resource, **change), now=sh("2026-09-30T10:00"))


def test_providers_do_not_apply(city: tuple[Workspace, dict[str, Principal]]) -> None:
    ws, people = city
    with pytest.raises(Forbidden, match="may not apply"):
        svc.apply(ws, people["market"], form(), now=sh("2026-09-30T10:00"))


# -- a conditional request from application to closed ------------------------------------------


def test_a_conditional_request_from_application_to_closed(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    applied = svc.apply(ws, people["tax"], form(), now=sh("2026-09-30T10:00"))
    assert applied.state == st.UNDER_REVIEW
    # 5 working days from Wed Sep 30: Oct 8, 9, 10 (make-up Saturday), 12, 13
    assert deadlines(applied) == {"review": ("2026-10-13T23:59:59+08:00", "running")}
    assert ("review.requested", "provider:SCJG") in notifications(ws)

    # the provider grants fewer fields than requested (minimal sufficient)
    approved = svc.review(
        ws, people["market"], applied.id, approve=True, fields=["id", "uscc", "name"],
        reason="reg_capital 不在必要范围", now=sh("2026-10-09T15:00"),
    )  # fmt: skip
    assert approved.state == st.IMPLEMENTATION
    assert approved.fields == ["id", "uscc", "name"]
    assert approved.requested_fields == ["id", "uscc", "name", "reg_capital"]
    # delivered within 3 working days of approval: Sat Oct 10 (make-up), Mon 12, Tue 13
    assert deadlines(approved)["review"] == ("2026-10-13T23:59:59+08:00", "met")
    assert deadlines(approved)["delivery"] == ("2026-10-13T23:59:59+08:00", "running")
    assert approved.valid_until == "2027-10-09"

    # the engine's first delivery moves it on to sign-off, with only the granted fields
    assert run_resource(ws, "COND").status == "succeeded"
    with sqlite3.connect(Path(ws.catalog.path).parent / "tax.db") as db:
        columns = [r[1] for r in db.execute("PRAGMA table_info(enterprise)")]
    assert columns == ["id", "uscc", "name"]
    delivered = svc.show(ws, people["tax"], applied.id)
    assert delivered.state == st.SIGN_OFF
    assert [h.action for h in delivered.history or []][-1] == "deliver"
    assert (delivered.history or [])[-1].actor == "engine"

    signed = svc.sign_off(ws, people["tax"], applied.id)
    assert signed.state == st.EVALUATION
    closed = svc.evaluate(ws, people["tax"], applied.id, STARS, "数据完整")
    assert closed.state == st.CLOSED
    assert deadlines(closed)["effectiveness"][1] == "running"

    shown = svc.show(ws, people["tax"], applied.id)
    assert shown.evaluation is not None and shown.evaluation["data_quality"] == 4
    assert [(h.from_state, h.to_state, h.actor) for h in shown.history or []] == [
        (None, "applied", "tax"),
        ("applied", "under_review", "system"),
        ("under_review", "filing", "market"),
        ("filing", "implementation", "system"),
        ("implementation", "sign_off", "engine"),
        ("sign_off", "evaluation", "tax"),
        ("evaluation", "closed", "tax"),
    ]
    with ws.store.session() as s:
        assert audit.check_chain(s).broken_id is None
        kinds = list(s.scalars(sa.select(audit.AuditEvent.kind).order_by(audit.AuditEvent.id)))
    for action in ("apply", "submit_for_review", "approve", "deliver", "sign_off", "evaluate"):
        assert f"subscription.{action}" in kinds
    assert "delivery.delivered" in kinds


def test_an_unconditional_request_skips_review_and_is_due_3_working_days_after_it(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    view = svc.apply(ws, people["tax"], form("OPEN"), now=sh("2026-09-30T10:00"))

    assert view.state == st.IMPLEMENTATION
    assert deadlines(view) == {"delivery": ("2026-10-10T23:59:59+08:00", "running")}
    actions = [h.action for h in svc.show(ws, people["tax"], view.id).history or []]
    assert actions == ["apply", "file", "start_implementation"]


def test_rejection_needs_a_reason_and_a_reviewer_cannot_grant_unrequested_fields(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    view = svc.apply(ws, people["tax"], form(fields=["id", "name"]), now=sh("2026-09-30T10:00"))
    with pytest.raises(BadInput, match="needs a reason"):
        svc.review(ws, people["market"], view.id, approve=False)
    with pytest.raises(BadInput, match="not requested: id_card"):
        svc.review(ws, people["market"], view.id, approve=True, fields=["id", "id_card"])

    rejected = svc.review(ws, people["market"], view.id, approve=False, reason="用途不明确")
    assert rejected.state == st.REJECTED
    assert ("subscription.rejected", "requester:TAX") in notifications(ws)
    # a rejected request holds no target: the same table may be requested again
    again = svc.apply(ws, people["tax"], form(), now=sh("2026-10-09T10:00"))
    assert again.state == st.UNDER_REVIEW


def test_roles(city: tuple[Workspace, dict[str, Principal]]) -> None:
    ws, people = city
    view = svc.apply(ws, people["tax"], form(), now=sh("2026-09-30T10:00"))

    with pytest.raises(Forbidden, match="provided by 市场监督管理局"):
        svc.review(ws, people["police"], view.id, approve=True)
    with pytest.raises(Forbidden, match="belongs to department TAX"):
        svc.withdraw(ws, people["hrss"], view.id, "not mine")
    with pytest.raises(Forbidden, match="may not see"):
        svc.show(ws, people["police"], view.id)
    with pytest.raises(Forbidden, match="only a platform admin"):
        svc.admin_step(ws, people["market"], view.id, "suspend", "x")
    assert [v.id for v in svc.list_for(ws, people["market"])] == [view.id]
    assert svc.list_for(ws, people["police"]) == []
    assert svc.list_for(ws, people["hrss"]) == []

    withdrawn = svc.withdraw(ws, people["tax"], view.id, "需求取消")
    assert withdrawn.state == st.WITHDRAWN
    with pytest.raises(IllegalTransition, match="withdrawn"):
        svc.review(ws, people["market"], view.id, approve=True)


# -- housekeeping -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "state", "counter"),
    [("reject", st.REJECTED, "rejected_on_timeout"), ("approve", st.IMPLEMENTATION,
                                                       "approved_on_timeout")],
)  # fmt: skip
def test_review_timeout_follows_the_platform_policy(
    city: tuple[Workspace, dict[str, Principal]], policy: str, state: str, counter: str
) -> None:
    ws, people = city
    view = svc.apply(ws, people["tax"], form(), now=sh("2026-09-30T10:00"))

    assert tick(ws, sh("2026-10-13T23:59:59"), policy=policy).changed == 1  # a reminder only
    report = tick(ws, sh("2026-10-14T00:00:01"), policy=policy)

    assert getattr(report, counter) == 1 and report.breaches == 1
    shown = svc.show(ws, people["tax"], view.id, now=sh("2026-10-14T00:00:01"))
    assert shown.state == state
    assert deadlines(shown)["review"][1] == "timeout"
    decision = next(h for h in shown.history or [] if h.action in ("approve", "reject"))
    assert decision.actor == "system" and decision.reason and policy in decision.reason
    assert decision.at == "2026-10-13T23:59:59+08:00"  # at the deadline, not at the tick
    if state == st.IMPLEMENTATION:  # delivery due 3 working days after the automatic approval
        assert deadlines(shown)["delivery"] == ("2026-10-16T23:59:59+08:00", "running")
    assert tick(ws, sh("2026-10-14T00:00:01"), policy=policy).changed == 0


@pytest.mark.parametrize(("urgency", "per_day"), [("normal", 1), ("urgent", 2), ("critical", 4)])
def test_reminders_every_24_12_6_hours_by_urgency_and_idempotent(
    city: tuple[Workspace, dict[str, Principal]], urgency: str, per_day: int
) -> None:
    ws, people = city
    reason = None if urgency == "normal" else "汛期应急"
    svc.apply(ws, people["tax"], form(urgency=urgency, urgency_reason=reason),
              now=sh("2026-10-08T09:00"))  # fmt: skip
    sent = 0
    for hour in range(1, 49):  # every hour for two days
        sent += tick(ws, sh("2026-10-08T09:00") + dt.timedelta(hours=hour)).reminders
    assert sent == 2 * per_day
    assert tick(ws, sh("2026-10-10T09:00")).changed == 0
    reminders = [n for n in notifications(ws) if n[0] == "review.reminder"]
    assert len(reminders) == 2 * per_day
    assert set(reminders) == {("review.reminder", "provider:SCJG")}


def test_sign_off_and_evaluation_complete_themselves_after_a_natural_day_each(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    view = svc.apply(ws, people["tax"], form("OPEN"), now=sh("2026-10-08T09:00"))
    with ws.store.session() as s:
        from exchange.workflow.engine import on_delivered

        on_delivered(s, view.id, "r-test", sh("2026-10-09T10:00"))

    assert tick(ws, sh("2026-10-10T09:59")).changed == 0
    report = tick(ws, sh("2026-10-11T10:00"))  # both days have passed: one tick does both

    assert (report.signed_off, report.evaluated) == (1, 1)
    shown = svc.show(ws, people["tax"], view.id)
    assert shown.state == st.CLOSED
    assert deadlines(shown)["sign_off"] == ("2026-10-10T10:00:00+08:00", "auto")
    assert deadlines(shown)["evaluation"] == ("2026-10-11T10:00:00+08:00", "auto")
    assert deadlines(shown)["effectiveness"] == ("2027-01-09T10:00:00+08:00", "running")
    assert tick(ws, sh("2026-10-11T10:00")).changed == 0


def _closed_open_subscription(ws: Workspace, people: dict[str, Principal]) -> int:
    """Apply for OPEN, deliver it for real, sign off and evaluate; return its id."""
    view = svc.apply(ws, people["tax"], form("OPEN"), now=sh("2026-09-01T09:00"))
    assert run_resource(ws, "OPEN").status == "succeeded"
    svc.sign_off(ws, people["tax"], view.id, now=sh("2026-09-02T09:00"))
    svc.evaluate(ws, people["tax"], view.id, STARS, now=sh("2026-09-02T10:00"))
    return view.id


def test_an_overdue_effectiveness_report_suspends_the_department_until_it_reports(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    sid = _closed_open_subscription(ws, people)
    cond_elsewhere = form("COND", target_table="enterprise_cond")
    hrss = svc.apply(ws, people["hrss"], form("OPEN", "hrss"), now=sh("2026-09-01T09:00"))

    report = tick(ws, sh("2026-12-01T10:01"))  # 90 days after closing on Sep 2 10:00

    assert report.departments_suspended == 1
    with ws.store.session() as s:
        assert s.scalars(sa.select(DepartmentSuspension.department_code)).all() == ["TAX"]
    # the department's table deliveries stop (hrss, another department, still receives) ...
    assert run_resource(ws, "OPEN").status == "succeeded"
    with ws.store.session() as s:
        planned = s.scalars(
            sa.select(audit.AuditEvent.payload)
            .where(audit.AuditEvent.kind == "run.planned")
            .order_by(audit.AuditEvent.id)  # the sealer updates rows: no heap order to rely on
        ).all()
    assert planned[-1]["subscriptions"] == [hrss.id]
    # ... and its new applications are refused until it reports
    with pytest.raises(Forbidden, match="report of subscription .* was due 2026-12-01T10:00"):
        svc.apply(ws, people["tax"], cond_elsewhere, now=sh("2026-12-02T09:00"))

    svc.report_effectiveness(ws, people["tax"], sid, "核验 1.2 万户, 减少跑腿 3000 次")

    assert svc.apply(ws, people["tax"], cond_elsewhere).state == st.UNDER_REVIEW
    assert run_resource(ws, "OPEN").status == "succeeded"
    with ws.store.session() as s:
        planned = s.scalars(
            sa.select(audit.AuditEvent.payload)
            .where(audit.AuditEvent.kind == "run.planned")
            .order_by(audit.AuditEvent.id)  # the sealer updates rows: no heap order to rely on
        ).all()
    assert sorted(planned[-1]["subscriptions"]) == sorted([sid, hrss.id])
    with pytest.raises(IllegalTransition, match="already reported"):
        svc.report_effectiveness(ws, people["tax"], sid, "again")


def test_expiry_at_the_end_of_the_usage_period_stops_deliveries(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    today = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    view = svc.apply(ws, people["tax"], form("OPEN", usage_days=1), now=today)
    assert run_resource(ws, "OPEN").status == "succeeded"
    assert len(target_ids(ws, "tax.db")) == 40

    report = tick(ws, today + dt.timedelta(days=3))

    assert report.expired == 1
    assert svc.show(ws, people["tax"], view.id).state == st.EXPIRED
    with ws.store.session() as s:
        assert s.get_one(Subscription, view.id).status == st.EXPIRED


def test_suspended_subscriptions_receive_nothing_and_resume_where_they_were(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    view = svc.apply(ws, people["tax"], form("OPEN"))
    suspended = svc.admin_step(ws, people["admin"], view.id, "suspend", "安全检查")
    assert suspended.state == st.SUSPENDED

    run_resource(ws, "OPEN")
    assert target_ids(ws, "tax.db") == []

    assert svc.admin_step(ws, people["admin"], view.id, "resume", "检查通过").state == (
        st.IMPLEMENTATION
    )
    run_resource(ws, "OPEN")
    assert len(target_ids(ws, "tax.db")) == 40


def test_a_platform_added_subscription_starts_in_implementation_and_is_audited(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, _ = city
    sub = add_subscription(
        ws,
        "OPEN",
        "tax_fe",
        ["id", "name"],
        dt.date.today() + dt.timedelta(days=30),
        department="TAX",
    )
    assert sub.status == st.IMPLEMENTATION
    with ws.store.session() as s:
        steps = s.scalars(sa.select(SubscriptionTransition)).all()
        assert [(t.action, t.to_state) for t in steps] == [("add", "implementation")]
    run_resource(ws, "OPEN")
    with ws.store.session() as s:
        assert s.get_one(Subscription, sub.id).status == st.SIGN_OFF


def test_migration_0002_moves_active_subscriptions_to_implementation(tmp_path: Path) -> None:
    engine = create_store_engine(f"sqlite:///{tmp_path / 'old.db'}")
    command.upgrade(_alembic_config(engine), "0001")
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO subscriptions (resource_code, subscriber_node, target_table, fields,"
                " status, valid_until, created_at) VALUES ('OPEN', 'tax_fe', 'enterprise',"
                " '[\"id\"]', 'active', '2027-01-01', '2026-01-01 00:00:00')"
            )
        )
    engine.dispose()

    store = Store(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        with store.session() as s:
            sub = s.scalars(sa.select(Subscription)).one()
            assert (sub.status, sub.urgency, sub.department_code) == (
                "implementation", "normal", None,
            )  # fmt: skip
    finally:
        store.close()
