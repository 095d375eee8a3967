"""What was kept before keys were masked is masked once the key is at hand, and released.

From a review: a quarantine entry written before migration 0009 keeps its raw ID number key
and no digest; the release looked entries up by digest only, so such a row was never
released, and the key went on being shown raw. Now the first run of the resource (where the
digest key is available) gives every such entry the digest of its raw key and the masked text,
masks the tickets' sample keys, and does the same to error reports filed before.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa

from exchange.flow import run_resource
from exchange.kernel.clock import utcnow
from exchange.kernel.settings import Settings
from exchange.quality.error_reports import show_report
from exchange.quality.models import (
    ErrorReport,
    QualityTicket,
    QuarantineEntry,
    QuarantineKeyCheck,
)
from exchange.quality.quarantine import KEY_FILE, list_quarantine
from exchange.workflow.grants import add_subscription
from exchange.workspace import Workspace
from tests.conftest import catalog_yaml
from tests.sources import create_source, registry, upsert_source
from tests.test_quality_masked_keys import FAR, RESOURCE

ID, PHONE, AT = 4, 11, 7  # the columns of tests.sources' rows


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'exchange.db'}"
    return str(request.getfixturevalue("pg_database"))


def as_before_masking(ws: Workspace, raw: str) -> int:
    """The store as a version before migration 0009 left it: the entry's key raw without a
    digest, the ticket's sample raw, an error report on the raw key, and no digest key yet."""
    with ws.store.session() as s:
        s.execute(sa.update(QuarantineEntry).values(row_key=raw, key_digest=None))
        s.scalars(sa.select(QualityTicket)).one().sample_keys = [raw]
        s.execute(sa.delete(QuarantineKeyCheck))
        report = ErrorReport(
            resource_code="IDS", subscription_id=1, reporter="dst", row_keys=[raw],
            fields=["phone"], description="电话有误", reported_at=utcnow(),
            due_at=utcnow() + dt.timedelta(days=3), status="open",
        )  # fmt: skip
        s.add(report)
        s.flush()
        report_id = report.id
    (ws.settings.home / KEY_FILE).unlink()
    return report_id


def test_entries_and_reports_kept_before_masking_are_masked_and_released(
    tmp_path: Path, store_url: str
) -> None:
    src = f"sqlite:///{tmp_path / 'src.db'}"
    rows = [list(r) for r in registry(range(1, 11))]
    rows[3][PHONE] = "12"  # a bad phone: quarantined under its key, released once fixed
    create_source(src, [tuple(r) for r in rows])
    nodes = {"src": ("sqlite", "{path: src.db}"), "dst": ("sqlite", "{path: dst.db}")}
    (tmp_path / "catalog.yaml").write_text(catalog_yaml(nodes, RESOURCE), "utf-8")
    ws = Workspace.open(tmp_path / "catalog.yaml", Settings(home=tmp_path, db_url=store_url))
    try:
        add_subscription(ws, "IDS", "dst", None, FAR, target_table="people")
        raw = str(rows[3][ID])
        masked = raw[:3] + "****" + raw[-2:]
        assert run_resource(ws, "IDS").quarantined == 1
        report_id = as_before_masking(ws, raw)

        assert [x.row_key for x in list_quarantine(ws, "IDS")[1]] == [masked]  # shown masked

        fixed = list(rows[3])
        fixed[PHONE], fixed[AT] = "13800138000", dt.datetime(2026, 11, 30, 9, 0, 0)
        upsert_source(src, [tuple(fixed)])
        second = run_resource(ws, "IDS")

        assert second.quarantined == 0
        assert list_quarantine(ws, "IDS")[0] == 0  # released
        with ws.store.session() as s:
            (entry,) = s.scalars(sa.select(QuarantineEntry)).all()
            ticket = s.scalars(sa.select(QualityTicket)).one()
            report = s.get_one(ErrorReport, report_id)
        assert (entry.row_key, entry.released_run_id) == (masked, second.run_id)
        assert entry.key_digest is not None and len(entry.key_digest) == 16
        assert ticket.sample_keys == [masked]
        assert report.row_keys == [masked] and report.key_digests is not None
        view = show_report(ws, report_id)
        assert [d.keys for d in view.fix_deliveries] == [[masked]]
        assert view.reached == [1]
    finally:
        ws.close()
