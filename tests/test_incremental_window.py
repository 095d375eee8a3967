"""Incremental runs without loss or repeats: a look-back window (``cursor_lag``) picks up rows a
provider committed late below the watermark; rows a subscriber already holds unchanged are not
sent again (nor quarantined rows counted again); a run nobody can receive reads nothing."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from exchange.catalog import load_catalog
from exchange.demo.registry import COLUMNS
from exchange.flow import run_resource
from exchange.kernel.errors import CatalogError
from exchange.quality.models import QualityTicket
from exchange.quality.quarantine import list_quarantine
from exchange.store.models import DeliveredRow, Delivery, Subscription
from exchange.workflow.grants import add_subscription
from exchange.workspace import Workspace
from tests.conftest import catalog_yaml, run_exchange
from tests.sources import (
    RESOURCE_YAML,
    Row,
    create_source,
    projection,
    registry,
    table_rows,
    upsert_source,
)

FAR = dt.date.today() + dt.timedelta(days=300)
GRANT = ["id", "name", "reg_capital", "updated_at"]
NO_CURSOR = ["id", "uscc", "name", "phone"]  # the cursor is not granted: hashed without it
STAMP = dt.datetime(2026, 11, 20, 9, 0, 0)


def with_lag(lag: str) -> str:
    return RESOURCE_YAML.replace(
        "  cursor: updated_at\n", f"  cursor: updated_at\n  cursor_lag: {lag}\n"
    )


def renamed(rows: list[Row], suffix: str, stamp: dt.datetime | None = None) -> list[Row]:
    """The same rows with a changed name (and, if given, a new cursor value)."""
    at, name = COLUMNS.index("updated_at"), COLUMNS.index("name")
    out = []
    for r in rows:
        r = r[:name] + (f"{r[name]}{suffix}",) + r[name + 1 :]
        out.append(r if stamp is None else r[:at] + (stamp,) + r[at + 1 :])
    return out


def delivered(ws: Workspace, run_id: str) -> dict[int, int]:
    """Rows delivered per subscription by one run."""
    with ws.store.session() as s:
        return dict(
            s.execute(
                sa.select(Delivery.subscription_id, Delivery.rows).where(Delivery.run_id == run_id)
            ).all()
        )


# -- the look-back window ---------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize(("lag", "found"), [("10m", True), ("0", False)], ids=["lag-10m", "lag-0"])
def test_a_row_committed_late_below_the_watermark_is_delivered_by_the_next_run(
    lag: str,
    found: bool,
    pg_database: str,
    tmp_path: Path,
    make_workspace: Callable[[str], Workspace],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SRC_URL", pg_database)
    rows = registry(range(1, 101))  # updated_at 17 s apart
    create_source(pg_database, rows)
    nodes = {"src": ("postgresql", "{env: SRC_URL}"), "a": ("sqlite", "{path: a.db}")}
    ws = make_workspace(catalog_yaml(nodes, with_lag(lag)))
    add_subscription(ws, "ENT", "a", GRANT, FAR, target_table="enterprise")
    tgt = f"sqlite:///{tmp_path / 'a.db'}"
    run_resource(ws, "ENT")
    # A provider's long transaction writes a row stamped 90 s below the newest row (its
    # updated_at was taken when the transaction began) and is still open during the next run.
    at = COLUMNS.index("updated_at")
    late = registry([1000])[0]
    late = late[:at] + (rows[-1][at] - dt.timedelta(seconds=90),) + late[at + 1 :]
    pending = psycopg.connect(pg_database.replace("postgresql+psycopg", "postgresql"))
    marks = ", ".join(["%s"] * len(COLUMNS))
    pending.execute(f"INSERT INTO enterprise ({', '.join(COLUMNS)}) VALUES ({marks})", late)  # noqa: S608
    try:
        during = run_resource(ws, "ENT")
    finally:
        pending.commit()
        pending.close()
    assert during.status == "succeeded"
    assert delivered(ws, during.run_id) == {1: 0}  # the window's rows are held already

    after = run_resource(ws, "ENT")

    assert after.status == "succeeded"
    ids = [r[0] for r in table_rows(tgt, ["id"])]
    if found:
        assert delivered(ws, after.run_id) == {1: 1}  # the late row, and nothing else again
        assert table_rows(tgt, GRANT) == projection([*rows, late], GRANT)
    else:  # the trap the window closes: without one, the row is never delivered
        assert delivered(ws, after.run_id) == {1: 0}
        assert 1000 not in ids


# -- rows held unchanged are not sent again ---------------------------------------------------


@pytest.mark.postgres
def test_rows_stamped_with_one_timestamp_are_sent_once_then_only_when_they_change(
    pg_database: str,
    tmp_path: Path,
    make_workspace: Callable[[str], Workspace],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PG_URL", pg_database)
    src = f"sqlite:///{tmp_path / 'src.db'}"
    rows = registry(range(1, 401), STAMP)  # a bulk load: 400 rows, one updated_at
    create_source(src, rows)
    nodes = {"src": ("sqlite", "{path: src.db}"), "pg": ("postgresql", "{env: PG_URL}"),
             "a": ("sqlite", "{path: a.db}")}  # fmt: skip
    ws = make_workspace(catalog_yaml(nodes, RESOURCE_YAML))
    add_subscription(ws, "ENT", "pg", GRANT, FAR, target_table="enterprise")
    add_subscription(ws, "ENT", "a", NO_CURSOR, FAR, target_table="enterprise")
    a = f"sqlite:///{tmp_path / 'a.db'}"

    first = run_resource(ws, "ENT")
    again = run_resource(ws, "ENT")

    assert delivered(ws, first.run_id) == {1: 400, 2: 400}
    assert again.extracted == 400  # read again (inclusive >=) ...
    assert delivered(ws, again.run_id) == {1: 0, 2: 0}  # ... but nothing was sent again

    # 7 rows reloaded with new values on the same timestamp, 5 changed with a new one.
    reloaded = renamed(rows[10:17], "（更正）")
    moved = renamed(rows[100:105], "（变更）", STAMP + dt.timedelta(hours=1))
    upsert_source(src, reloaded + moved)
    now = rows + reloaded + moved

    changed = run_resource(ws, "ENT")
    quiet = run_resource(ws, "ENT")

    assert changed.status == quiet.status == "succeeded"
    assert delivered(ws, changed.run_id) == {1: 12, 2: 12}  # exactly the changed rows
    assert quiet.extracted == 5 and delivered(ws, quiet.run_id) == {1: 0, 2: 0}
    assert table_rows(pg_database, GRANT) == projection(now, GRANT)
    assert table_rows(a, NO_CURSOR) == projection(now, NO_CURSOR)
    with ws.store.session() as s:  # the memory holds the new watermark's rows only
        held = s.execute(
            sa.select(DeliveredRow.subscription_id, sa.func.count()).group_by(
                DeliveredRow.subscription_id
            )
        ).all()
    assert dict(held) == {1: 5, 2: 5}


def test_a_delivery_killed_after_its_commit_remembers_its_rows_once_repaired(
    tmp_path: Path,
) -> None:
    src = f"sqlite:///{tmp_path / 'src.db'}"
    rows = registry(range(1, 401), STAMP)
    create_source(src, rows)
    nodes = {"src": ("sqlite", "{path: src.db}"), "a": ("sqlite", "{path: a.db}")}
    (tmp_path / "catalog.yaml").write_text(catalog_yaml(nodes, RESOURCE_YAML), encoding="utf-8")
    until = FAR.isoformat()
    run_exchange(tmp_path, {}, "subscription", "add", "ENT", "--node", "a",
                 "--fields", ",".join(GRANT), "--until", until)  # fmt: skip
    assert run_exchange(tmp_path, {}, "run", "ENT") == 0
    upsert_source(src, renamed(rows[:3], "（更正）"))

    # Killed after the target committed and before the store recorded it; then repaired.
    assert run_exchange(tmp_path, {}, "run", "ENT", crash_at="load:committed") != 0
    assert run_exchange(tmp_path, {}, "run", "ENT") == 0
    assert run_exchange(tmp_path, {}, "run", "ENT") == 0

    store = sqlite3.connect(tmp_path / "exchange.db")
    with store:
        by_run = store.execute(
            "SELECT d.rows FROM deliveries d JOIN runs r ON r.id = d.run_id ORDER BY r.started_at"
        ).fetchall()
    store.close()
    assert by_run == [(400,), (3,), (0,)]  # the repaired run counts its 3; the next sends none
    assert table_rows(f"sqlite:///{tmp_path / 'a.db'}", GRANT) == projection(
        rows + renamed(rows[:3], "（更正）"), GRANT
    )


# -- quarantined rows are judged once ---------------------------------------------------------


def test_a_row_quarantined_again_unchanged_is_not_counted_twice_and_corrections_go_through(
    tmp_path: Path, make_workspace: Callable[[str], Workspace]
) -> None:
    src = f"sqlite:///{tmp_path / 'src.db'}"
    rows = registry(range(1, 101))
    phone = COLUMNS.index("phone")
    rows[99] = rows[99][:phone] + ("0000",) + rows[99][phone + 1 :]  # the newest row is bad
    create_source(src, rows)
    resource = RESOURCE_YAML.replace(
        "{name: phone, type: varchar, length: 20}",
        "{name: phone, type: varchar, length: 20, rules: {validator: phone}}",
    ).replace("  batch_size: 700\n", "  batch_size: 700\n  quality: {max_bad_ratio: 0.05}\n")
    nodes = {"src": ("sqlite", "{path: src.db}"), "a": ("sqlite", "{path: a.db}")}
    ws = make_workspace(catalog_yaml(nodes, resource))
    add_subscription(ws, "ENT", "a", GRANT, FAR, target_table="enterprise")
    first = run_resource(ws, "ENT")
    assert (first.status, first.quarantined) == ("succeeded", 1)  # 1 of 100: allowed
    # Three good corrections: the run reads them and the bad row on the watermark again (>=).
    # Counted again, that would be 1 bad row of 4 (25 %) and hold the corrections back.
    fixes = renamed(registry([5, 6, 7]), "（更正）", STAMP)
    upsert_source(src, fixes)

    second = run_resource(ws, "ENT")

    assert second.status == "succeeded", second.held
    assert (second.extracted, second.quarantined) == (4, 1)
    assert delivered(ws, second.run_id) == {1: 3}
    total, entries = list_quarantine(ws, "ENT")
    assert total == 1 and [e.run_id for e in entries] == [first.run_id]  # listed once
    with ws.store.session() as s:
        (ticket,) = s.execute(sa.select(QualityTicket)).scalars()
        assert ticket.rows == 1 and ticket.runs == [first.run_id]

    # The same row, broken differently: a new finding, listed and counted (1 bad of 4: held).
    at = COLUMNS.index("updated_at")
    bad_again = rows[99][:phone] + ("1111",) + rows[99][phone + 1 :]
    upsert_source(src, [bad_again[:at] + (STAMP + dt.timedelta(hours=1),) + bad_again[at + 1 :]])

    third = run_resource(ws, "ENT")

    assert third.status == "held" and list_quarantine(ws, "ENT")[0] == 2


# -- nobody to deliver to ---------------------------------------------------------------------


def test_a_run_without_a_deliverable_subscription_reads_nothing_from_the_provider(
    tmp_path: Path, make_workspace: Callable[[str], Workspace]
) -> None:
    # The provider's database does not even exist: reading it would fail (or create it).
    nodes = {"src": ("sqlite", "{path: src.db}"), "a": ("sqlite", "{path: a.db}")}
    ws = make_workspace(catalog_yaml(nodes, RESOURCE_YAML))
    expired = add_subscription(ws, "ENT", "a", GRANT, FAR, target_table="enterprise")
    with ws.store.session() as s:
        sub = s.get(Subscription, expired.id)
        assert sub is not None
        sub.valid_until = dt.date.today() - dt.timedelta(days=1)

    summary = run_resource(ws, "ENT")

    assert (summary.status, summary.extracted, summary.valid) == ("succeeded", 0, 0)
    assert summary.note == "no deliverable subscription: nothing read"
    assert not (tmp_path / "src.db").exists()
    assert delivered(ws, summary.run_id) == {}


def test_the_cli_says_a_run_without_subscribers_read_nothing(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    nodes = {"src": ("sqlite", "{path: src.db}")}
    (tmp_path / "catalog.yaml").write_text(catalog_yaml(nodes, RESOURCE_YAML), encoding="utf-8")
    env = {**os.environ, "EXCHANGE_HOME": str(tmp_path), "COLUMNS": "200"}
    env.pop("EXCHANGE_DB_URL", None)
    catalog = str(tmp_path / "catalog.yaml")
    proc = subprocess.run(
        [sys.executable, "-m", "exchange", "run", "ENT", "--catalog", catalog],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert proc.returncode == 0, proc.stderr
    assert "no deliverable subscription: nothing read" in proc.stdout
    assert not (tmp_path / "src.db").exists()


# -- the catalog ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lag", "message"),
    [
        ("'10m'", None),
        ("'2h'", None),
        ("'0'", None),
        ("10", "10 is a number, but cursor 'updated_at' is timestamp: give a duration such as 10m"),
        ("-5", "is not valid under any of the given schemas"),
        ("'10 minutes'", "is not valid under any of the given schemas"),
    ],
)
def test_cursor_lag_is_a_duration_for_a_time_cursor(
    lag: str, message: str | None, tmp_path: Path
) -> None:
    nodes = {"src": ("sqlite", "{path: src.db}")}
    path = tmp_path / "catalog.yaml"
    path.write_text(catalog_yaml(nodes, with_lag(lag)), encoding="utf-8")
    if message is None:
        lag_value = load_catalog(path).resource("ENT").cursor_lag
        assert lag_value == lag.strip("'")
        return
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    assert any("cursor_lag" in p and message in p for p in info.value.problems), info.value.problems
