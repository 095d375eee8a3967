"""Account applications (用户账号 / 数据库、FTP 账号密码申请单): a second-level unit applies,
its supervising department consents (a clock of its own), the platform issues within 2
working days on the one calendar (reminders and breaches as every clock), resets give a new
password and the old one no longer signs in; a supervisor acting for its unit records both
departments; the refusals are named. On SQLite and PostgreSQL stores.

Times are Asia/Shanghai wall-clock (``sh``), on the real 2026 calendar.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from exchange import audit
from exchange.accounts import service as acc
from exchange.accounts.config import AccountSettings
from exchange.accounts.forms import parse_account_form
from exchange.accounts.models import AccountClock, AccountTransition
from exchange.api import create_app
from exchange.kernel.errors import BadInput, Forbidden, IllegalTransition, NotFound, Unauthorized
from exchange.kernel.settings import Settings
from exchange.store.models import AuditEvent
from exchange.workflow.models import Notification, User, UserPassword
from exchange.workflow.users import Principal, create_user, issue_token, principal_of, sign_in
from exchange.workspace import Workspace
from tests.workflow_city import cli
from tests.workflow_setup import sh

CITY = "11410400MB0000001X"  # 平顶山市市场监督管理局 (a city department)
UNIT = "12410400MB0000002Y"  # 市场监管信息中心 (its second-level unit)
TAX = "11410400MB0000003Z"  # another city department
COUNTY_BUREAU = "11410421MB0000004A"
COUNTY_DEPT = "11410421MB0000005B"
CATALOG = f"""\
version: 1
departments:
  "{CITY}": {{name: 平顶山市市场监督管理局, level: city_department}}
  "{UNIT}": {{name: 市场监管信息中心, level: second_level_unit, supervisor: "{CITY}"}}
  "{TAX}": 国家税务总局平顶山市税务局
  "{COUNTY_BUREAU}": {{name: 宝丰县大数据管理局, level: county_bureau}}
  "{COUNTY_DEPT}": {{name: 宝丰县人社局, level: county_department, supervisor: "{COUNTY_BUREAU}"}}
nodes: []
resources: []
"""
PHONE = "13812345678"


def open_ws(home: Path, db_url: str | None) -> Workspace:
    path = home / "catalog.yaml"
    path.write_text(CATALOG, encoding="utf-8")
    url = db_url or f"sqlite:///{home / 'exchange.db'}"
    return Workspace.open(path, Settings(home=home, db_url=url))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def city(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Workspace, dict[str, Principal]]]:
    url = None if request.param == "sqlite" else request.getfixturevalue("pg_database")
    ws = open_ws(tmp_path, url)
    with ws.store.session() as s:
        create_user(s, "admin", "admin", None, "test")
        create_user(s, "scjg", "requester", CITY, "test")
        create_user(s, "center", "requester", UNIT, "test")
        create_user(s, "tax", "requester", TAX, "test")
        create_user(s, "baofeng", "requester", COUNTY_BUREAU, "test")
        people = {n: principal_of(s, n) for n in ("admin", "scjg", "center", "tax", "baofeng")}
    yield ws, people
    ws.close()


def form(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "account_type": "platform",
        "application_type": "new",
        "responsible_person": "王芳",
        "position": "信息科科长",
        "phone": PHONE,
        "email": "wangfang@scjg.example.gov.cn",
        "reason": "开展数据共享及发布工作",
    }
    data.update(over)
    return {k: v for k, v in data.items() if v is not None}


def apply(ws: Workspace, who: Principal, at: str, **over: Any) -> acc.AccountView:
    return acc.apply(ws, who, parse_account_form(form(**over)), sh(at))


def events(ws: Workspace, subject: str) -> list[tuple[str, dict[str, Any]]]:
    with ws.store.session() as s:
        assert audit.check_chain(s).broken_id is None
        rows = s.execute(
            sa.select(AuditEvent.kind, AuditEvent.payload)
            .where(AuditEvent.subject == subject)
            .order_by(AuditEvent.id)
        ).all()
        return [(k, p) for k, p in rows]


def all_audit_text(ws: Workspace) -> str:
    with ws.store.session() as s:
        rows = s.execute(sa.select(AuditEvent.payload).order_by(AuditEvent.id)).scalars()
        return "\n".join(json.dumps(p, ensure_ascii=False) for p in rows)


def clock(ws: Workspace, application_id: int, kind: str) -> AccountClock:
    with ws.store.session() as s:
        row = s.execute(
            sa.select(AccountClock).where(
                AccountClock.application_id == application_id, AccountClock.kind == kind
            )
        ).scalar_one()
        s.expunge(row)
        return row


def test_a_unit_applies_its_supervisor_consents_the_platform_issues_within_the_clock(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, p = city
    v = apply(ws, p["center"], "2026-11-02 09:00")  # a Monday
    assert (v.state, v.department_code, v.supervisor) == ("awaiting_consent", UNIT, CITY)
    assert v.phone == "138****5678"  # masked wherever it is shown
    assert [(d.kind, d.party, d.status) for d in v.deadlines] == [
        ("consent", f"supervisor {CITY}", "running")
    ]
    assert v.deadlines[0].due == "2026-11-04T23:59:59+08:00"

    # The platform cannot issue what the supervisor has not consented to.
    with pytest.raises(IllegalTransition, match="awaiting_consent: issue is allowed only from"):
        acc.issue(ws, p["admin"], v.id, now=sh("2026-11-02 10:00"))
    # Nor may another department consent for it.
    with pytest.raises(Forbidden, match="tax .* may not consent"):
        acc.consent(ws, p["tax"], v.id, now=sh("2026-11-02 10:00"))

    v = acc.consent(ws, p["scjg"], v.id, "同意开通", sh("2026-11-03 11:00"))
    assert v.state == "pending"
    assert [(d.kind, d.status) for d in v.deadlines] == [("consent", "met"), ("answer", "running")]
    assert v.deadlines[1].party == "platform"  # a party of its own, not "platform platform"
    assert v.deadlines[1].due == "2026-11-05T23:59:59+08:00"  # 2 working days from consent

    got = acc.issue(ws, p["admin"], v.id, login="scjg-center", now=sh("2026-11-04 15:00"))
    assert got.application.state == "issued"
    assert got.login == "scjg-center" and got.secret and len(got.secret) >= 16
    assert [(d.kind, d.status) for d in got.application.deadlines] == [
        ("consent", "met"),
        ("answer", "met"),
    ]
    with ws.store.session() as s:
        user = sign_in(s, "scjg-center", got.secret)
        assert (user.role, user.department) == ("requester", UNIT)
        stored = s.get(UserPassword, user.user_id)
        assert stored is not None and stored.password_hash.startswith("$argon2id$")

    kinds = [k for k, _ in events(ws, f"account:{v.id}")]
    assert kinds == ["account.apply", "account.consent", "account.issue"]
    payloads = dict(events(ws, f"account:{v.id}"))
    assert payloads["account.consent"]["actor_department"] == CITY
    assert payloads["account.consent"]["department"] == UNIT
    everything = all_audit_text(ws)
    assert got.secret not in everything and PHONE not in everything
    with ws.store.session() as s:
        outbox = " ".join(json.dumps(n.payload) for n in s.scalars(sa.select(Notification)))
    assert got.secret not in outbox


def test_the_platform_answers_within_2_working_days_across_the_national_day_holiday(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, p = city
    # Wed 30 Sep 2026: 1-7 Oct are holidays; the 2nd working day after it is Fri 9 Oct.
    v = apply(ws, p["tax"], "2026-09-30 10:00")
    assert v.state == "pending" and v.supervisor is None  # a city department: no consent
    (answer,) = v.deadlines
    assert (answer.kind, answer.due) == ("answer", "2026-10-09T23:59:59+08:00")

    report = acc.tick(ws.store, sh("2026-10-01 10:30"))  # a day on: the first reminder
    assert (report.reminders, report.breaches) == (1, 0)
    assert acc.tick(ws.store, sh("2026-10-01 10:30")) == acc.AccountTickReport()  # idempotent
    report = acc.tick(ws.store, sh("2026-10-09 23:00"))
    assert report.breaches == 0
    report = acc.tick(ws.store, sh("2026-10-10 00:30"))
    assert report.breaches == 1
    assert acc.tick(ws.store, sh("2026-10-12 09:00")).breaches == 0  # recorded once
    c = clock(ws, v.id, "answer")
    assert c.breached_at == sh("2026-10-09 23:59:59")  # dated at the deadline

    got = acc.issue(ws, p["admin"], v.id, now=sh("2026-10-12 09:30"))
    assert [(d.kind, d.status) for d in got.application.deadlines] == [("answer", "late")]
    kinds = [k for k, _ in events(ws, f"account:{v.id}")]
    assert kinds == ["account.apply", "account.breached", "account.issue"]
    with ws.store.session() as s:
        sent = [
            (n.kind, n.recipient)
            for n in s.scalars(sa.select(Notification).order_by(Notification.id))
        ]
    assert ("account.breached", "platform:platform") in sent
    assert ("account.reminder", "platform:platform") in sent


def test_a_reset_gives_a_new_password_and_the_old_one_no_longer_signs_in(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, p = city
    v = apply(ws, p["tax"], "2026-11-02 09:00")
    first = acc.issue(ws, p["admin"], v.id, login="tax-platform", now=sh("2026-11-02 10:00"))
    assert first.secret is not None

    r = apply(
        ws, p["tax"], "2026-11-09 09:00", application_type="reset", existing_login="tax-platform"
    )
    assert (r.state, r.application_type, r.existing_login) == ("pending", "reset", "tax-platform")
    second = acc.issue(ws, p["admin"], r.id, now=sh("2026-11-09 10:00"))
    assert second.login == "tax-platform" and second.secret not in (None, first.secret)
    assert second.secret is not None
    with ws.store.session() as s:
        with pytest.raises(Unauthorized):
            sign_in(s, "tax-platform", first.secret)
        assert sign_in(s, "tax-platform", second.secret).name == "tax-platform"
    everything = all_audit_text(ws)
    assert first.secret not in everything and second.secret not in everything

    # A reset names an account of the department's own.
    with pytest.raises(BadInput, match="'tax-platform' is no platform account of department"):
        apply(
            ws, p["scjg"], "2026-11-09 09:00", application_type="reset",
            existing_login="tax-platform",
        )  # fmt: skip

    # Nor an admin's, whatever department its row names: its new password would go to them.
    with ws.store.session() as s:
        s.execute(sa.update(User).where(User.name == "admin").values(department=TAX))
        s.commit()
    with pytest.raises(Forbidden, match="'admin' is a platform admin"):
        apply(ws, p["tax"], "2026-11-09 09:00", application_type="reset", existing_login="admin")


def test_a_supervisor_acting_for_its_unit_records_both_departments(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, p = city
    allowed = AccountSettings(supervisor_acts_for_units=True)
    not_allowed = AccountSettings(supervisor_acts_for_units=False)
    parsed = parse_account_form(form(department_code=UNIT))
    with pytest.raises(Forbidden, match="EXCHANGE_SUPERVISOR_ACTS_FOR_UNITS"):
        acc.apply(ws, p["scjg"], parsed, sh("2026-11-02 09:00"), settings=not_allowed)

    v = acc.apply(ws, p["scjg"], parsed, sh("2026-11-02 09:00"), settings=allowed)
    # Filed by its supervisor: its consent is the filing itself, the platform's clock runs.
    assert (v.state, v.department_code, v.acting_department) == ("pending", UNIT, CITY)
    ((kind, payload),) = events(ws, f"account:{v.id}")
    assert kind == "account.apply"
    assert (payload["department"], payload["actor_department"]) == (UNIT, CITY)
    assert "consent" in payload
    with ws.store.session() as s:
        step = s.scalars(
            sa.select(AccountTransition).where(AccountTransition.application_id == v.id)
        ).one()
        assert (step.actor, step.actor_department) == ("scjg", CITY)

    # The unit sees it, as does its supervisor; another department does not.
    assert acc.show(ws, p["center"], v.id).id == v.id
    with pytest.raises(Forbidden):
        acc.show(ws, p["tax"], v.id)
    assert [a.id for a in acc.list_page(ws, p["scjg"])[1]] == [v.id]
    assert acc.list_page(ws, p["tax"]) == (0, [])

    # A supervisor acts only for its own units, even where the setting allows it.
    other = parse_account_form(form(department_code=COUNTY_DEPT))
    with pytest.raises(Forbidden, match="may act only for its own department"):
        acc.apply(ws, p["scjg"], other, sh("2026-11-02 09:00"), settings=allowed)
    # The county bureau does act for its county's department.
    c = acc.apply(ws, p["baofeng"], other, sh("2026-11-02 09:00"), settings=allowed)
    assert (c.department_code, c.acting_department, c.supervisor) == (
        COUNTY_DEPT,
        COUNTY_BUREAU,
        COUNTY_BUREAU,
    )


def test_refusals_are_named(city: tuple[Workspace, dict[str, Principal]]) -> None:
    ws, p = city
    with pytest.raises(Forbidden, match=f"may act only for its own department {TAX}, not {UNIT}"):
        apply(ws, p["tax"], "2026-11-02 09:00", department_code=UNIT)
    with pytest.raises(BadInput, match=r"phone: Value error, \*\*\*\*45 is not a phone number"):
        apply(ws, p["tax"], "2026-11-02 09:00", phone="12345")
    with pytest.raises(BadInput, match="email: .*is not an e-mail address"):
        apply(ws, p["tax"], "2026-11-02 09:00", email="nobody")
    with pytest.raises(NotFound, match="department_code: no department 'NOPE'"):
        apply(ws, p["admin"], "2026-11-02 09:00", department_code="NOPE")
    with pytest.raises(BadInput, match="existing_login: a reset names the existing account"):
        apply(ws, p["tax"], "2026-11-02 09:00", application_type="reset")
    v = apply(ws, p["center"], "2026-11-02 09:00")
    with pytest.raises(BadInput, match="refuse: give the reason"):
        acc.refuse(ws, p["scjg"], v.id, " ")
    v = acc.refuse(ws, p["scjg"], v.id, "请由主管部门统一申请", sh("2026-11-02 10:00"))
    assert (v.state, v.decision_reason) == ("refused", "请由主管部门统一申请")
    with pytest.raises(IllegalTransition, match="is in state refused"):
        acc.consent(ws, p["scjg"], v.id)
    w = apply(ws, p["tax"], "2026-11-02 09:00")
    with pytest.raises(Forbidden, match="only a platform admin may"):
        acc.issue(ws, p["tax"], w.id)
    with pytest.raises(IllegalTransition, match="reject is done by admin, not by requester"):
        acc.reject(ws, p["tax"], w.id, "no")


def test_the_cli_and_the_api_take_the_same_path(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, p = city
    common = [
        "--person", "王芳", "--position", "科长", "--phone", "0375-2692830",
        "--email", "wf@scjg.example.gov.cn", "--reason", "对接数据库资源",
    ]  # fmt: skip
    out = cli(ws, "account", "apply", "--type", "platform", *common, "--as", "center")
    assert out.exit_code == 0, out.output
    assert "[awaiting_consent]" in out.output and "037****2830" in out.output
    assert "2692830" not in out.output.replace("037****2830", "")
    out = cli(ws, "account", "consent", "1", "--as", "scjg")
    assert out.exit_code == 0, out.output
    out = cli(ws, "account", "issue", "1", "--login", "center-user")
    assert out.exit_code == 0, out.output
    secret = out.output.split("secret (shown once, kept nowhere): ")[1].split()[0]
    with ws.store.session() as s:
        assert sign_in(s, "center-user", secret).department == UNIT
    out = cli(ws, "account", "show", "1", "--as", "center")
    assert out.exit_code == 0 and secret not in out.output
    assert f"consent: awaiting_consent -> pending  by scjg of {CITY}" in out.output
    out = cli(ws, "account", "apply", "--type", "platform", *common, "--phone", "12", "--as", "tax")
    assert isinstance(out.exception, BadInput) and "phone" in str(out.exception)

    with ws.store.session() as s:
        tokens = {n: issue_token(s, n, "test") for n in ("admin", "scjg", "tax")}
    client = TestClient(create_app(ws))

    def call(method: str, path: str, who: str, body: Any = None) -> Any:
        return client.request(
            method, path, json=body, headers={"Authorization": f"Bearer {tokens[who]}"}
        )

    r = call("POST", "/account-applications", "tax", form())
    assert r.status_code == 201, r.text
    aid = r.json()["id"]
    assert r.json()["phone"] == "138****5678" and r.json()["state"] == "pending"
    assert call("POST", f"/account-applications/{aid}/issue", "tax", {}).status_code == 403
    r = call("POST", f"/account-applications/{aid}/issue", "admin", {"login": "tax-api"})
    assert r.status_code == 200, r.text
    assert r.json()["login"] == "tax-api" and r.json()["secret"]
    assert call("GET", f"/account-applications/{aid}", "scjg").status_code == 403
    r = call("GET", "/account-applications", "scjg")
    assert [a["id"] for a in r.json()["items"]] == [1]  # its unit's
    bad = call("POST", "/account-applications", "tax", form(phone="abc"))
    assert bad.status_code == 422
    r = call("GET", "/departments", "tax")
    assert {d["code"]: d["level"] for d in r.json()}[UNIT] == "second_level_unit"
    assert call("POST", "/departments", "tax", {"code": "X1", "name": "x"}).status_code == 403
    unit = {"code": "X1", "name": "某中心", "level": "second_level_unit", "supervisor": TAX}
    r = call("POST", "/departments", "admin", unit)
    assert r.status_code == 201, r.text
    assert [k for k, _ in events(ws, "department:X1")] == ["department.added"]


def test_a_phone_is_masked_as_quarantine_excerpts_mask_it() -> None:
    from exchange.accounts.forms import mask_phone

    assert mask_phone("13812345678") == "138****5678"
    assert mask_phone("0375-2692830") == "037****2830"
    assert mask_phone("12345") == "****45"


def test_an_application_issued_twice_at_once_is_issued_once(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    """A retry racing the first issue waits for it and is refused: the credential the first
    one handed out is the one that works (it is not replaced behind the applicant's back)."""
    ws, p = city
    v = apply(ws, p["tax"], "2026-11-02 09:00")
    acc.issue(ws, p["admin"], v.id, login="tax-platform", now=sh("2026-11-02 10:00"))
    r = apply(
        ws, p["tax"], "2026-11-09 09:00", application_type="reset", existing_login="tax-platform"
    )
    results: list[Any] = []

    def issue() -> None:
        try:
            results.append(acc.issue(ws, p["admin"], r.id, now=sh("2026-11-09 10:00")))
        except IllegalTransition as exc:
            results.append(exc)

    threads = [threading.Thread(target=issue) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    issued = [x for x in results if isinstance(x, acc.Issued)]
    assert len(issued) == 1 and len(results) == 2
    assert isinstance(next(x for x in results if x not in issued), IllegalTransition)
    with ws.store.session() as s:
        assert sign_in(s, "tax-platform", issued[0].secret).name == "tax-platform"
