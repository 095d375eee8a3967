"""A row key that is an ID number is masked wherever quarantine shows or keeps it.

From a stranger's trial: when the primary key IS the resident ID number, ``exchange quality
quarantine`` and the ticket's sample keys showed it unmasked, and the quarantine index kept it.
Now such a key is shown and stored masked as in the reasons (410****13), and a keyed hash of
the raw key (its secret in $EXCHANGE_HOME, not in the store) is what releases the row once
it is fixed at the source; an error report and the deliveries that carried its fix keep
the keys masked too, with the digests of the keys its requester gave to match them by.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from exchange.cli.app import app
from exchange.flow import run_resource
from exchange.kernel.settings import Settings
from exchange.quality.error_reports import file_report, show_report
from exchange.quality.models import QualityTicket, QuarantineEntry
from exchange.quality.quarantine import list_quarantine
from exchange.store.models import AuditEvent
from exchange.workflow.grants import add_subscription
from exchange.workspace import Workspace
from tests.conftest import catalog_yaml
from tests.sources import create_source, registry, upsert_source

FAR = dt.date.today() + dt.timedelta(days=300)
RESOURCE = """\
- code: IDS
  name: 人员信息
  kind: table
  provider: src
  share: unconditional
  source: {table: enterprise}
  mode: incremental
  primary_key: [id_card]
  cursor: updated_at
  quality: {max_bad_ratio: 0.5}
  fields:
    - {name: id_card, type: char, length: 18, nullable: false, rules: {validator: resident_id}}
    - {name: name, type: varchar, length: 100, nullable: false}
    - {name: phone, type: varchar, length: 20, rules: {validator: mobile}}
    - {name: updated_at, type: timestamp, nullable: false}
"""
ID, PHONE = 4, 11  # the columns of tests.sources' rows


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The metadata store: SQLite and PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'exchange.db'}"
    return str(request.getfixturevalue("pg_database"))


def test_an_id_number_key_is_masked_in_quarantine_tickets_and_the_store(
    tmp_path: Path, store_url: str
) -> None:
    src = f"sqlite:///{tmp_path / 'src.db'}"
    rows = [list(r) for r in registry(range(1, 21))]
    bad_id = str(rows[4][ID])[:16] + ("00" if str(rows[4][ID])[16:] != "00" else "11")
    rows[4][ID] = bad_id  # a wrong check digit: quarantined for its key itself
    rows[5][PHONE] = "12"  # a bad phone on a good key: released once fixed
    create_source(src, [tuple(r) for r in rows])
    nodes = {"src": ("sqlite", "{path: src.db}"), "dst": ("sqlite", "{path: dst.db}")}
    (tmp_path / "catalog.yaml").write_text(catalog_yaml(nodes, RESOURCE), "utf-8")
    ws = Workspace.open(tmp_path / "catalog.yaml", Settings(home=tmp_path, db_url=store_url))
    try:
        check_masked(tmp_path, ws, src, rows)
    finally:
        ws.close()


def check_masked(tmp_path: Path, ws: Workspace, src: str, rows: list[list[object]]) -> None:
    """Run, look everywhere a key shows or is kept, fix one row, run again."""
    bad_id = str(rows[4][ID])
    add_subscription(ws, "IDS", "dst", None, FAR, target_table="people")
    raw = [bad_id, str(rows[5][ID])]

    first = run_resource(ws, "IDS")

    assert first.quarantined == 2
    total, held = list_quarantine(ws, "IDS")
    shown = sorted(x.row_key for x in held)
    assert total == 2 and shown == sorted(k[:3] + "****" + k[-2:] for k in raw)
    with ws.store.session() as s:
        (ticket,) = s.scalars(sa.select(QualityTicket)).all()
        stored = s.execute(
            sa.select(QuarantineEntry.row_key, QuarantineEntry.reasons, QuarantineEntry.key_digest)
        ).all()
    assert sorted(ticket.sample_keys) == shown
    for key in raw:
        assert not any(key in text for row in stored for text in row[:2]), stored
        assert key not in " ".join(ticket.findings)
    assert all(row.key_digest is not None and len(row.key_digest) == 16 for row in stored)
    assert (tmp_path / "quarantine.key").stat().st_mode & 0o777 == 0o600

    report = file_report(ws, "IDS", [raw[1]], ["phone"], "电话有误", subscription_id=1)
    fixed = list(rows[5])
    fixed[PHONE], fixed[7] = "13800138000", dt.datetime(2026, 11, 30, 9, 0, 0)
    upsert_source(src, [tuple(fixed)])
    second = run_resource(ws, "IDS")

    assert second.quarantined == 0
    total, held = list_quarantine(ws, "IDS")
    assert [x.row_key for x in held] == [bad_id[:3] + "****" + bad_id[-2:]]
    view = show_report(ws, report.id)
    assert view.report.row_keys == [raw[1][:3] + "****" + raw[1][-2:]]
    assert [d.keys for d in view.fix_deliveries] == [view.report.row_keys]
    assert view.reached == [1]
    with ws.store.session() as s:
        kept = s.execute(sa.text("SELECT * FROM quality_error_reports")).all()
        kept += s.execute(sa.text("SELECT * FROM quality_error_report_deliveries")).all()
    assert not any(raw[1] in str(row) for row in kept), kept
    with ws.store.session() as s:
        events = s.scalars(
            sa.select(AuditEvent).where(AuditEvent.kind.like("quality.error_report.%"))
        ).all()
    assert {e.kind for e in events} >= {"quality.error_report.fix_delivered"}
    assert not any(raw[1] in json.dumps(e.payload, ensure_ascii=False) for e in events)
    env = {"EXCHANGE_HOME": str(tmp_path), "EXCHANGE_CATALOG": ws.catalog.path,
           "EXCHANGE_DB_URL": ws.settings.db_url, "COLUMNS": "250"}  # fmt: skip
    for command in (["list"], ["show", str(report.id)]):
        shown_report = CliRunner().invoke(app, ["quality", "error-report", *command], env=env)
        assert shown_report.exit_code == 0, shown_report.output
        assert raw[1] not in shown_report.stdout
        assert raw[1][:3] + "****" + raw[1][-2:] in shown_report.stdout
