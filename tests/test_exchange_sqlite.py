"""The exchange on embedded SQLite front-end DBs: what each subscriber receives, and when."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from exchange.flow import run_resource
from exchange.workflow.grants import add_subscription
from exchange.workspace import Workspace
from tests.conftest import catalog_yaml

RESOURCE = """\
- code: R1
  name: 企业登记信息
  kind: table
  provider: src
  share: unconditional
  source: {table: company}
  mode: MODE
  primary_key: [id]
  cursor: updated_at
  batch_size: 100
  fields:
    - {name: id, type: bigint, nullable: false}
    - {name: name, type: varchar, length: 20, nullable: false}
    - {name: secret_note, type: varchar, length: 50}
    - {name: updated_at, type: timestamp, nullable: false}
"""
T0 = dt.datetime(2026, 3, 2, 9, 0, 0)
FAR = dt.date.today() + dt.timedelta(days=300)


def make_source(path: Path, rows: list[tuple[int, str, str | None, dt.datetime]]) -> None:
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS company "
            "(id INTEGER PRIMARY KEY, name TEXT, secret_note TEXT, updated_at TEXT)"
        )
        db.executemany(
            "INSERT OR REPLACE INTO company VALUES (?, ?, ?, ?)",
            [(i, n, s, t.isoformat(sep=" ")) for i, n, s, t in rows],
        )


def target_rows(path: Path, table: str = "company") -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()  # noqa: S608


def target_columns(path: Path, table: str = "company") -> list[str]:
    with sqlite3.connect(path) as db:
        return [r[1] for r in db.execute(f"PRAGMA table_info({table})")]


@pytest.fixture
def sqlite_exchange(
    tmp_path: Path, make_workspace: Callable[[str], Workspace]
) -> Callable[[str], Workspace]:
    def build(mode: str = "incremental") -> Workspace:
        nodes = {n: ("sqlite", f"{{path: {n}.db}}") for n in ("src", "a", "b")}
        return make_workspace(catalog_yaml(nodes, RESOURCE.replace("MODE", mode)))

    return build


def test_each_subscriber_gets_only_its_granted_fields(
    tmp_path: Path, sqlite_exchange: Callable[[str], Workspace]
) -> None:
    ws = sqlite_exchange("incremental")
    make_source(tmp_path / "src.db", [(i, f"企业{i}", f"内部{i}", T0) for i in range(1, 251)])
    add_subscription(ws, "R1", "a", ["id", "name"], FAR)
    add_subscription(ws, "R1", "b", ["id", "name", "secret_note", "updated_at"], FAR)

    summary = run_resource(ws, "R1")

    assert summary.status == "succeeded" and summary.extracted == 250
    assert target_columns(tmp_path / "a.db") == ["id", "name"]
    assert "secret_note" not in str(target_rows(tmp_path / "a.db"))
    assert target_rows(tmp_path / "a.db")[0] == (1, "企业1")
    assert len(target_rows(tmp_path / "b.db")) == 250
    assert target_rows(tmp_path / "b.db")[0][2] == "内部1"


def test_expired_subscription_receives_nothing(
    tmp_path: Path, sqlite_exchange: Callable[[str], Workspace]
) -> None:
    ws = sqlite_exchange("incremental")
    make_source(tmp_path / "src.db", [(1, "甲", None, T0)])
    expired = add_subscription(ws, "R1", "a", ["id", "name"], FAR)
    add_subscription(ws, "R1", "b", ["id", "name"], FAR)
    with ws.store.session() as s:
        from exchange.store.models import Subscription

        row = s.get(Subscription, expired.id)
        assert row is not None
        row.valid_until = dt.date.today() - dt.timedelta(days=2)

    run_resource(ws, "R1")

    assert not (tmp_path / "a.db").exists() or "company" not in str(
        sqlite3.connect(tmp_path / "a.db").execute("SELECT name FROM sqlite_master").fetchall()
    )
    assert target_rows(tmp_path / "b.db") == [(1, "甲")]


def test_incremental_run_never_loses_rows_that_tie_on_the_boundary_cursor(
    tmp_path: Path, sqlite_exchange: Callable[[str], Workspace]
) -> None:
    ws = sqlite_exchange("incremental")
    # 300 rows share one timestamp: the first run stops exactly on it.
    make_source(tmp_path / "src.db", [(i, f"n{i}", None, T0) for i in range(1, 301)])
    add_subscription(ws, "R1", "a", ["id", "name", "updated_at"], FAR)
    run_resource(ws, "R1")
    # More rows arrive later with that very same timestamp, and one row changes.
    make_source(
        tmp_path / "src.db",
        [(i, f"n{i}", None, T0) for i in range(301, 401)] + [(5, "changed", None, T0)],
    )

    second = run_resource(ws, "R1")

    rows = target_rows(tmp_path / "a.db")
    assert [r[0] for r in rows] == list(range(1, 401))  # none lost, none duplicated
    assert rows[4][1] == "changed"
    assert second.status == "succeeded"


def test_incremental_run_extracts_only_rows_past_the_watermark(
    tmp_path: Path, sqlite_exchange: Callable[[str], Workspace]
) -> None:
    ws = sqlite_exchange("incremental")
    make_source(
        tmp_path / "src.db",
        [(i, f"n{i}", None, T0 + dt.timedelta(minutes=i)) for i in range(1, 1001)],
    )
    add_subscription(ws, "R1", "a", ["id", "name"], FAR)
    run_resource(ws, "R1")
    make_source(tmp_path / "src.db", [(7, "new name", None, T0 + dt.timedelta(days=30))])

    second = run_resource(ws, "R1")

    # The changed row, plus the row on the old boundary: extraction is inclusive (ties).
    assert second.extracted == 2
    assert target_rows(tmp_path / "a.db")[6] == (7, "new name")


def test_snapshot_mode_deletes_rows_the_source_no_longer_has(
    tmp_path: Path, sqlite_exchange: Callable[[str], Workspace]
) -> None:
    ws = sqlite_exchange("snapshot")
    make_source(tmp_path / "src.db", [(i, f"n{i}", None, T0) for i in range(1, 11)])
    add_subscription(ws, "R1", "a", ["id", "name"], FAR)
    run_resource(ws, "R1")
    with sqlite3.connect(tmp_path / "src.db") as db:
        db.execute("DELETE FROM company WHERE id IN (2, 3)")

    run_resource(ws, "R1")

    assert [r[0] for r in target_rows(tmp_path / "a.db")] == [1, 4, 5, 6, 7, 8, 9, 10]


def test_a_new_subscriber_catches_up_from_the_beginning(
    tmp_path: Path, sqlite_exchange: Callable[[str], Workspace]
) -> None:
    ws = sqlite_exchange("incremental")
    make_source(
        tmp_path / "src.db", [(i, f"n{i}", None, T0 + dt.timedelta(hours=i)) for i in range(1, 51)]
    )
    add_subscription(ws, "R1", "a", ["id", "name"], FAR)
    run_resource(ws, "R1")
    add_subscription(ws, "R1", "b", ["id", "name"], FAR)

    second = run_resource(ws, "R1")

    assert second.extracted == 50  # b has no watermark: everything is extracted once
    assert len(target_rows(tmp_path / "a.db")) == 50
    assert len(target_rows(tmp_path / "b.db")) == 50


def test_quarantined_rows_are_not_delivered_and_are_kept_with_their_reasons(
    tmp_path: Path, sqlite_exchange: Callable[[str], Workspace]
) -> None:
    import pyarrow.parquet as pq

    ws = sqlite_exchange("incremental")
    make_source(
        tmp_path / "src.db",
        [(1, "ok", None, T0), (2, "名" * 21, None, T0), (3, "fine", "x" * 51, T0)],
    )
    add_subscription(ws, "R1", "a", ["id", "name"], FAR)

    summary = run_resource(ws, "R1")

    assert (summary.valid, summary.quarantined) == (1, 2)
    assert summary.valid + summary.quarantined == summary.extracted
    assert target_rows(tmp_path / "a.db") == [(1, "ok")]
    from exchange.runs.handle import RunHandle

    rd = RunHandle.open(ws, summary.run_id).dir
    held = pq.read_table(rd.part("quarantine")).to_pylist()
    assert {r["id"]: r["_reasons"] for r in held} == {
        2: "max_length(20):name=" + "名" * 16 + "…",
        3: "max_length(50):secret_note=" + "x" * 16 + "…",
    }
