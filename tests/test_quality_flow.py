"""Quality in the exchange, on real databases: bad rows are held back with their reasons,
the provider gets a ticket with a deadline, fixes flow to every subscriber, a run with too many
bad rows delivers nothing, and the six scores follow from what the runs found."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from exchange.demo.registry import COLUMNS
from exchange.flow import run_resource
from exchange.kernel.workdays import add_working_days
from exchange.quality.error_reports import answer_report, file_report, show_report
from exchange.quality.models import QualityRunStat, QualityTicket
from exchange.quality.quarantine import list_quarantine
from exchange.quality.scores import resource_scores
from exchange.quality.tickets import answer_ticket, close_ticket, list_tickets, overdue
from exchange.runs.handle import RunHandle
from exchange.store.models import Delivery, Run, Watermark
from exchange.workflow.grants import add_subscription
from exchange.workspace import Workspace
from tests.conftest import catalog_yaml
from tests.sources import create_source, projection, registry, table_rows, upsert_source

FAR = dt.date.today() + dt.timedelta(days=300)
RULES = {
    "uscc": "rules: {validator: uscc}",
    "id_card": "rules: {validator: resident_id}",
    "phone": "rules: {validator: phone}",
    "region_code": "rules: {validator: region_code}",
    "status": "rules: {enum: [1, 2, 3, 4]}",
}
TYPES = {
    "id": "bigint, nullable: false", "uscc": "char, length: 18, nullable: false",
    "name": "varchar, length: 100, nullable: false", "legal_person": "varchar, length: 50",
    "id_card": "char, length: 18", "reg_capital": "decimal, precision: 18, scale: 2",
    "established": "date", "updated_at": "timestamp, nullable: false", "status": "smallint",
    "region_code": "char, length: 6", "address": "varchar, length: 200",
    "phone": "varchar, length: 20", "industry": "varchar, length: 10", "scope": "text",
    "is_active": "boolean", "remark": "varchar, length: 200",
}  # fmt: skip


def resource_yaml(mode: str = "incremental", quality: str = "max_bad_ratio: 0.05") -> str:
    fields = "\n".join(
        f"    - {{name: {c}, type: {TYPES[c]}" + (f", {RULES[c]}" if c in RULES else "") + "}"
        for c in COLUMNS
    )
    return f"""\
- code: ENT
  name: 企业登记信息
  kind: table
  provider: src
  share: unconditional
  source: {{table: enterprise}}
  mode: {mode}
  primary_key: [id]
  cursor: updated_at
  batch_size: 150
  quality: {{{quality}}}
  fields:
{fields}
"""


GRANT_A = ["id", "uscc", "name", "phone", "updated_at"]
GRANT_B = ["id", "uscc", "id_card", "region_code", "status"]
T1 = dt.datetime(2026, 11, 20, 9, 0, 0)


def damage(rows: list[tuple[object, ...]]) -> tuple[list[tuple[object, ...]], dict[int, str]]:
    """Break a few rows; return them and, per broken id, the rules it must be held for."""
    at = {c: COLUMNS.index(c) for c in COLUMNS}
    out = [list(r) for r in rows]
    why: dict[int, str] = {}

    def put(i: int, col: str, value: object, rule: str) -> None:
        out[i - 1][at[col]] = value
        why[i] = (why[i] + "; " if i in why else "") + rule

    u = str(out[9][at["uscc"]])
    put(10, "uscc", u[:17] + ("0" if u[-1] != "0" else "1"), "uscc:uscc")
    put(20, "phone", "0000", "phone:phone")
    put(30, "id_card", str(out[29][at["id_card"]])[:10] + "13" + str(out[29][at["id_card"]])[12:],
        "resident_id:id_card")  # fmt: skip
    put(40, "status", 7, "enum:status")  # rules run in catalog order: status, then region
    put(40, "region_code", "990000", "region_code:region_code")
    return [tuple(r) for r in out], why


@pytest.mark.postgres
@pytest.mark.mariadb
def test_bad_rows_are_held_with_reasons_and_their_fix_reaches_every_subscriber(
    pg_database: str,
    mariadb_database: str,
    make_workspace: Callable[[str], Workspace],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SRC_URL", pg_database)
    monkeypatch.setenv("MARIA_URL", mariadb_database)
    clean = registry(range(1, 401))
    rows, why = damage(clean)
    create_source(pg_database, rows)
    nodes = {
        "src": ("postgresql", "{env: SRC_URL}"),
        "pg_b": ("postgresql", "{env: SRC_URL}"),
        "maria_a": ("mysql", "{env: MARIA_URL}"),
    }
    ws = make_workspace(catalog_yaml(nodes, resource_yaml()))
    add_subscription(ws, "ENT", "maria_a", GRANT_A, FAR, target_table="ent_a")
    add_subscription(ws, "ENT", "pg_b", GRANT_B, FAR, target_table="ent_b")

    first = run_resource(ws, "ENT")

    assert first.status == "succeeded", first.failures
    assert (first.extracted, first.valid, first.quarantined) == (400, 396, 4)
    assert first.valid + first.quarantined == first.extracted
    good = [r for r in rows if r[0] not in why]
    assert table_rows(mariadb_database, GRANT_A, "ent_a") == projection(good, GRANT_A)
    assert table_rows(pg_database, GRANT_B, "ent_b") == projection(good, GRANT_B)
    rd = RunHandle.open(ws, first.run_id).dir
    held = pq.read_table(rd.part("quarantine")).to_pylist()
    assert {
        r["id"]: "; ".join(x.split("=")[0] for x in r["_reasons"].split("; ")) for r in held
    } == why
    assert "phone:phone=****00" in next(r["_reasons"] for r in held if r["id"] == 20)
    total, indexed = list_quarantine(ws, "ENT")
    assert total == 4
    assert {x.row_key: x.reasons for x in indexed} == {str(r["id"]): r["_reasons"] for r in held}

    with ws.store.session() as s:
        (ticket,) = list_tickets(s, "ENT")
        assert ticket.status == "open" and ticket.provider == "src"
        assert ticket.counts == {
            "uscc:uscc": 1, "phone:phone": 1, "resident_id:id_card": 1,
            "region_code:region_code": 1, "enum:status": 1,
        }  # fmt: skip
        assert sorted(ticket.sample_keys) == ["10", "20", "30", "40"]
        assert ticket.due_at == add_working_days(ticket.opened_at, 3).utc

    # A requester reports row 100 (a good row) and row 10; the provider fixes both at the
    # source, along with the other broken rows, which moves their cursor.
    report = file_report(ws, "ENT", ["10", "100"], ["uscc", "phone"], "号码有误", subscription_id=1)
    answer_report(ws, report.id, "fixed_at_source", "已更正")
    fixed = registry([10, 20, 30, 40, 100], T1)
    upsert_source(pg_database, fixed)

    second = run_resource(ws, "ENT")

    assert second.status == "succeeded" and second.quarantined == 0
    now_rows = {r[0]: r for r in clean} | {r[0]: r for r in fixed}
    final = [now_rows[k] for k in sorted(now_rows)]
    assert table_rows(mariadb_database, GRANT_A, "ent_a") == projection(final, GRANT_A)
    assert table_rows(pg_database, GRANT_B, "ent_b") == projection(final, GRANT_B)
    assert list_quarantine(ws, "ENT")[0] == 0
    released = list_quarantine(ws, "ENT", include_released=True)[1]
    assert {x.released_run_id for x in released} == {second.run_id}
    view = show_report(ws, report.id)
    assert view.reached == [1, 2] == view.subscribers
    assert {(d.run_id, d.subscription_id, tuple(d.keys)) for d in view.fix_deliveries} == {
        (second.run_id, 1, ("10", "100")),
        (second.run_id, 2, ("10", "100")),
    }


@pytest.fixture
def sqlite_source(tmp_path: Path) -> Callable[[list[tuple[object, ...]]], None]:
    def fill(rows: list[tuple[object, ...]]) -> None:
        url = f"sqlite:///{tmp_path / 'src.db'}"
        if not (tmp_path / "src.db").exists():
            create_source(url, rows)
        else:
            upsert_source(url, rows)

    return fill


SQLITE_NODES = {"src": ("sqlite", "{path: src.db}"), "a": ("sqlite", "{path: a.db}")}


def test_too_many_bad_rows_hold_the_whole_run_back_until_the_source_is_fixed(
    tmp_path: Path,
    make_workspace: Callable[[str], Workspace],
    sqlite_source: Callable[[list[tuple[object, ...]]], None],
) -> None:
    clean = registry(range(1, 61))
    rows, why = damage(clean)  # 4 of 60 rows: 6.7 %, more than 5 %
    sqlite_source(rows)
    ws = make_workspace(catalog_yaml(SQLITE_NODES, resource_yaml()))
    add_subscription(ws, "ENT", "a", GRANT_A, FAR, target_table="ent")

    held = run_resource(ws, "ENT")

    assert held.status == "held"
    assert held.held == "4 of 60 rows bad (6.7%), more than the resource allows (5.0%)"
    assert held.failures == {1: f"held back: {held.held}"}
    with sqlite3.connect(tmp_path / "a.db") as db:
        assert db.execute("SELECT name FROM sqlite_master WHERE name = 'ent'").fetchall() == []
    with ws.store.session() as s:
        assert s.execute(sa.select(Delivery.status, Delivery.rows)).all() == [("held", 0)]
        assert s.get(Watermark, 1) is None
        (ticket,) = list_tickets(s, "ENT")
        assert ticket.findings == [f"held back: {held.held}"]

    sqlite_source(registry(sorted(why), T1))
    after = run_resource(ws, "ENT")

    assert after.status == "succeeded" and after.extracted == 60 and after.quarantined == 0
    with sqlite3.connect(tmp_path / "a.db") as db:
        assert db.execute("SELECT count(*) FROM ent").fetchone() == (60,)


def test_a_snapshot_outside_its_row_bounds_is_held_and_stale_data_is_flagged(
    make_workspace: Callable[[str], Workspace],
    sqlite_source: Callable[[list[tuple[object, ...]]], None],
) -> None:
    sqlite_source(registry(range(1, 21)))  # updated_at in January 2024: long stale
    quality = "row_count: {min: 50}, freshness: cycle"
    ws = make_workspace(catalog_yaml(SQLITE_NODES, resource_yaml("snapshot", quality)))
    add_subscription(ws, "ENT", "a", GRANT_A, FAR, target_table="ent")

    summary = run_resource(ws, "ENT")

    assert summary.held == "20 rows extracted, fewer than the minimum 50"
    assert summary.stale is not None and summary.stale.startswith("stale: newest row 2024-01-01")


def test_tickets_are_answered_then_closed_and_overdue_ones_are_reported(
    make_workspace: Callable[[str], Workspace],
    sqlite_source: Callable[[list[tuple[object, ...]]], None],
) -> None:
    rows, _ = damage(registry(range(1, 201)))
    sqlite_source(rows)
    ws = make_workspace(catalog_yaml(SQLITE_NODES, resource_yaml()))
    add_subscription(ws, "ENT", "a", GRANT_A, FAR, target_table="ent")
    run_resource(ws, "ENT")
    with ws.store.session() as s:
        (ticket,) = list_tickets(s)
        later = ticket.due_at + dt.timedelta(seconds=1)
        assert not overdue(ticket, ticket.due_at) and overdue(ticket, later)
        assert [t.id for t in list_tickets(s, overdue_at=later)] == [ticket.id]
        assert list_tickets(s, overdue_at=ticket.due_at) == []
        with pytest.raises(Exception, match="answer it before closing"):
            close_ticket(s, ticket.id)
    with ws.store.session() as s:
        answer_ticket(s, ticket.id, "will_not_fix", "历史数据，原始档案如此")
    with ws.store.session() as s:
        close_ticket(s, ticket.id)
        t = s.get(QualityTicket, ticket.id)
        assert t is not None and (t.status, t.resolution) == ("closed", "will_not_fix")
        assert list_tickets(s, overdue_at=later) == []


def test_the_six_scores_follow_from_the_runs_of_the_period(
    make_workspace: Callable[[str], Workspace],
) -> None:
    ws = make_workspace(catalog_yaml(SQLITE_NODES, resource_yaml()))
    # Mon 16 .. Fri 20 November 2026: five working days; runs succeeded on four of them
    # (09:00 Asia/Shanghai = 01:00 UTC), and one more failed on the Friday.
    days = [16, 17, 18, 19]
    with ws.store.session() as s:
        for n, day in enumerate(days):
            run_id = f"r{day}"
            s.add(Run(id=run_id, resource_code="ENT", status="succeeded", step="record",
                      staging_dir="-", started_at=dt.datetime(2026, 11, day, 1, 0)))  # fmt: skip
            s.flush()
            s.add(QualityRunStat(
                run_id=run_id, resource_code="ENT", extracted=250, valid=240, quarantined=10,
                by_rule={}, by_dimension={"normativity": 5, "authenticity": 4,
                                          "completeness": 1 if n == 0 else 0},
                stale="stale: ..." if n == 3 else None,
                at=dt.datetime(2026, 11, day, 1, 0),
            ))  # fmt: skip
        s.add(Run(id="r20", resource_code="ENT", status="failed", step="load",
                  staging_dir="-", started_at=dt.datetime(2026, 11, 20, 1, 0)))  # fmt: skip

    (score,) = resource_scores(ws, dt.date(2026, 11, 16), dt.date(2026, 11, 22))

    assert (score.runs, score.rows) == (5, 1000)
    assert score.continuity == 80.0  # 4 of 5 working days
    assert score.normativity == 98.0  # 1 - 20/1000
    assert score.authenticity == 98.4  # 1 - 16/1000
    assert score.completeness == 99.9
    assert score.consistency == 100.0
    assert score.validity == 75.0  # 1 stale run of 4 judged


def test_valid_rows_are_all_there_whether_the_first_bad_row_comes_late_or_never(
    make_workspace: Callable[[str], Workspace],
    sqlite_source: Callable[[list[tuple[object, ...]]], None],
) -> None:
    rows = registry(range(1, 501))  # batches of 150: the bad row sits in the third
    at = COLUMNS.index("phone")
    rows[399] = rows[399][:at] + ("0000",) + rows[399][at + 1 :]
    sqlite_source(rows)
    ws = make_workspace(catalog_yaml(SQLITE_NODES, resource_yaml()))
    add_subscription(ws, "ENT", "a", GRANT_A, FAR, target_table="ent")

    late = run_resource(ws, "ENT")

    rd = RunHandle.open(ws, late.run_id).dir
    assert pq.read_table(rd.part("valid")).column("id").to_pylist() == [
        i for i in range(1, 501) if i != 400
    ]
    assert pq.read_table(rd.part("quarantine")).column("id").to_pylist() == [400]

    sqlite_source(registry([400], T1))  # fixed: the next run has no bad row at all
    clean = run_resource(ws, "ENT")

    rd = RunHandle.open(ws, clean.run_id).dir
    assert clean.quarantined == 0 and not rd.part("quarantine").exists()
    assert rd.part("valid").samefile(rd.part("extract"))  # the same file, not a copy
    # 400 is fixed; 500 ties on the old watermark and is extracted again (>=, never lost).
    assert sorted(pq.read_table(rd.part("valid")).column("id").to_pylist()) == [400, 500]


def test_an_on_demand_resource_counts_only_closed_runs_a_failed_step_is_not_yet_a_miss(
    make_workspace: Callable[[str], Workspace],
) -> None:
    yaml = resource_yaml().replace(
        "  mode: incremental", "  mode: incremental\n  update_cycle: on_demand"
    )
    ws = make_workspace(catalog_yaml(SQLITE_NODES, yaml))
    closed = dt.datetime(2026, 11, 17, 2, 0)
    with ws.store.session() as s:
        for run_id, status, finished in [
            ("r1", "succeeded", closed),
            ("r2", "abandoned", closed),  # closed without delivering: a miss
            ("r3", "failed", None),  # a step raised; the next run resumes it
        ]:
            s.add(Run(id=run_id, resource_code="ENT", status=status, step="extract",
                      staging_dir="-", started_at=dt.datetime(2026, 11, 17, 1, 0),
                      finished_at=finished))  # fmt: skip

    (score,) = resource_scores(ws, dt.date(2026, 11, 16), dt.date(2026, 11, 22))

    assert score.continuity == 50.0  # 1 of the 2 closed runs succeeded
