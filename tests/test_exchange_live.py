"""The exchange between real PostgreSQL, MariaDB and SQLite front-end DBs, every direction."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest

from exchange.flow import run_resource
from exchange.workflow.grants import add_subscription
from exchange.workspace import Workspace
from tests.conftest import catalog_yaml
from tests.sources import (
    RESOURCE_YAML,
    create_source,
    delete_source,
    projection,
    registry,
    table_columns,
    table_rows,
    upsert_source,
)

FAR = dt.date.today() + dt.timedelta(days=300)
ALL = [
    "id", "uscc", "name", "legal_person", "id_card", "reg_capital", "established",
    "updated_at", "status", "region_code", "address", "phone", "industry", "scope",
    "is_active", "remark",
]  # fmt: skip
SOME = ["id", "name", "reg_capital", "established", "is_active", "updated_at"]
KIND = {"postgresql": "postgresql", "mysql": "mysql", "sqlite": "sqlite"}


@pytest.fixture
def databases(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], str]:
    """``databases('postgresql')`` -> URL of a fresh database of that dialect."""

    def get(dialect: str) -> str:
        if dialect == "sqlite":
            return f"sqlite:///{tmp_path / 'src.db'}"
        fixture = "pg_database" if dialect == "postgresql" else "mariadb_database"
        return str(request.getfixturevalue(fixture))

    return get


PAIRS = [
    ("postgresql", "postgresql"),
    ("postgresql", "mysql"),
    ("mysql", "postgresql"),
    ("mysql", "mysql"),
    ("sqlite", "postgresql"),
    ("sqlite", "mysql"),
]


@pytest.mark.parametrize(("source", "target"), PAIRS, ids=[f"{s}->{t}" for s, t in PAIRS])
def test_full_then_incremental_exchange_leaves_each_target_equal_to_its_projection(
    source: str,
    target: str,
    databases: Callable[[str], str],
    make_workspace: Callable[[str], Workspace],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src_url = databases(source)
    # A second database of the target dialect would clash with the source's fixture when the
    # dialects match, so same-dialect pairs deliver into a schema-free second fixture database.
    tgt_url = databases(target) if target != source else _second(target, databases)
    monkeypatch.setenv("SRC_URL", src_url)
    monkeypatch.setenv("TGT_URL", tgt_url)
    rows = registry(range(1, 2001))
    create_source(src_url, rows)
    ws = make_workspace(
        catalog_yaml(
            {"src": (KIND[source], "{env: SRC_URL}"), "tgt": (KIND[target], "{env: TGT_URL}")},
            RESOURCE_YAML,
        )
    )
    add_subscription(ws, "ENT", "tgt", ALL, FAR, target_table="ent_all")
    add_subscription(ws, "ENT", "tgt", SOME, FAR, target_table="ent_some")

    first = run_resource(ws, "ENT")

    assert first.status == "succeeded", first.failures
    assert table_rows(tgt_url, ALL, "ent_all") == projection(rows, ALL)
    assert table_rows(tgt_url, SOME, "ent_some") == projection(rows, SOME)
    assert table_columns(tgt_url, "ent_some") == [f for f in ALL if f in SOME]  # catalog order

    # 1 % changed, new rows on one shared timestamp, and the Chinese text survives the trip.
    stamp = dt.datetime(2026, 11, 20, 10, 30, 0, 123456)
    changed = registry(range(1, 2001, 100), stamp) + registry(range(2001, 2051), stamp)
    upsert_source(src_url, changed)
    rows = rows + changed

    second = run_resource(ws, "ENT")

    assert second.status == "succeeded", second.failures
    assert second.extracted == len(changed) + 1  # and the one row on the old boundary
    assert table_rows(tgt_url, ALL, "ent_all") == projection(rows, ALL)
    assert table_rows(tgt_url, SOME, "ent_some") == projection(rows, SOME)


def _second(dialect: str, databases: Callable[[str], str]) -> str:
    if dialect == "sqlite":
        return databases("sqlite").replace("src.db", "tgt.db")
    return databases(dialect).rsplit("/", 1)[0] + "/" + _extra_database(dialect)


def _extra_database(dialect: str) -> str:
    import secrets

    import psycopg
    import pymysql

    name = f"exch_test_{secrets.token_hex(4)}"
    if dialect == "postgresql":
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
    else:
        with pymysql.connect(host="127.0.0.1", user="root", autocommit=True) as c:
            c.cursor().execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    _CREATED.append((dialect, name))
    return name


_CREATED: list[tuple[str, str]] = []


@pytest.fixture(autouse=True)
def _drop_extra_databases() -> object:
    yield
    import psycopg
    import pymysql

    while _CREATED:
        dialect, name = _CREATED.pop()
        if dialect == "postgresql":
            with psycopg.connect(
                "host=127.0.0.1 user=postgres dbname=postgres", autocommit=True
            ) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            with pymysql.connect(host="127.0.0.1", user="root", autocommit=True) as c:
                c.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.mark.parametrize("target", ["postgresql", "mysql"])
def test_full_reconcile_deletes_rows_the_provider_removed(
    target: str,
    databases: Callable[[str], str],
    make_workspace: Callable[[str], Workspace],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src_url = databases("sqlite")
    tgt_url = databases(target)
    monkeypatch.setenv("TGT_URL", tgt_url)
    rows = registry(range(1, 301))
    create_source(src_url, rows)
    ws = make_workspace(
        catalog_yaml(
            {"src": ("sqlite", "{path: src.db}"), "tgt": (KIND[target], "{env: TGT_URL}")},
            RESOURCE_YAML,
        )
    )
    add_subscription(ws, "ENT", "tgt", SOME, FAR)
    run_resource(ws, "ENT")
    delete_source(src_url, [5, 6, 7])

    run_resource(ws, "ENT", full=True)

    kept = [r for r in rows if r[0] not in (5, 6, 7)]
    assert table_rows(tgt_url, SOME) == projection(kept, SOME)
