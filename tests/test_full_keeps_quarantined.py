"""A snapshot or ``--full`` run reconciles deletes without deleting what the source still has:
a row quarantined in that run keeps its last good version at every subscriber (it used to be
deleted, silently, because only the valid rows were compared with the target)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from exchange.demo.registry import COLUMNS
from exchange.flow import run_resource
from exchange.workflow.grants import add_subscription
from exchange.workspace import Workspace
from tests.conftest import catalog_yaml
from tests.sources import create_source, projection, registry, table_rows, upsert_source
from tests.test_quality_flow import FAR, GRANT_A, resource_yaml

PHONE = COLUMNS.index("phone")


@pytest.mark.postgres
@pytest.mark.mariadb
def test_a_full_run_deletes_what_the_source_lost_but_keeps_what_it_quarantined(
    tmp_path: Path,
    pg_database: str,
    mariadb_database: str,
    make_workspace: Callable[[str], Workspace],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = f"sqlite:///{tmp_path / 'src.db'}"
    rows = registry(range(1, 41))
    create_source(source, rows)
    nodes = {
        "src": ("sqlite", "{path: src.db}"),
        "pg": ("postgresql", "{env: PG_URL}"),
        "maria": ("mysql", "{env: MARIA_URL}"),
    }
    monkeypatch.setenv("PG_URL", pg_database)
    monkeypatch.setenv("MARIA_URL", mariadb_database)
    ws = make_workspace(catalog_yaml(nodes, resource_yaml(quality="max_bad_ratio: 0.5")))
    for node in ("pg", "maria"):
        add_subscription(ws, "ENT", node, GRANT_A, FAR, target_table="ent")
    assert run_resource(ws, "ENT").status == "succeeded"

    # The provider deletes 40 and breaks 7's phone (still in its table, now quarantined).
    broken = list(rows[6])
    broken[PHONE] = "123"
    upsert_source(source, [tuple(broken)])
    with sqlite3.connect(tmp_path / "src.db") as db:
        db.execute("DELETE FROM enterprise WHERE id = 40")

    summary = run_resource(ws, "ENT", full=True)

    assert summary.status == "succeeded" and summary.quarantined == 1
    expected = projection([r for r in rows if r[0] != 40], GRANT_A)  # 7 as last delivered
    for url in (pg_database, mariadb_database):
        assert table_rows(url, GRANT_A, "ent") == expected
