"""The target schema check on real MariaDB and PostgreSQL subscribers, and
``exchange catalog check``: a subscriber whose existing table would round, truncate or refuse
values is refused by name before a row moves, the others are served; a missing column is added
and said so (or refused under ``target_columns: refuse``)."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from exchange.flow import run_resource
from exchange.store.models import AuditEvent, Delivery
from exchange.workflow.grants import add_subscription
from exchange.workspace import Workspace
from tests.conftest import catalog_yaml
from tests.sources import connect

pytestmark = [pytest.mark.postgres, pytest.mark.mariadb]

FAR = dt.date.today() + dt.timedelta(days=300)
FIELDS = ["id", "name", "base_amount"]
RESOURCE = """\
- code: ENT
  name: 企业纳税基数
  kind: table
  provider: src
  share: unconditional
  source: {table: enterprise}
  primary_key: [id]
  fields:
    - {name: id, type: bigint, nullable: false}
    - {name: name, type: varchar, length: 100, nullable: false}
    - {name: base_amount, type: decimal, precision: 12, scale: 2}
"""
ROWS = [(i, f"企业{i}", Decimal(f"{i * 1000}.37")) for i in range(1, 41)]
REFUSED = (
    "table enterprise column base_amount: declared decimal(12,2), found {found}: "
    "narrower (amounts would be rounded)"
)


def make_source(home: Path, *, keyed: bool = True) -> None:
    with sqlite3.connect(home / "src.db") as db:
        key = "PRIMARY KEY" if keyed else ""
        db.execute(
            f"CREATE TABLE enterprise (id INTEGER {key}, name TEXT NOT NULL, base_amount TEXT)"
        )
        db.executemany(
            "INSERT INTO enterprise VALUES (?, ?, ?)", [(i, n, str(a)) for i, n, a in ROWS]
        )


def execute(url: str, *statements: str) -> None:
    with connect(url) as conn:
        cur = conn.cursor()
        for s in statements:
            cur.execute(s)
        conn.commit()


def rows(url: str) -> list[tuple[Any, ...]]:
    with connect(url) as conn:
        cur = conn.cursor()
        cur.execute("SELECT id, name, base_amount FROM enterprise ORDER BY id")
        return [tuple(r) for r in cur.fetchall()]


def columns(url: str) -> list[str]:
    with connect(url) as conn:
        cur = conn.cursor()
        cur.execute("SELECT * FROM enterprise WHERE 1 = 0")
        return [d[0] for d in cur.description]


@pytest.fixture
def setup(
    tmp_path: Path,
    pg_database: str,
    mariadb_database: str,
    make_workspace: Callable[[str], Workspace],
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[..., Workspace]:
    """``setup(tax_fe=DDL, hr_fe=DDL, resource=...)``: a SQLite provider, a MariaDB (tax_fe)
    and a PostgreSQL (hr_fe) subscriber, each with its table pre-created when DDL is given."""
    monkeypatch.setenv("TAX_URL", mariadb_database)
    monkeypatch.setenv("HR_URL", pg_database)

    def make(
        tax_fe: str | None = None,
        hr_fe: str | None = None,
        resource: str = RESOURCE,
        keyed: bool = True,
    ) -> Workspace:
        make_source(tmp_path, keyed=keyed)
        if tax_fe:
            execute(mariadb_database, tax_fe)
        if hr_fe:
            execute(pg_database, hr_fe)
        ws = make_workspace(
            catalog_yaml(
                {
                    "src": ("sqlite", "{path: src.db}"),
                    "tax_fe": ("mysql", "{env: TAX_URL}"),
                    "hr_fe": ("postgresql", "{env: HR_URL}"),
                },
                resource,
            )
        )
        add_subscription(ws, "ENT", "tax_fe", FIELDS, FAR, target_table="enterprise")
        add_subscription(ws, "ENT", "hr_fe", FIELDS, FAR, target_table="enterprise")
        return ws

    return make


def exchange(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``exchange ARGS --catalog HOME/catalog.yaml``, output wide enough not to fold."""
    return subprocess.run(
        [sys.executable, "-m", "exchange", *args, "--catalog", str(home / "catalog.yaml")],
        env={**os.environ, "EXCHANGE_HOME": str(home), "COLUMNS": "1000"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def deliveries(ws: Workspace) -> dict[int, Delivery]:
    with ws.store.session() as s:
        return {d.subscription_id: d for d in s.scalars(sa.select(Delivery)).all()}


def expected() -> list[tuple[Any, ...]]:
    return [(i, n, a) for i, n, a in ROWS]


def test_a_mariadb_target_with_an_int_for_a_decimal_is_refused_by_name_and_postgresql_served(
    setup: Callable[..., Workspace], tmp_path: Path, mariadb_database: str, pg_database: str
) -> None:
    ws = setup(
        tax_fe="CREATE TABLE enterprise (id BIGINT PRIMARY KEY, name VARCHAR(100) NOT NULL, "
        "base_amount INT)"
    )

    out = exchange(tmp_path, "run", "ENT")

    assert out.returncode == 1, out.stderr
    message = "node 'tax_fe' " + REFUSED.format(found="integer(11)")
    assert message in " ".join(out.stdout.split())
    assert rows(mariadb_database) == []  # nothing written there
    assert columns(mariadb_database) == ["id", "name", "base_amount"]  # nor changed
    assert rows(pg_database) == expected()  # the other subscriber is served
    got = deliveries(ws)
    assert (got[1].status, got[1].rows, got[1].error) == ("failed", 0, message)
    assert (got[2].status, got[2].rows) == ("delivered", len(ROWS))


def test_a_postgresql_target_with_an_integer_for_a_decimal_is_refused_and_mariadb_served(
    setup: Callable[..., Workspace], mariadb_database: str, pg_database: str
) -> None:
    ws = setup(
        hr_fe="CREATE TABLE enterprise (id BIGINT PRIMARY KEY, name VARCHAR(100) NOT NULL, "
        "base_amount INTEGER)"
    )

    summary = run_resource(ws, "ENT")

    assert summary.failures == {2: "node 'hr_fe' " + REFUSED.format(found="integer")}
    assert rows(pg_database) == []
    assert rows(mariadb_database) == expected()


def test_a_wider_target_is_accepted_and_holds_the_source_values(
    setup: Callable[..., Workspace], mariadb_database: str, pg_database: str
) -> None:
    ws = setup(
        tax_fe="CREATE TABLE enterprise (id BIGINT PRIMARY KEY, name TEXT NOT NULL, "
        "base_amount DECIMAL(20,4), note VARCHAR(10))",
        hr_fe="CREATE TABLE enterprise (id NUMERIC(20) PRIMARY KEY, name VARCHAR(300), "
        "base_amount NUMERIC)",
    )

    summary = run_resource(ws, "ENT")

    assert summary.status == "succeeded", summary.failures
    assert [(i, n, a.quantize(Decimal("0.01"))) for i, n, a in rows(mariadb_database)] == expected()
    assert [(int(i), n, a) for i, n, a in rows(pg_database)] == expected()


def test_a_missing_column_is_added_and_the_run_table_and_audit_log_say_so(
    setup: Callable[..., Workspace], tmp_path: Path, mariadb_database: str
) -> None:
    ws = setup(tax_fe="CREATE TABLE enterprise (id BIGINT PRIMARY KEY, name VARCHAR(100))")

    out = exchange(tmp_path, "run", "ENT")

    assert out.returncode == 0, out.stdout + out.stderr
    assert "added column base_amount to tax_fe.enterprise" in out.stdout
    assert columns(mariadb_database) == ["id", "name", "base_amount"]
    assert rows(mariadb_database) == expected()
    with ws.store.session() as s:
        payloads = {
            e.subject: e.payload
            for e in s.scalars(sa.select(AuditEvent).where(AuditEvent.kind == "delivery.delivered"))
        }
    assert payloads["subscription:1"]["notes"] == ["added column base_amount to tax_fe.enterprise"]
    assert "notes" not in payloads["subscription:2"]  # hr_fe's table was created: nothing added


def test_a_missing_column_refuses_the_subscriber_under_target_columns_refuse(
    setup: Callable[..., Workspace], mariadb_database: str, pg_database: str
) -> None:
    ws = setup(
        tax_fe="CREATE TABLE enterprise (id BIGINT PRIMARY KEY, name VARCHAR(100))",
        resource=RESOURCE.replace("  primary_key:", "  target_columns: refuse\n  primary_key:"),
    )

    summary = run_resource(ws, "ENT")

    assert summary.failures == {
        1: "node 'tax_fe' table enterprise column base_amount: declared decimal(12,2), "
        "found no such column: missing (target_columns: refuse)"
    }
    assert columns(mariadb_database) == ["id", "name"]  # not added
    assert rows(pg_database) == expected()  # a new table is created whatever the policy


def test_catalog_check_warns_of_a_source_without_a_key_and_exits_2_for_a_narrower_target(
    setup: Callable[..., Workspace], tmp_path: Path, mariadb_database: str
) -> None:
    setup(
        tax_fe="CREATE TABLE enterprise (id BIGINT PRIMARY KEY, name VARCHAR(100) NOT NULL, "
        "base_amount INT)",
        keyed=False,
    )

    out = exchange(tmp_path, "catalog", "check", "ENT")

    assert out.returncode == 2, out.stdout + out.stderr
    text = " ".join(out.stdout.split())
    assert "catalog check of ENT: a run would be refused" in text
    assert "no primary-key constraint or unique index on (id): duplicate keys are possible" in text
    assert "base_amount" in text
    assert REFUSED.format(found="integer(11)").split(": ", 1)[1] in text
    assert "no table yet: the first run creates it" in text  # hr_fe
    assert rows(mariadb_database) == []  # no data moved

    execute(mariadb_database, "ALTER TABLE enterprise MODIFY base_amount DECIMAL(14,2)")
    again = exchange(tmp_path, "catalog", "check", "ENT")

    assert again.returncode == 0, again.stdout + again.stderr  # the warning stays, exit 0
    assert "duplicate keys are possible" in again.stdout
    assert "catalog check of ENT: no refusal" in again.stdout


def test_catalog_check_exits_2_when_the_source_lacks_a_declared_column(
    setup: Callable[..., Workspace], tmp_path: Path
) -> None:
    setup(resource=RESOURCE + "    - {name: region_code, type: char, length: 6}\n")

    out = exchange(tmp_path, "catalog", "check", "ENT")

    assert out.returncode == 2, out.stdout + out.stderr
    text = " ".join(out.stdout.split())
    assert "region_code" in text and "declared in the catalog, missing at the source" in text


@pytest.mark.mariadb
def test_catalog_check_warns_that_a_mariadb_datetime_declared_timestamptz_is_read_as_utc(
    mariadb_database: str,
    make_workspace: Callable[[str], Workspace],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from exchange.tables.check import check_resource

    execute(mariadb_database, "CREATE TABLE ev (id BIGINT PRIMARY KEY, at DATETIME(6))")
    monkeypatch.setenv("SRC_URL", mariadb_database)
    nodes = {"src": ("mysql", "{env: SRC_URL}")}
    ws = make_workspace(catalog_yaml(nodes, """\
- code: EV
  name: 事件
  kind: table
  provider: src
  share: unconditional
  source: {table: ev}
  primary_key: [id]
  fields:
    - {name: id, type: bigint, nullable: false}
    - {name: at, type: timestamptz}
"""))  # fmt: skip

    report = check_resource(ws, "EV")

    warned = [f.detail for f in report.findings if f.column == "at"]
    assert warned and "read as UTC" in warned[0] and "declare it timestamp" in warned[0]
