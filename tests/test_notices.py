"""Change and offline notices of a resource (003 §11): at least 5 working days' notice on the
one calendar, every subscriber told through the outbox, offline refused while a subscription is
served and no replacement is named, applied by the tick on the effective day, and an offline
resource delivering nothing from that day on (and not before), on SQLite and PostgreSQL stores."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from exchange.flow import run_resource
from exchange.kernel.clock import today, utcnow
from exchange.kernel.errors import BadInput, Forbidden
from exchange.store.models import AuditEvent
from exchange.workflow import notices
from exchange.workflow.grants import add_subscription
from exchange.workflow.housekeeping import tick
from exchange.workflow.models import Notification
from exchange.workflow.users import Principal
from exchange.workspace import Workspace
from tests import workflow_city
from tests.workflow_setup import sh

city = workflow_city.city  # the fixture (SQLite and PostgreSQL stores)
cli = workflow_city.cli
UNTIL = today() + dt.timedelta(days=300)
LONG_AGO = utcnow() - dt.timedelta(days=30)  # a notice given well over 5 working days ago


def subscribe(ws: Workspace, code: str, node: str, department: str) -> int:
    return add_subscription(ws, code, node, None, UNTIL, department=department).id


def outbox(ws: Workspace, kind: str) -> list[tuple[str, dict[str, object]]]:
    with ws.store.session() as s:
        rows = s.scalars(
            sa.select(Notification).where(Notification.kind == kind).order_by(Notification.id)
        )
        return [(n.recipient, n.payload) for n in rows]


def rows_at(ws: Workspace, db: str) -> int:
    path = Path(ws.catalog.path).parent / db
    if not path.exists():
        return 0
    with sqlite3.connect(path) as con:
        found = con.execute("SELECT name FROM sqlite_master WHERE name = 'enterprise'").fetchone()
        return int(con.execute("SELECT count(*) FROM enterprise").fetchone()[0]) if found else 0


def test_the_notice_counts_5_working_days_across_the_national_day_holiday(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    noticed = sh("2026-09-30T10:00")  # Oct 1–7 off; Oct 8, 9, 10 (make-up Saturday), 12, 13

    with pytest.raises(BadInput, match="the earliest allowed date is 2026-10-13$"):
        notices.announce(ws, people["market"], "change", "OPEN", dt.date(2026, 10, 12), "新规",
                         description="legal_person 改为 varchar(100)", now=noticed)  # fmt: skip
    n = notices.announce(ws, people["market"], "change", "OPEN", dt.date(2026, 10, 13), "新规",
                         description="legal_person 改为 varchar(100)", fields=["legal_person"],
                         now=noticed)  # fmt: skip

    assert (n.earliest_on, n.earliest_provisional) == (dt.date(2026, 10, 13), False)
    assert n.fields == ["legal_person"] and n.announced_by == "market"


def test_a_notice_into_a_year_the_calendar_lacks_names_its_earliest_date_as_provisional(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    noticed = sh("2026-12-28T10:00")  # Dec 29, 30, 31, then 2027 on weekends and 1 Jan only

    with pytest.raises(BadInput) as refused:
        notices.announce(ws, people["admin"], "offline", "OPEN", dt.date(2027, 1, 4), "停用",
                         now=noticed)  # fmt: skip
    n = notices.announce(ws, people["admin"], "offline", "OPEN", dt.date(2027, 1, 5), "停用",
                         now=noticed)  # fmt: skip

    assert "the earliest allowed date is 2027-01-05 (provisional" in str(refused.value)
    assert (n.earliest_on, n.earliest_provisional) == (dt.date(2027, 1, 5), True)


def test_who_may_announce_and_what_a_notice_must_say(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    later = today() + dt.timedelta(days=30)

    with pytest.raises(Forbidden, match=r"provided by 市场监督管理局 \(SCJG\)"):
        notices.announce(ws, people["police"], "offline", "OPEN", later, "不是我的")
    with pytest.raises(Forbidden):
        notices.announce(ws, people["tax"], "offline", "OPEN", later, "请求者")
    with pytest.raises(BadInput, match="--description"):
        notices.announce(ws, people["market"], "change", "OPEN", later, "变更")
    with pytest.raises(BadInput, match="has no field 'nope'"):
        notices.announce(ws, people["market"], "change", "OPEN", later, "变更",
                         description="x", fields=["nope"])  # fmt: skip
    with pytest.raises(BadInput, match="cannot replace itself"):
        notices.announce(ws, people["market"], "offline", "OPEN", later, "停用",
                         replacement="OPEN")  # fmt: skip


def test_offline_is_refused_while_a_subscription_is_served_and_no_replacement_is_named(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, _ = city
    sid = subscribe(ws, "OPEN", "tax_fe", "TAX")
    effective = str(today() + dt.timedelta(days=30))

    refused = cli(ws, "resource", "offline", "OPEN", "--effective", effective,
                  "--reason", "系统迁移", "--as", "market")  # fmt: skip

    assert isinstance(refused.exception, BadInput)
    said = str(refused.exception)
    assert f"delivered to subscription(s) {sid} and no replacement is named" in said
    with ws.store.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(AuditEvent).where(
            AuditEvent.kind == "resource.offline_announced")) == 0  # fmt: skip
    assert outbox(ws, "resource.offline_notice") == []


def test_offline_with_a_replacement_tells_every_subscriber_and_offers_the_replacement(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    sid = subscribe(ws, "OPEN", "tax_fe", "TAX")
    effective = dt.date(2026, 12, 14)  # a Monday; the notice is given 10 days earlier

    done = cli(ws, "resource", "offline", "OPEN", "--effective", str(effective), "--reason",
               "系统迁移", "--replacement", "COND", "--as", "market",
               "--at", "2026-12-04T10:00")  # fmt: skip

    assert done.exit_code == 0, done.output
    assert "resource OPEN goes offline on 2026-12-14, replaced by COND [pending]" in done.output
    [(to, told)] = outbox(ws, "resource.offline_notice")
    assert to == "requester:TAX" and told["replacement"] == "COND"
    with pytest.raises(BadInput, match="subscribe to its replacement COND"):
        subscribe(ws, "OPEN", "hrss_fe", "HRSS")  # announced offline: no new subscriber

    assert tick(ws, sh("2026-12-13T23:00")).notices_applied == 0  # not before its day
    assert tick(ws, sh("2026-12-14T08:00")).notices_applied == 1
    assert tick(ws, sh("2026-12-14T09:00")).notices_applied == 0  # once

    [(to, offer)] = outbox(ws, "resource.replacement_offered")
    assert to == "requester:TAX" and offer["replacement"] == "COND"
    assert "apply for COND instead" in str(offer["offer"])
    with ws.store.session() as s:
        events = s.execute(
            sa.select(AuditEvent.kind, AuditEvent.actor, AuditEvent.payload)
            .where(AuditEvent.kind.like("resource.%"))
            .order_by(AuditEvent.id)
        ).all()
    assert [(k, a) for k, a, _ in events] == [
        ("resource.offline_announced", "market"),
        ("resource.offline_applied", "housekeeping"),
    ]
    assert events[1][2]["subscriptions"] == [sid]
    shown = cli(ws, "resource", "notices", "OPEN").output
    assert "resource OPEN offline on 2026-12-14, replaced by COND [applied]" in shown


def test_an_offline_resource_stops_delivering_on_its_effective_date_and_not_before(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    subscribe(ws, "OPEN", "tax_fe", "TAX")
    subscribe(ws, "COND", "hrss_fe", "HRSS")
    for code, day in (("OPEN", today()), ("COND", today() + dt.timedelta(days=1))):
        notices.announce(ws, people["market"], "offline", code, day, "系统迁移",
                         replacement="POLICE", now=LONG_AGO)  # fmt: skip

    gone = cli(ws, "run", "OPEN")
    served = run_resource(ws, "COND")  # effective tomorrow: still delivered today

    assert gone.exit_code == 0, gone.output
    assert f"resource OPEN is offline since {today()} (notice 1: 系统迁移)" in gone.output
    assert "no subscription is delivered" in gone.output
    assert rows_at(ws, "tax.db") == 0
    assert served.status == "succeeded" and not served.failures
    assert rows_at(ws, "hrss.db") == 40
    status = cli(ws, "status", "OPEN").output
    assert "notice 1: resource OPEN offline on" in status


def test_a_change_notice_is_in_effect_from_its_date(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    notices.announce(ws, people["market"], "change", "OPEN", today() + dt.timedelta(days=1),
                     "口径调整", description="reg_capital 精度 18,4", fields=["reg_capital"],
                     now=LONG_AGO)  # fmt: skip

    with ws.store.session() as s:
        assert notices.effective_change_notice(s, "OPEN", today()) is None
        n = notices.effective_change_notice(s, "OPEN", today() + dt.timedelta(days=1))
        assert notices.effective_change_notice(s, "COND", today() + dt.timedelta(days=9)) is None
    assert n is not None and n.fields == ["reg_capital"] and n.state == "effective"


@pytest.mark.postgres
def test_a_postgresql_subscriber_of_an_offline_resource_receives_nothing_from_its_date(
    city: tuple[Workspace, dict[str, Principal]],
    pg_database: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ws, people = city
    catalog = Path(ws.catalog.path)
    node = "  - {name: tax_pg, kind: postgresql, department: TAX, connection: {env: TAX_PG}}\n"
    text = catalog.read_text(encoding="utf-8")
    catalog.write_text(text.replace("resources:\n", node + "resources:\n", 1), encoding="utf-8")
    monkeypatch.setenv("TAX_PG", pg_database)
    ws = Workspace.open(catalog, ws.settings)
    try:
        add_subscription(ws, "OPEN", "tax_pg", None, UNTIL, department="TAX")
        add_subscription(ws, "COND", "tax_pg", None, UNTIL, department="TAX",
                         target_table="enterprise_cond")  # fmt: skip
        for code, day in (("OPEN", today()), ("COND", today() + dt.timedelta(days=1))):
            notices.announce(ws, people["market"], "offline", code, day, "系统迁移",
                             replacement="POLICE", now=LONG_AGO)  # fmt: skip

        gone = run_resource(ws, "OPEN")
        served = run_resource(ws, "COND")
    finally:
        ws.close()

    assert any("resource OPEN is offline since" in n for n in gone.notes)
    assert served.status == "succeeded" and not served.failures
    engine = sa.create_engine(pg_database)
    try:
        with engine.connect() as con:
            tables = set(sa.inspect(con).get_table_names())
            cond_rows = con.execute(sa.text("SELECT count(*) FROM enterprise_cond")).scalar()
    finally:
        engine.dispose()
    assert "enterprise" not in tables and cond_rows == 40
