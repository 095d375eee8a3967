"""The small city of ``tests.workflow_setup`` and the demo catalog's file nodes as pytest
fixtures for the workflow's test modules (``city = workflow_city.city`` in the module), and
the CLI run in this process against a workspace."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from exchange.cli.app import app
from exchange.kernel.settings import Settings
from exchange.workflow.users import Principal
from exchange.workspace import Workspace
from tests.workflow_setup import add_people, open_city

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def city(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Workspace, dict[str, Principal]]]:
    """The small city (TAX and HRSS request, SCJG and GAJ provide) and its people, on a
    SQLite metadata store and on PostgreSQL."""
    url = None if request.param == "sqlite" else request.getfixturevalue("pg_database")
    ws = open_city(tmp_path, url)
    yield ws, add_people(ws)
    ws.close()


@pytest.fixture
def files_city(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    """The demo catalog's file nodes (SWJ's tax_files, RSJ's hrss_files) and one report in
    SCJG's market_files; the Airflow steps open the same store."""
    (tmp_path / "catalog.yaml").write_text(
        (ROOT / "schemas/examples/demo.yaml").read_text("utf-8"), "utf-8"
    )
    reports = tmp_path / "files/market/out/annual_reports/2025"
    reports.mkdir(parents=True)
    (reports / "r1.pdf").write_bytes(b"%PDF-1.7 annual report")
    for d in ("tax", "hrss"):
        (tmp_path / "files" / d).mkdir(parents=True)
    settings = Settings(home=tmp_path, db_url=f"sqlite:///{tmp_path / 'exchange.db'}")
    monkeypatch.setenv("EXCHANGE_HOME", str(tmp_path))
    monkeypatch.setenv("EXCHANGE_DB_URL", settings.db_url)
    ws = Workspace.open(tmp_path / "catalog.yaml", settings)
    yield ws
    ws.close()


def cli(ws: Workspace, *args: str) -> Result:
    """The command in this process, on the workspace's catalog and store."""
    env = {
        "EXCHANGE_HOME": str(ws.settings.home),
        "EXCHANGE_CATALOG": ws.catalog.path,
        "EXCHANGE_DB_URL": ws.settings.db_url,
        "COLUMNS": "250",
    }
    return CliRunner().invoke(app, list(args), env=env)
