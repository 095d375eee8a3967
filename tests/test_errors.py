"""Errors a platform engineer can act on: what is wrong and where, and never a password."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from exchange.flow import run_resource
from exchange.kernel.errors import ConnectionFailed, DataError
from exchange.workflow.grants import add_subscription
from exchange.workspace import Workspace
from tests.conftest import catalog_yaml

SECRET = "S3cret-Pw-7781"
RESOURCE = """\
- code: R1
  name: 测试
  kind: table
  provider: src
  share: unconditional
  source: {table: company}
  primary_key: [id]
  fields:
    - {name: id, type: bigint, nullable: false}
    - {name: status, type: smallint}
"""
FAR = dt.date.today() + dt.timedelta(days=30)


def source_db(path: Path, rows: list[tuple[int, object]]) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE company (id INTEGER PRIMARY KEY, status)")
        db.executemany("INSERT INTO company VALUES (?, ?)", rows)


def exchange_cli(
    home: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exchange", *args, "--catalog", str(home / "catalog.yaml")],
        env={**os.environ, "EXCHANGE_HOME": str(home), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def everything_stored(ws: Workspace) -> str:
    """Every value in every table of the metadata store, as one string to search."""
    out = []
    with ws.store.engine.connect() as conn:
        for table in sa.inspect(conn).get_table_names():
            out += [repr(r) for r in conn.execute(sa.text(f'SELECT * FROM "{table}"'))]  # noqa: S608
    return "\n".join(out)


def test_a_source_value_that_does_not_fit_names_resource_field_and_row_key(
    tmp_path: Path, make_workspace: Callable[[str], Workspace]
) -> None:
    source_db(tmp_path / "src.db", [(1, 2), (2, 3), (41, 99999)])  # smallint holds 32767 at most
    ws = make_workspace(
        catalog_yaml(
            {"src": ("sqlite", "{path: src.db}"), "dst": ("sqlite", "{path: dst.db}")}, RESOURCE
        )
    )
    add_subscription(ws, "R1", "dst", ["id", "status"], FAR)

    with pytest.raises(DataError) as err:
        run_resource(ws, "R1")

    message = str(err.value)
    assert "resource R1" in message
    assert "field 'status'" in message
    assert "row key id=41" in message
    assert "99999" in message

    cli = exchange_cli(tmp_path, "run", "R1")
    assert cli.returncode == 2
    assert "row key id=41" in cli.stderr


def test_an_unreachable_subscriber_fails_alone_naming_its_node_and_hiding_its_password(
    tmp_path: Path, make_workspace: Callable[[str], Workspace], monkeypatch: pytest.MonkeyPatch
) -> None:
    source_db(tmp_path / "src.db", [(1, 2), (2, 3)])
    down = f"postgresql://alice:{SECRET}@127.0.0.1:1/fe"  # nothing listens on port 1
    monkeypatch.setenv("DOWN_URL", down)
    ws = make_workspace(
        catalog_yaml(
            {
                "src": ("sqlite", "{path: src.db}"),
                "down_fe": ("postgresql", "{env: DOWN_URL}"),
                "ok_fe": ("sqlite", "{path: ok.db}"),
            },
            RESOURCE,
        )
    )
    bad = add_subscription(ws, "R1", "down_fe", ["id", "status"], FAR)
    add_subscription(ws, "R1", "ok_fe", ["id", "status"], FAR)

    summary = run_resource(ws, "R1")

    assert summary.status == "failed"
    assert list(summary.failures) == [bad.id]
    assert "down_fe" in summary.failures[bad.id]
    assert SECRET not in summary.failures[bad.id]
    with sqlite3.connect(tmp_path / "ok.db") as db:
        assert db.execute("SELECT count(*) FROM company").fetchone() == (2,)
    assert SECRET not in everything_stored(ws)

    cli = exchange_cli(tmp_path, "run", "R1", env={"DOWN_URL": down})
    assert cli.returncode == 1
    assert "down_fe" in cli.stdout + cli.stderr
    assert SECRET not in cli.stdout + cli.stderr
    cli = exchange_cli(tmp_path, "status", env={"DOWN_URL": down})
    assert "down_fe" in cli.stdout and SECRET not in cli.stdout


def test_a_wrong_password_is_reported_without_the_password(
    tmp_path: Path,
    mariadb_database: str,
    make_workspace: Callable[[str], Workspace],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = sa.engine.make_url(mariadb_database).set(username="nobody", password=SECRET)
    monkeypatch.setenv("MARIA_URL", url.render_as_string(hide_password=False))
    ws = make_workspace(catalog_yaml({"src": ("mysql", "{env: MARIA_URL}")}, RESOURCE))

    with pytest.raises(ConnectionFailed) as err, ws.database("src").connect():
        pass

    assert "'src'" in str(err.value) and "Access denied" in str(err.value)
    assert SECRET not in str(err.value)


def test_an_unreachable_provider_fails_the_run_with_exit_1_and_no_password(
    tmp_path: Path,
) -> None:
    nodes = {"src": ("postgresql", "{env: SRC_URL}"), "a": ("sqlite", "{path: a.db}")}
    (tmp_path / "catalog.yaml").write_text(catalog_yaml(nodes, RESOURCE), encoding="utf-8")
    env = {"SRC_URL": f"postgres://u:{SECRET}@127.0.0.1:1/x"}
    add = ("subscription", "add", "R1", "--node", "a", "--fields", "id,status")
    assert exchange_cli(tmp_path, *add, "--until", FAR.isoformat(), env=env).returncode == 0
    # (a subscriber, for a run nobody receives asks the provider nothing)

    cli = exchange_cli(tmp_path, "run", "R1", env=env)

    assert cli.returncode == 1
    assert "cannot connect to front-end node 'src'" in cli.stderr
    assert SECRET not in cli.stdout + cli.stderr


def test_an_arrow_native_source_names_the_row_whose_value_does_not_fit(
    pg_database: str, make_workspace: Callable[[str], Workspace], monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    with psycopg.connect(pg_database.replace("+psycopg", "")) as conn:
        conn.execute("CREATE TABLE company (id bigint PRIMARY KEY, status numeric(12,2))")
        conn.execute("INSERT INTO company VALUES (1, 2), (77, 123456.00), (78, 3)")
    monkeypatch.setenv("SRC_URL", pg_database)
    ws = make_workspace(
        catalog_yaml(
            {"src": ("postgresql", "{env: SRC_URL}"), "dst": ("sqlite", "{path: d.db}")},
            RESOURCE,  # declares status as smallint: 123456 does not fit
        )
    )
    add_subscription(ws, "R1", "dst", ["id", "status"], FAR)

    with pytest.raises(DataError) as err:
        run_resource(ws, "R1")

    assert "field 'status'" in str(err.value) and "row key id=77" in str(err.value)


PEOPLE = """\
- code: R2
  name: 人员
  kind: table
  provider: src
  share: unconditional
  source: {table: person}
  primary_key: [sfzh]
  fields:
    - {name: sfzh, type: varchar, length: 18, nullable: false}
    - {name: mobile, type: varchar, length: 11}
    - {name: age, type: smallint}
"""
ID_NUMBER, MOBILE = "41010219900101123X", "13812345678"


def test_a_value_that_does_not_fit_is_named_by_a_masked_key_in_the_message_and_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The row key and the value an error quotes may be an ID or mobile number: the CLI's
    message, the run's error and the audit keep them masked (410****3X), as quarantine does."""
    with sqlite3.connect(tmp_path / "src.db") as db:
        db.execute("CREATE TABLE person (sfzh TEXT PRIMARY KEY, mobile TEXT, age)")
        db.execute("INSERT INTO person VALUES (?, ?, ?)", (ID_NUMBER, MOBILE, 10**6))
    nodes = {"src": ("sqlite", "{path: src.db}"), "a": ("sqlite", "{path: a.db}")}
    (tmp_path / "catalog.yaml").write_text(catalog_yaml(nodes, PEOPLE), encoding="utf-8")
    add = ("subscription", "add", "R2", "--node", "a", "--fields", "sfzh,mobile,age")
    assert exchange_cli(tmp_path, *add, "--until", FAR.isoformat()).returncode == 0

    cli = exchange_cli(tmp_path, "run", "R2")

    assert cli.returncode == 2, cli.stderr
    assert "field 'age'" in cli.stderr and "410****3X" in cli.stderr, cli.stderr
    monkeypatch.setenv("EXCHANGE_HOME", str(tmp_path))
    with Workspace.open(tmp_path / "catalog.yaml") as ws:
        kept = everything_stored(ws)
    assert "410****3X" in kept
    assert ID_NUMBER not in cli.stdout + cli.stderr + kept


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_a_subscriber_refusing_a_row_is_told_by_a_masked_key(
    tmp_path: Path, dialect: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A subscriber's own constraint refuses a row: the failed delivery names the row by its
    key where the dialect can tell it, masked, in the CLI's output and in the store."""
    url = request.getfixturevalue("pg_database" if dialect == "postgresql" else "mariadb_database")
    with sqlite3.connect(tmp_path / "src.db") as db:
        db.execute("CREATE TABLE person (sfzh TEXT PRIMARY KEY, mobile TEXT, age)")
        db.execute("INSERT INTO person VALUES (?, ?, ?)", (ID_NUMBER, MOBILE, 120))
    ddl = (
        "CREATE TABLE person (sfzh varchar(18) PRIMARY KEY, mobile varchar(11),"
        " age smallint CHECK (age < 100))"
    )
    with sa.create_engine(url).begin() as conn:
        conn.execute(sa.text(ddl))
    env = {"DST_URL": url}
    nodes = {"src": ("sqlite", "{path: src.db}"), "a": (dialect, "{env: DST_URL}")}
    (tmp_path / "catalog.yaml").write_text(catalog_yaml(nodes, PEOPLE), encoding="utf-8")
    add = ("subscription", "add", "R2", "--node", "a", "--fields", "sfzh,mobile,age")
    add += ("--table", "person")
    assert exchange_cli(tmp_path, *add, "--until", FAR.isoformat(), env=env).returncode == 0

    cli = exchange_cli(tmp_path, "run", "R2", env=env)

    assert cli.returncode == 1, cli.stdout + cli.stderr
    assert "person_age_check" in cli.stdout or "CONSTRAINT" in cli.stdout, cli.stdout
    monkeypatch.setenv("EXCHANGE_HOME", str(tmp_path))
    monkeypatch.setenv("DST_URL", url)
    with Workspace.open(tmp_path / "catalog.yaml") as ws:
        kept = everything_stored(ws)
    assert ID_NUMBER not in cli.stdout + cli.stderr + kept
    assert MOBILE not in cli.stdout + cli.stderr + kept


def test_an_error_text_masks_every_id_and_mobile_number_but_not_longer_numbers() -> None:
    from quality.mask import mask_text

    assert mask_text(f"row key sfzh='{ID_NUMBER}': value '{MOBILE}'") == (
        "row key sfzh='410****3X': value '138****5678'"
    )
    assert mask_text("rows 123456789012345678901 and 913701001234567890") == (
        "rows 123456789012345678901 and 913****90"
    )
    assert mask_text("uscc 91410100MA4F000001, 12 rows, tel 0371-12345678") == (
        "uscc 91410100MA4F000001, 12 rows, tel 0371-12345678"
    )


def test_status_of_an_unknown_resource_is_bad_input_and_a_refused_subscriber_shows_no_delivery(
    tmp_path: Path, make_workspace: Callable[[str], Workspace]
) -> None:
    source_db(tmp_path / "src.db", [(1, 1), (2, 2)])
    nodes = {"src": ("sqlite", "{path: src.db}"), "a": ("sqlite", "{path: a.db}"),
             "b": ("postgresql", "{env: NOT_SET_B}")}  # fmt: skip
    ws = make_workspace(catalog_yaml(nodes, RESOURCE))
    add_subscription(ws, "R1", "a", ["id", "status"], FAR)
    add_subscription(ws, "R1", "b", ["id", "status"], FAR)
    run_resource(ws, "R1")

    from exchange.status import subscriber_status

    by_node = {s.node: s for s in subscriber_status(ws, "R1")}
    assert by_node["a"].last_delivery is not None and by_node["a"].last_error is None
    assert by_node["b"].last_delivery is None  # refused: it never received anything
    assert "NOT_SET_B" in (by_node["b"].last_error or "")
    unknown = exchange_cli(tmp_path, "status", "NOPE")
    assert unknown.returncode == 2 and "no resource 'NOPE'" in unknown.stderr
