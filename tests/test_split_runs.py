"""Split full extracts (``split: {by, chunks}``): a full run cut into key ranges, each
extracted and loaded on its own, side by side, gives the targets exactly what the unsplit run
gives; a run killed in one range's load is repaired by running it again (only the ranges that
did not commit are loaded again); a snapshot's deletes are reconciled once, by the keys of
every range; a ``split`` that could let one key span two ranges is refused by name."""

from __future__ import annotations

import datetime as dt
import json
import signal
from pathlib import Path

import pytest
import sqlalchemy as sa

from exchange.catalog import load_catalog
from exchange.kernel.errors import CatalogError
from tests.conftest import catalog_yaml
from tests.conftest import run_exchange as exchange
from tests.sources import (
    RESOURCE_YAML,
    connect,
    create_source,
    delete_source,
    projection,
    registry,
    table_rows,
    upsert_source,
)

GRANT_PG = "id,uscc,name,reg_capital,established,updated_at,is_active,remark"
GRANT_MARIA = "id,name,legal_person,address,phone,scope,status"
SNAPSHOT = RESOURCE_YAML.replace("  mode: incremental\n", "  mode: snapshot\n").replace(
    "  cursor: updated_at\n", ""
)
SPLIT = SNAPSHOT.replace(
    "  primary_key: [id]\n", "  primary_key: [id]\n  split: {by: id, chunks: 4}\n"
)
PLAIN = SNAPSHOT.replace("- code: ENT\n", "- code: ENT_PLAIN\n")
UNTIL = (dt.date.today() + dt.timedelta(days=100)).isoformat()


def setup(tmp_path: Path, pg: str, maria: str, rows: list[tuple[object, ...]]) -> dict[str, str]:
    """The source in PostgreSQL; ENT (split in 4) to a PostgreSQL table and MariaDB, and the
    same table unsplit (ENT_PLAIN) to another PostgreSQL table."""
    env = {"PG_URL": pg, "MARIA_URL": maria}
    create_source(pg, rows)
    nodes = {
        "src": ("postgresql", "{env: PG_URL}"),
        "pg_fe": ("postgresql", "{env: PG_URL}"),
        "maria_fe": ("mysql", "{env: MARIA_URL}"),
    }
    (tmp_path / "catalog.yaml").write_text(catalog_yaml(nodes, SPLIT + PLAIN), encoding="utf-8")
    for code, node, fields, table in (
        ("ENT", "pg_fe", GRANT_PG, "ent_split"),
        ("ENT", "maria_fe", GRANT_MARIA, "enterprise"),
        ("ENT_PLAIN", "pg_fe", GRANT_PG, "ent_plain"),
    ):
        exchange(tmp_path, env, "subscription", "add", code, "--node", node, "--fields", fields,
                 "--until", UNTIL, "--target-table", table)  # fmt: skip
    return env


def assert_split_targets_hold(rows: list[tuple[object, ...]], pg: str, maria: str) -> None:
    assert table_rows(pg, GRANT_PG.split(","), "ent_split") == projection(rows, GRANT_PG.split(","))
    got = table_rows(maria, GRANT_MARIA.split(","))
    assert got == projection(rows, GRANT_MARIA.split(","))


def checksum(url: str, table: str) -> tuple[int, str]:
    """Count and an all-column checksum of a PostgreSQL table, in key order."""
    cols = GRANT_PG.replace(",", ", ")
    with connect(url) as conn:
        cur = conn.cursor()
        cur.execute(
            f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY id), '')) "  # noqa: S608
            f"FROM (SELECT {cols} FROM {table}) AS t"
        )
        n, digest = cur.fetchone()
    return int(n), str(digest)


def plans(tmp_path: Path, code: str) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in (tmp_path / "runs" / code).glob("*/plan.json")]


def test_a_split_full_run_gives_the_targets_what_the_unsplit_run_gives(
    tmp_path: Path, pg_database: str, mariadb_database: str
) -> None:
    rows = registry(range(1, 4001))
    env = setup(tmp_path, pg_database, mariadb_database, rows)
    assert exchange(tmp_path, env, "run", "ENT") == 0
    assert exchange(tmp_path, env, "run", "ENT_PLAIN") == 0
    [plan] = plans(tmp_path, "ENT")
    assert plan["split_by"] == "id" and len(plan["ranges"]) == 4  # type: ignore[arg-type]
    assert checksum(pg_database, "ent_split") == checksum(pg_database, "ent_plain")
    assert checksum(pg_database, "ent_split")[0] == 4000
    assert_split_targets_hold(rows, pg_database, mariadb_database)


CRASHES = [
    "extract:range",
    "merge:before-commit@pg_fe",
    "merge:before-commit@maria_fe",
    "load:range",
    "load:committed",
]


@pytest.mark.parametrize("crash_at", CRASHES)
def test_a_split_run_killed_in_one_range_is_repaired_by_running_again(
    crash_at: str, tmp_path: Path, pg_database: str, mariadb_database: str
) -> None:
    rows = registry(range(1, 4001))
    env = setup(tmp_path, pg_database, mariadb_database, rows)
    assert exchange(tmp_path, env, "run", "ENT", crash_at=crash_at) == -signal.SIGKILL
    assert exchange(tmp_path, env, "run", "ENT") == 0
    assert_split_targets_hold(rows, pg_database, mariadb_database)

    # Again over targets that hold rows (staging and upsert), with changes and deletes at the
    # source: killed in one range, re-run, and the targets equal the source.
    changed = registry(range(1, 4001, 97), dt.datetime(2026, 11, 23, 9, 0, 0))
    upsert_source(pg_database, changed + registry(range(4001, 4101)))
    delete_source(pg_database, list(range(2, 4001, 13)))
    now = {r[0]: r for r in rows + changed + registry(range(4001, 4101))}
    for gone in range(2, 4001, 13):
        now.pop(gone)
    assert exchange(tmp_path, env, "run", "ENT", crash_at=crash_at) == -signal.SIGKILL
    assert exchange(tmp_path, env, "run", "ENT") == 0
    assert_split_targets_hold(list(now.values()), pg_database, mariadb_database)


def test_a_split_snapshot_deletes_exactly_the_rows_gone_from_the_source(
    tmp_path: Path, pg_database: str, mariadb_database: str
) -> None:
    rows = registry(range(1, 3001))
    env = setup(tmp_path, pg_database, mariadb_database, rows)
    assert exchange(tmp_path, env, "run", "ENT") == 0
    gone = [5, 6, 1500, 2999, 3000]  # in the first, a middle and the last range
    delete_source(pg_database, gone)
    assert exchange(tmp_path, env, "run", "ENT") == 0
    left = [r for r in rows if r[0] not in gone]
    assert_split_targets_hold(left, pg_database, mariadb_database)
    with connect(pg_database) as conn:
        cur = conn.cursor()
        cur.execute("SELECT count(*) FROM exchange_delivery_part")
        assert cur.fetchone()[0] == 0  # the close dropped the range markers


@pytest.mark.parametrize(
    ("split", "says"),
    [
        ("{by: nope, chunks: 4}", "resource ENT: split by 'nope', not a field of it"),
        ("{by: name, chunks: 4}", "resource ENT: split by 'name', which is not its primary key"),
        ("{by: id, chunks: 1}", "split.chunks"),
        ("{by: id, chunks: 65}", "split.chunks"),
    ],
)
def test_a_split_that_could_cut_a_key_in_two_is_refused_by_name(
    split: str, says: str, tmp_path: Path
) -> None:
    resource = SNAPSHOT.replace("  primary_key: [id]\n", f"  primary_key: [id]\n  split: {split}\n")
    path = tmp_path / "catalog.yaml"
    path.write_text(catalog_yaml({"src": ("sqlite", "{path: s.db}")}, resource), encoding="utf-8")
    with pytest.raises(CatalogError) as err:
        load_catalog(path)
    assert says in str(err.value)


def test_a_re_run_loads_only_the_ranges_that_did_not_commit(
    tmp_path: Path, pg_database: str, mariadb_database: str
) -> None:
    rows = registry(range(1, 4001))
    env = setup(tmp_path, pg_database, mariadb_database, rows)
    # Killed right after the first range's commit into PostgreSQL: the rows it holds then are
    # that range's (and any other that committed meanwhile), each with the transaction that
    # wrote it (xmin): a range loaded again would give its rows a new one.
    env_one = {**env, "EXCHANGE_SPLIT_WORKERS": "1"}
    assert exchange(tmp_path, env_one, "run", "ENT", crash_at="load:range@pg_fe") == -signal.SIGKILL
    with connect(pg_database) as conn:
        cur = conn.cursor()
        cur.execute("SELECT id, xmin::text FROM ent_split")
        before = dict(cur.fetchall())
        cur.execute("SELECT count(*) FROM exchange_delivery_part")
        assert cur.fetchone()[0] == 1
    assert 0 < len(before) < 4000
    assert exchange(tmp_path, env, "run", "ENT") == 0
    assert_split_targets_hold(rows, pg_database, mariadb_database)
    with connect(pg_database) as conn:
        cur = conn.cursor()
        cur.execute("SELECT id, xmin::text FROM ent_split WHERE id = ANY(%s)", (list(before),))
        assert dict(cur.fetchall()) == before


def test_an_incremental_run_is_never_split_and_its_full_run_is(
    tmp_path: Path, pg_database: str, mariadb_database: str
) -> None:
    rows = registry(range(1, 2001))
    env = {"PG_URL": pg_database, "MARIA_URL": mariadb_database}
    create_source(pg_database, rows)
    incremental = RESOURCE_YAML.replace(
        "  primary_key: [id]\n", "  primary_key: [id]\n  split: {by: id, chunks: 3}\n"
    )
    nodes = {"src": ("postgresql", "{env: PG_URL}"), "maria_fe": ("mysql", "{env: MARIA_URL}")}
    (tmp_path / "catalog.yaml").write_text(catalog_yaml(nodes, incremental), encoding="utf-8")
    exchange(tmp_path, env, "subscription", "add", "ENT", "--node", "maria_fe",
             "--fields", GRANT_MARIA, "--until", UNTIL)  # fmt: skip
    assert exchange(tmp_path, env, "run", "ENT") == 0
    [plan] = plans(tmp_path, "ENT")
    assert plan["ranges"] == [] and plan["split_by"] is None
    assert exchange(tmp_path, env, "run", "ENT", "--full") == 0
    [split] = [p for p in plans(tmp_path, "ENT") if p["ranges"]]
    assert split["full"] is True and len(split["ranges"]) == 3  # type: ignore[arg-type]
    assert table_rows(mariadb_database, GRANT_MARIA.split(",")) == projection(
        rows, GRANT_MARIA.split(",")
    )


def test_a_column_a_split_run_adds_to_a_subscriber_table_is_said_once_in_its_delivery(
    tmp_path: Path, pg_database: str, mariadb_database: str
) -> None:
    """Every range load may find the column missing and add it: the close says so, once, as
    an unsplit run's delivery does (never added silently)."""
    rows = registry(range(1, 2001))
    env = setup(tmp_path, pg_database, mariadb_database, rows)
    assert exchange(tmp_path, env, "run", "ENT") == 0
    with connect(pg_database) as conn:
        conn.execute("ALTER TABLE ent_split DROP COLUMN remark")

    assert exchange(tmp_path, env, "run", "ENT", "--full") == 0

    assert_split_targets_hold(rows, pg_database, mariadb_database)
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'exchange.db'}")
    with engine.connect() as conn:
        payloads = [
            json.loads(p) if isinstance(p, str) else p
            for (p,) in conn.execute(
                sa.text("SELECT payload FROM audit_events WHERE kind = 'delivery.delivered'")
            )
        ]
    engine.dispose()
    notes = [n for p in payloads for n in p.get("notes", [])]
    assert notes.count("added column remark to pg_fe.ent_split") == 1
