"""Delivery markers are keyed by installation: two installations (two metadata stores) that
deliver into one PostgreSQL and one MariaDB database, with the same subscription ids, into
the same table or different ones, each keep their own markers; neither loses nor duplicates a
row. Each metadata store has one installation id, generated once."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from connectors.base import MARKER_KEY, MARKER_TABLE, DeliveryMarker, TableSpec
from exchange.flow import run_resource
from exchange.kernel.errors import NotFound
from exchange.kernel.settings import Settings
from exchange.store import Store
from exchange.store.models import Installation
from exchange.workflow.grants import add_subscription
from exchange.workspace import Workspace
from tests.conformance.database import marker_key, old_marker_table
from tests.conformance.frontend import (
    COMPANY,
    FIRST,
    INSTALLATION,
    REPO,
    SUBSCRIPTION,
    FrontEndDatabase,
)
from tests.conftest import catalog_yaml
from tests.sources import RESOURCE_YAML, create_source, projection, registry, table_rows

FAR = dt.date.today() + dt.timedelta(days=300)
GRANT = ["id", "uscc", "name", "updated_at"]


def test_a_metadata_store_has_one_installation_id_generated_once(tmp_path: Path) -> None:
    first = Store(f"sqlite:///{tmp_path / 'a.db'}")
    other = Store(f"sqlite:///{tmp_path / 'b.db'}")
    try:
        again = Store(f"sqlite:///{tmp_path / 'a.db'}")
        assert len(first.installation_id) == 32
        assert again.installation_id == first.installation_id
        assert other.installation_id != first.installation_id
        with again.session() as s:
            assert s.execute(sa.select(sa.func.count()).select_from(Installation)).scalar() == 1
        again.close()
    finally:
        first.close()
        other.close()


def test_a_store_that_lost_its_installation_id_is_refused_and_never_given_a_new_one(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    store = Store(url)
    try:
        with store.session() as s:
            s.execute(sa.delete(Installation))
        again = Store(url)
        try:
            with pytest.raises(NotFound, match=r"metadata store \(sqlite:///.*a\.db\) has no") as e:
                _ = again.installation_id
            assert "Restore that row from a backup" in str(e.value)
            with again.session() as s:  # nothing written in its place
                assert s.execute(sa.select(sa.func.count()).select_from(Installation)).scalar() == 0
        finally:
            again.close()
    finally:
        store.close()


@pytest.mark.postgres
def test_a_postgresql_metadata_store_keeps_its_installation_id_too(pg_database: str) -> None:
    first = Store(pg_database)
    try:
        again = Store(pg_database)
        assert len(first.installation_id) == 32
        assert again.installation_id == first.installation_id
        again.close()
    finally:
        first.close()


def open_installation(home: Path, src: Path) -> Workspace:
    """An installation of its own (home, metadata store) whose catalog reads ``src``."""
    home.mkdir()
    nodes = {
        "src": ("sqlite", f"{{path: {src}}}"),
        "pg_fe": ("postgresql", "{env: PG_URL}"),
        "maria_fe": ("mysql", "{env: MARIA_URL}"),
    }
    path = home / "catalog.yaml"
    path.write_text(catalog_yaml(nodes, RESOURCE_YAML), encoding="utf-8")
    return Workspace.open(path, Settings(home=home, db_url=f"sqlite:///{home / 'exchange.db'}"))


def marker_run(ws: Workspace, node: str, table: str, subscription_id: int) -> str | None:
    spec = TableSpec(table, (ws.catalog.resource("ENT").field("id"),), ("id",))
    connector = ws.database(node)
    try:
        marker = connector.read_marker(spec, subscription_id)
    finally:
        connector.close()
    return marker.run_id if marker else None


@pytest.mark.postgres
@pytest.mark.mariadb
def test_two_installations_delivering_into_one_database_keep_their_own_markers(
    tmp_path: Path, pg_database: str, mariadb_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PG_URL", pg_database)
    monkeypatch.setenv("MARIA_URL", mariadb_database)
    src = tmp_path / "src.db"
    rows = registry(range(1, 301))
    create_source(f"sqlite:///{src}", rows)
    a = open_installation(tmp_path / "a", src)
    b = open_installation(tmp_path / "b", src)
    try:
        assert a.installation_id != b.installation_id
        # The same subscription ids (1, 2) in both stores: A into ent_a on each server, B into
        # the same table as A on PostgreSQL and into a table of its own on MariaDB.
        add_subscription(a, "ENT", "pg_fe", GRANT, FAR, target_table="ent")
        add_subscription(a, "ENT", "maria_fe", GRANT, FAR, target_table="ent_a")
        add_subscription(b, "ENT", "pg_fe", GRANT, FAR, target_table="ent")
        add_subscription(b, "ENT", "maria_fe", GRANT, FAR, target_table="ent_b")

        run_a = run_resource(a, "ENT")
        run_b = run_resource(b, "ENT")

        assert run_a.status == run_b.status == "succeeded"
        assert marker_run(a, "pg_fe", "ent", 1) == run_a.run_id
        assert marker_run(b, "pg_fe", "ent", 1) == run_b.run_id
        assert marker_run(a, "maria_fe", "ent_a", 2) == run_a.run_id
        assert marker_run(b, "maria_fe", "ent_b", 2) == run_b.run_id
        # A runs again with nothing new: its own marker moves, B's stays where it was.
        again = run_resource(a, "ENT")
        assert marker_run(a, "pg_fe", "ent", 1) == again.run_id
        assert marker_run(b, "pg_fe", "ent", 1) == run_b.run_id
        assert marker_run(b, "maria_fe", "ent_b", 2) == run_b.run_id
    finally:
        a.close()
        b.close()
    expected = projection(rows, GRANT)
    assert table_rows(pg_database, GRANT, "ent") == expected
    assert table_rows(mariadb_database, GRANT, "ent_a") == expected
    assert table_rows(mariadb_database, GRANT, "ent_b") == expected
    engine = sa.create_engine(pg_database)
    try:
        with engine.connect() as conn:
            markers = conn.execute(
                sa.text(f"SELECT installation_id, subscription_id FROM {MARKER_TABLE}")  # noqa: S608
            ).all()
    finally:
        engine.dispose()
    assert sorted(markers) == sorted(
        [(a.installation_id, 1), (b.installation_id, 1)]
    )  # one row each, for the same subscription id


# -- SQLite: the re-key is one transaction (pysqlite commits DDL by itself otherwise) -----------

#: A child that upgrades the marker table of the SQLite database at argv[1] and is killed in
#: the middle of the table copy (the INSERT into Alembic's copy table).
KILLED_IN_THE_COPY = """
import os, signal, sys
import sqlalchemy as sa
from tests.conformance.frontend import COMPANY, FrontEndDatabase

connector = FrontEndDatabase(sys.argv[1]).open()

@sa.event.listens_for(connector.engine, "before_cursor_execute")
def _kill(conn, cursor, statement, *args):
    if statement.lstrip().upper().startswith("INSERT INTO _ALEMBIC_TMP_"):
        os.kill(os.getpid(), signal.SIGKILL)

connector.ensure_table(COMPANY)
"""


def sqlite_tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return set(sa.inspect(conn).get_table_names())
    finally:
        engine.dispose()


def test_a_sqlite_upgrade_killed_in_its_table_copy_is_undone_and_done_by_the_next_delivery(
    tmp_path: Path,
) -> None:
    database = FrontEndDatabase(f"sqlite:///{tmp_path / 'fe.db'}")
    old_marker_table(database, (SUBSCRIPTION, "run-1", 5))

    child = subprocess.run(
        [sys.executable, "-c", KILLED_IN_THE_COPY, database.url],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert child.returncode == -signal.SIGKILL, child.stderr
    assert f"_alembic_tmp_{MARKER_TABLE}" not in sqlite_tables(database.url)
    assert "installation_id" not in database.columns(TableSpec(MARKER_TABLE, (), ()))
    assert database.marker(COMPANY) == DeliveryMarker(SUBSCRIPTION, "run-1", None, 5)
    database.deliver(COMPANY, FIRST, run_id="run-2")
    assert marker_key(database) == list(MARKER_KEY)
    assert database.marker(COMPANY) == DeliveryMarker(SUBSCRIPTION, "run-2", None, len(FIRST))


def test_a_copy_table_left_by_an_earlier_versions_upgrade_does_not_block_deliveries(
    tmp_path: Path,
) -> None:
    # What an earlier version left when killed in its copy: the column added and filled, the
    # copy table created (each committed by itself), the marker table still keyed the old way.
    database = FrontEndDatabase(f"sqlite:///{tmp_path / 'fe.db'}")
    old_marker_table(database, (SUBSCRIPTION, "run-1", 5))
    engine = sa.create_engine(database.url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f"ALTER TABLE {MARKER_TABLE} ADD installation_id VARCHAR(64)"))
            conn.execute(
                sa.text(f"UPDATE {MARKER_TABLE} SET installation_id = :i"),  # noqa: S608
                {"i": INSTALLATION},
            )
            conn.execute(sa.text(f"CREATE TABLE _alembic_tmp_{MARKER_TABLE} (x INTEGER)"))
    finally:
        engine.dispose()

    database.deliver(COMPANY, FIRST, run_id="run-2")

    assert marker_key(database) == list(MARKER_KEY)
    assert f"_alembic_tmp_{MARKER_TABLE}" not in sqlite_tables(database.url)
    assert database.marker(COMPANY) == DeliveryMarker(SUBSCRIPTION, "run-2", None, len(FIRST))
