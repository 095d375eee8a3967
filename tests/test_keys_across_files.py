"""One key in two tabular files: the later file's row wins for every subscriber alike.

Files are ordered by modification time, then name. Within one file a repeated key is still
quarantined (``duplicate_key``); across files a later file's row replaces an earlier one's,
as a daily increment updates rows, and a run that reads both says so in its notes; a later
row that is quarantined replaces nothing. A
subscriber added afterwards, one that held the earlier row, and a ``--full`` run all end with
the same rows (they used to differ: the new subscriber got both rows quarantined)."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from exchange.flow import run_resource
from exchange.quality.models import QuarantineEntry
from exchange.store.models import AuditEvent
from exchange.workflow.grants import add_subscription
from exchange.workspace import Workspace
from tests.conftest import catalog_yaml

CODE = "410400-SCJG-0010"
UNTIL = dt.date.today() + dt.timedelta(days=365)
DAY = 86_400.0
T0 = 1_790_000_000.0  # a fixed modification time, so the order is the test's, not the clock's

RESOURCE = f"""\
- code: "{CODE}"
  name: 代码表（表格文件）
  kind: file
  provider: market_files
  share: unconditional
  files: {{path: out, pattern: '*.csv', format: csv, encoding: utf-8}}
  primary_key: [code]
  fields:
    - {{name: code, type: integer, nullable: false}}
    - {{name: label, type: varchar, length: 20}}
"""


def workspace(
    tmp_path: Path,
    make_workspace: Callable[[str], Workspace],
    targets: dict[str, tuple[str, str]] | None = None,
) -> Workspace:
    (tmp_path / "market/out").mkdir(parents=True, exist_ok=True)
    nodes = {"market_files": ("local", "{path: market}")}
    nodes |= targets or {
        "tax": ("sqlite", "{path: tax.db}"),
        "civil": ("sqlite", "{path: civil.db}"),
    }
    return make_workspace(catalog_yaml(nodes, RESOURCE))


def subscribe(ws: Workspace, node: str) -> None:
    add_subscription(ws, CODE, node, ["code", "label"], UNTIL, target_table="codes")


def put(tmp_path: Path, name: str, rows: list[tuple[int, str]], mtime: float) -> None:
    path = tmp_path / "market/out" / name
    path.write_text("code,label\n" + "".join(f"{c},{v}\n" for c, v in rows), encoding="utf-8")
    os.utime(path, (mtime, mtime))


def held(tmp_path: Path, db: str) -> list[tuple[int, str]]:
    with sqlite3.connect(tmp_path / db) as conn:
        return conn.execute("SELECT code, label FROM codes ORDER BY code").fetchall()


def test_the_later_file_wins_for_an_existing_and_a_new_subscriber_alike(
    tmp_path: Path, make_workspace: Callable[[str], Workspace]
) -> None:
    ws = workspace(tmp_path, make_workspace)
    subscribe(ws, "tax")
    put(tmp_path, "a.csv", [(1, "from a"), (2, "only a")], T0)
    assert run_resource(ws, CODE).status == "succeeded"
    put(tmp_path, "dup2.csv", [(1, "from dup2")], T0 + DAY)
    assert run_resource(ws, CODE).status == "succeeded"
    assert held(tmp_path, "tax.db") == [(1, "from dup2"), (2, "only a")]

    subscribe(ws, "civil")  # takes both files in one run
    summary = run_resource(ws, CODE)

    assert summary.status == "succeeded", summary.failures
    assert summary.quarantined == 0
    assert held(tmp_path, "civil.db") == held(tmp_path, "tax.db")
    assert held(tmp_path, "civil.db") == [(1, "from dup2"), (2, "only a")]
    assert any("code=1" in n and "dup2.csv" in n and "a.csv" in n for n in summary.notes), (
        summary.notes
    )

    with ws.store.session() as s:  # and the audit log keeps what the run said
        event = s.scalars(
            sa.select(AuditEvent).where(
                AuditEvent.subject == f"run:{summary.run_id}", AuditEvent.kind == "run.succeeded"
            )
        ).one()
    assert event.payload["notes"] == list(summary.notes)

    full = run_resource(ws, CODE, full=True)

    assert full.status == "succeeded" and full.quarantined == 0
    assert (
        held(tmp_path, "tax.db") == held(tmp_path, "civil.db") == [(1, "from dup2"), (2, "only a")]
    )


def test_a_file_that_arrives_with_an_older_time_does_not_overwrite_a_later_files_row(
    tmp_path: Path, make_workspace: Callable[[str], Workspace]
) -> None:
    # cp -p of last month's file: it is new to the exchange, but earlier in file order.
    ws = workspace(tmp_path, make_workspace)
    subscribe(ws, "tax")
    put(tmp_path, "b.csv", [(1, "from b")], T0 + DAY)
    run_resource(ws, CODE)
    put(tmp_path, "a.csv", [(1, "from a"), (3, "only a")], T0)

    run_resource(ws, CODE)
    subscribe(ws, "civil")
    run_resource(ws, CODE)

    assert held(tmp_path, "tax.db") == held(tmp_path, "civil.db") == [(1, "from b"), (3, "only a")]


def test_two_files_of_one_time_are_ordered_by_name_and_the_note_says_so(
    tmp_path: Path, make_workspace: Callable[[str], Workspace]
) -> None:
    ws = workspace(tmp_path, make_workspace)
    subscribe(ws, "tax")
    put(tmp_path, "b.csv", [(1, "from b")], T0)
    put(tmp_path, "a.csv", [(1, "from a")], T0)

    summary = run_resource(ws, CODE)

    assert held(tmp_path, "tax.db") == [(1, "from b")]
    assert summary.extracted == 1 and summary.quarantined == 0
    (note,) = [n for n in summary.notes if "code=1" in n]
    assert "b.csv" in note and "a.csv" in note and "same modification time" in note


def test_a_key_repeated_within_the_later_file_is_quarantined_and_the_earlier_row_stands(
    tmp_path: Path, make_workspace: Callable[[str], Workspace]
) -> None:
    ws = workspace(tmp_path, make_workspace)
    subscribe(ws, "tax")
    put(tmp_path, "a.csv", [(1, "from a"), (2, "a two")], T0)
    put(tmp_path, "b.csv", [(2, "b two"), (2, "b two again"), (4, "b four")], T0 + DAY)

    summary = run_resource(ws, CODE)

    assert summary.quarantined == 2  # b.csv's two rows of code 2, and only those
    assert reasons(ws, summary.run_id) == ["duplicate_key:code=2"] * 2
    assert held(tmp_path, "tax.db") == [(1, "from a"), (2, "a two"), (4, "b four")]
    assert summary.extracted == summary.valid + summary.quarantined == 5


LONG = "x" * 25  # longer than label's 20: quarantined by max_length


def reasons(ws: Workspace, run_id: str) -> list[str]:
    """Why the run quarantined each row (every reason of a row, in one text)."""
    with ws.store.session() as s:
        q = sa.select(QuarantineEntry.reasons).where(QuarantineEntry.run_id == run_id)
        return sorted(s.scalars(q))


def test_a_later_row_that_is_quarantined_replaces_nothing_for_an_old_or_a_new_subscriber(
    tmp_path: Path, make_workspace: Callable[[str], Workspace]
) -> None:
    ws = workspace(tmp_path, make_workspace)
    subscribe(ws, "tax")
    put(tmp_path, "a.csv", [(1, "from a"), (2, "a two")], T0)
    run_resource(ws, CODE)
    put(tmp_path, "b.csv", [(1, LONG), (2, "b two"), (2, "b two again"), (4, "b four")], T0 + DAY)
    assert run_resource(ws, CODE).quarantined == 3

    subscribe(ws, "civil")  # takes a.csv and b.csv in one run
    summary = run_resource(ws, CODE)

    assert summary.status == "succeeded", summary.failures
    assert summary.quarantined == 3 and summary.valid == 3
    expected = [(1, "from a"), (2, "a two"), (4, "b four")]
    assert held(tmp_path, "tax.db") == held(tmp_path, "civil.db") == expected


def test_the_latest_row_that_passes_wins_over_earlier_ones_and_a_quarantined_later_one(
    tmp_path: Path, make_workspace: Callable[[str], Workspace]
) -> None:
    ws = workspace(tmp_path, make_workspace)
    subscribe(ws, "tax")
    put(tmp_path, "a.csv", [(2, "a two")], T0)
    put(tmp_path, "b.csv", [(2, "b two")], T0 + DAY)
    put(tmp_path, "c.csv", [(2, LONG)], T0 + 2 * DAY)

    summary = run_resource(ws, CODE)

    assert held(tmp_path, "tax.db") == [(2, "b two")]
    assert summary.quarantined == 1
    assert reasons(ws, summary.run_id) == [f"max_length(20):label={LONG[:16]}…"]
    (note,) = [n for n in summary.notes if "code=2" in n]
    assert "1 earlier row replaced" in note and "b.csv, also in a.csv" in note


@pytest.mark.postgres
def test_a_postgresql_and_a_sqlite_subscriber_hold_the_later_files_row(
    tmp_path: Path,
    make_workspace: Callable[[str], Workspace],
    pg_database: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("T_CODES_PG", pg_database)
    targets = {"tax": ("sqlite", "{path: tax.db}"), "civil": ("postgresql", "{env: T_CODES_PG}")}
    ws = workspace(tmp_path, make_workspace, targets)
    subscribe(ws, "tax")
    put(tmp_path, "a.csv", [(1, "from a"), (2, "only a")], T0)
    run_resource(ws, CODE)
    put(tmp_path, "dup2.csv", [(1, "from dup2")], T0 + DAY)
    run_resource(ws, CODE)
    subscribe(ws, "civil")

    summary = run_resource(ws, CODE)

    assert summary.status == "succeeded" and summary.quarantined == 0
    engine = sa.create_engine(pg_database)
    with engine.connect() as conn:
        got = conn.execute(sa.text("SELECT code, label FROM codes ORDER BY code")).all()
    engine.dispose()
    assert [tuple(r) for r in got] == held(tmp_path, "tax.db") == [(1, "from dup2"), (2, "only a")]


ID = "11010519491231002X"  # a valid resident ID number (the standard's own example)
PEOPLE = f"""\
- code: "{CODE}"
  name: 人员（表格文件）
  kind: file
  provider: market_files
  share: unconditional
  files: {{path: out, pattern: '*.csv', format: csv, encoding: utf-8}}
  primary_key: [region, id_card]
  fields:
    - {{name: region, type: char, length: 6, nullable: false}}
    - {{name: id_card, type: char, length: 18, nullable: false, rules: {{validator: resident_id}}}}
    - {{name: label, type: varchar, length: 20}}
"""


def test_a_composite_key_is_replaced_only_where_every_part_matches_and_the_note_masks_ids(
    tmp_path: Path, make_workspace: Callable[[str], Workspace]
) -> None:
    (tmp_path / "market/out").mkdir(parents=True)
    nodes = {"market_files": ("local", "{path: market}"), "tax": ("sqlite", "{path: tax.db}")}
    ws = make_workspace(catalog_yaml(nodes, PEOPLE))
    add_subscription(ws, CODE, "tax", ["region", "id_card", "label"], UNTIL, target_table="codes")
    for name, rows, mtime in [
        ("a.csv", [("410402", "old"), ("410403", "other region")], T0),
        ("b.csv", [("410402", "new")], T0 + DAY),
    ]:
        path = tmp_path / "market/out" / name
        lines = "".join(f"{region},{ID},{label}\n" for region, label in rows)
        path.write_text("region,id_card,label\n" + lines, encoding="utf-8")
        os.utime(path, (mtime, mtime))

    summary = run_resource(ws, CODE)

    assert summary.status == "succeeded" and summary.quarantined == 0
    with sqlite3.connect(tmp_path / "tax.db") as conn:
        got = conn.execute("SELECT region, label FROM codes ORDER BY region").fetchall()
    assert got == [("410402", "new"), ("410403", "other region")]
    (note,) = summary.notes
    assert "1 key in more than one file" in note and "1 earlier row replaced" in note
    assert "region=410402,id_card=110****2X" in note and ID not in note
