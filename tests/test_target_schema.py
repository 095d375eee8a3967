"""The target (and source) schema check, without a server: each dialect's types compared with
the catalog's declared columns (``connectors.schema_check``), and the catalog's
``target_columns`` policy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, oracle, postgresql

from connectors.base import DatabaseConnector
from connectors.columns import ColumnSpec
from connectors.registry import open_database
from connectors.schema_check import (
    INCOMPATIBLE,
    NARROWER,
    Problem,
    Reflected,
    column_problem,
    compare_source,
    compare_target,
    refusal,
    sqlite_affinity,
)
from exchange.catalog import load_catalog
from exchange.kernel.errors import CatalogError
from exchange.tables.check import check_resource
from exchange.workspace import Workspace
from tests.conftest import catalog_yaml

URLS = {
    "postgresql": "postgresql+psycopg://u@127.0.0.1:5432/fe",
    "mysql": "mysql+pymysql://u@127.0.0.1:3306/fe",
    "oracle": "oracle+oracledb://u:p@127.0.0.1:1521/?service_name=FREEPDB1",
    "sqlite": "sqlite:////nonexistent/never-opened.db",
}


def connector(dialect: str) -> DatabaseConnector:
    return open_database("tax_fe", dialect, URLS[dialect])  # builds an engine, never connects


AMOUNT = ColumnSpec("base_amount", "decimal", precision=12, scale=2)
BIG_AMOUNT = ColumnSpec("capital", "decimal", precision=18, scale=2)
NAME = ColumnSpec("name", "varchar", length=50)
CODE = ColumnSpec("code", "char", length=6)
SCOPE = ColumnSpec("scope", "text")
AT = ColumnSpec("updated_at", "timestamp")
AT_TZ = ColumnSpec("signed_at", "timestamptz")
DAY = ColumnSpec("established", "date")
FLAG = ColumnSpec("is_active", "boolean")
RATE = ColumnSpec("rate", "double")
SMALL = ColumnSpec("status", "smallint")
INT = ColumnSpec("n", "integer")
BIG = ColumnSpec("id", "bigint")

Case = tuple[ColumnSpec, Any, str | None]


def verdict(dialect: str, col: ColumnSpec, found: Any, *, source: bool = False) -> str | None:
    c = connector(dialect)
    try:
        problem = column_problem(col, c.column_type(col), found, c.engine.dialect, source=source)
    finally:
        c.close()
    return None if problem is None else problem.verdict


def cases(dialect: str, rows: list[Case]) -> list[Any]:
    return [
        pytest.param(dialect, col, found, want, id=f"{dialect}-{col.type}-{found!r}-{want}")
        for col, found, want in rows
    ]


POSTGRESQL: list[Case] = [
    (AMOUNT, sa.INTEGER(), NARROWER),  # the case: amounts would be rounded
    (AMOUNT, sa.BIGINT(), NARROWER),
    (AMOUNT, postgresql.NUMERIC(12, 1), NARROWER),  # fewer decimals
    (AMOUNT, postgresql.NUMERIC(11, 2), NARROWER),  # fewer integer digits
    (AMOUNT, postgresql.NUMERIC(12, 2), None),
    (AMOUNT, postgresql.NUMERIC(16, 4), None),  # wider
    (AMOUNT, postgresql.NUMERIC(), None),  # unbounded
    (AMOUNT, postgresql.DOUBLE_PRECISION(), NARROWER),
    (AMOUNT, sa.TEXT(), INCOMPATIBLE),
    (ColumnSpec("n", "decimal", precision=10, scale=0), sa.BIGINT(), None),
    (INT, sa.BIGINT(), None),  # wider
    (BIG, sa.INTEGER(), NARROWER),
    (BIG, postgresql.NUMERIC(19, 0), None),
    (BIG, postgresql.NUMERIC(18, 0), NARROWER),
    (SMALL, sa.INTEGER(), None),
    (INT, postgresql.DOUBLE_PRECISION(), None),  # every 32-bit integer is exact in a double
    (BIG, postgresql.DOUBLE_PRECISION(), NARROWER),
    (RATE, postgresql.REAL(), NARROWER),
    (RATE, postgresql.NUMERIC(30, 10), INCOMPATIBLE),
    (NAME, sa.VARCHAR(100), None),
    (NAME, sa.VARCHAR(20), NARROWER),
    (NAME, sa.TEXT(), None),
    (NAME, sa.VARCHAR(), None),  # character varying without a limit
    (NAME, sa.CHAR(50), INCOMPATIBLE),  # CHAR pads
    (CODE, sa.CHAR(6), None),
    (CODE, sa.VARCHAR(6), None),
    (SCOPE, sa.VARCHAR(4000), NARROWER),
    (AT, postgresql.TIMESTAMP(), None),
    (AT, postgresql.TIMESTAMP(precision=3), NARROWER),
    (AT, postgresql.TIMESTAMP(timezone=True), INCOMPATIBLE),  # another time-zone kind
    (AT, sa.DATE(), NARROWER),
    (AT_TZ, postgresql.TIMESTAMP(timezone=True), None),
    (AT_TZ, postgresql.TIMESTAMP(), INCOMPATIBLE),
    (DAY, sa.DATE(), None),
    (DAY, postgresql.TIMESTAMP(), None),
    (DAY, sa.TEXT(), INCOMPATIBLE),  # text for a date
    (FLAG, sa.BOOLEAN(), None),
    (FLAG, sa.SMALLINT(), INCOMPATIBLE),
    (INT, postgresql.UUID(), INCOMPATIBLE),
]
MYSQL: list[Case] = [
    (AMOUNT, mysql.INTEGER(display_width=11), NARROWER),  # the case
    (AMOUNT, mysql.DECIMAL(12, 2), None),
    (AMOUNT, mysql.DECIMAL(20, 4), None),
    (AMOUNT, mysql.DECIMAL(12, 0), NARROWER),
    (AMOUNT, mysql.DECIMAL(12, 2, unsigned=True), NARROWER),  # negative amounts refused
    (AMOUNT, mysql.DOUBLE(), NARROWER),
    (AT, mysql.DATETIME(), NARROWER),  # DATETIME without fsp: microseconds lost
    (AT, mysql.DATETIME(fsp=3), NARROWER),
    (AT, mysql.DATETIME(fsp=6), None),
    (AT, mysql.TIMESTAMP(fsp=6), INCOMPATIBLE),  # converted through the session's zone
    (AT_TZ, mysql.DATETIME(fsp=6), None),  # the documented UTC convention
    (AT_TZ, mysql.DATETIME(), NARROWER),
    (AT_TZ, mysql.TIMESTAMP(fsp=6), INCOMPATIBLE),
    (FLAG, mysql.TINYINT(display_width=1), None),
    (FLAG, mysql.INTEGER(), None),  # booleans are integers here
    (FLAG, mysql.VARCHAR(5), INCOMPATIBLE),
    (SMALL, mysql.TINYINT(), NARROWER),
    (INT, mysql.MEDIUMINT(), NARROWER),
    (INT, mysql.INTEGER(unsigned=True), NARROWER),  # negative values refused
    (INT, mysql.BIGINT(), None),
    (INT, mysql.INTEGER(unsigned=True, display_width=10), NARROWER),
    (SMALL, mysql.INTEGER(unsigned=True), NARROWER),
    (SCOPE, mysql.LONGTEXT(), None),
    (SCOPE, mysql.MEDIUMTEXT(), None),
    (SCOPE, mysql.TEXT(), NARROWER),  # 64 KB
    (SCOPE, mysql.TINYTEXT(), NARROWER),
    (NAME, mysql.TEXT(), None),
    (NAME, mysql.VARCHAR(length=49), NARROWER),
    (NAME, mysql.ENUM("a", "b"), INCOMPATIBLE),
    (DAY, mysql.DATETIME(), None),
    (DAY, mysql.VARCHAR(10), INCOMPATIBLE),
    (RATE, mysql.FLOAT(), NARROWER),
    (RATE, mysql.DOUBLE(), None),
]
ORACLE: list[Case] = [
    (AMOUNT, oracle.NUMBER(10, 0), NARROWER),
    (AMOUNT, sa.INTEGER(), NARROWER),  # NUMBER(*,0) as reflected
    (AMOUNT, oracle.NUMBER(12, 2), None),
    (AMOUNT, oracle.NUMBER(14, 3), None),
    (AMOUNT, oracle.NUMBER(), None),  # NUMBER: any decimal
    (AMOUNT, oracle.BINARY_DOUBLE(), NARROWER),
    (INT, oracle.NUMBER(10, 0), None),
    (INT, oracle.NUMBER(9, 0), NARROWER),
    (BIG, sa.INTEGER(), None),  # 38 digits
    (SMALL, oracle.NUMBER(5, 0), None),
    (SMALL, oracle.NUMBER(4, 0), NARROWER),
    (FLAG, oracle.NUMBER(1, 0), None),
    (FLAG, oracle.NUMBER(3, 0), None),
    (FLAG, oracle.VARCHAR2(1), INCOMPATIBLE),
    (NAME, oracle.VARCHAR2(40), NARROWER),
    (NAME, oracle.VARCHAR2(60), None),
    (NAME, oracle.NVARCHAR2(50), None),
    (NAME, sa.CLOB(), None),
    (SCOPE, oracle.VARCHAR2(4000), NARROWER),
    (SCOPE, oracle.NCLOB(), None),
    (CODE, sa.CHAR(6), None),
    (AT, oracle.TIMESTAMP(), None),
    (AT, oracle.DATE(), NARROWER),  # to the second: no fractions
    (AT, oracle.TIMESTAMP(timezone=True), INCOMPATIBLE),
    (AT, oracle.TIMESTAMP(local_timezone=True), INCOMPATIBLE),
    (AT_TZ, oracle.TIMESTAMP(timezone=True), None),
    (DAY, oracle.DATE(), None),
    (DAY, oracle.VARCHAR2(10), INCOMPATIBLE),
    (RATE, oracle.BINARY_DOUBLE(), None),
    (RATE, oracle.BINARY_FLOAT(), NARROWER),
    (INT, oracle.RAW(4), INCOMPATIBLE),
]
# SQLite enforces no type and no length: a value is converted to the column's affinity.
SQLITE: list[Case] = [
    (BIG_AMOUNT, sa.NUMERIC(18, 2), NARROWER),  # NUMERIC affinity: 15 significant digits
    (BIG_AMOUNT, sa.INTEGER(), NARROWER),
    (BIG_AMOUNT, sa.TEXT(), None),  # exact decimal text, as the engine writes it
    (AMOUNT, sa.NUMERIC(12, 2), None),  # 12 digits survive a REAL
    (AMOUNT, sa.INTEGER(), None),  # INTEGER affinity keeps 12.5 a REAL, not 12
    (NAME, sa.VARCHAR(5), None),  # lengths are not enforced
    (NAME, sa.INTEGER(), INCOMPATIBLE),  # '007' would become 7
    (NAME, sa.NUMERIC(), INCOMPATIBLE),
    (CODE, sa.types.NullType(), None),  # no declared type: BLOB affinity, kept as given
    (BIG, sa.INTEGER(), None),
    (BIG, sa.REAL(), NARROWER),
    (INT, sa.REAL(), None),
    (INT, sa.TEXT(), INCOMPATIBLE),
    (DAY, sa.TEXT(), None),
    (AT, sa.DATETIME(), None),
    (FLAG, sa.BOOLEAN(), None),
    (FLAG, sa.TEXT(), INCOMPATIBLE),
    (RATE, sa.TEXT(), INCOMPATIBLE),
]


@pytest.mark.parametrize(
    ("dialect", "col", "found", "want"),
    cases("postgresql", POSTGRESQL)
    + cases("mysql", MYSQL)
    + cases("oracle", ORACLE)
    + cases("sqlite", SQLITE),
)
def test_a_target_column_narrower_or_of_another_kind_is_refused_and_a_wider_one_accepted(
    dialect: str, col: ColumnSpec, found: Any, want: str | None
) -> None:
    assert verdict(dialect, col, found) == want


@pytest.mark.parametrize("dialect", ["postgresql", "mysql", "oracle", "sqlite"])
def test_the_engines_own_column_type_for_every_declared_field_is_always_accepted(
    dialect: str,
) -> None:
    c = connector(dialect)
    for col in (AMOUNT, BIG_AMOUNT, NAME, CODE, SCOPE, AT, AT_TZ, DAY, FLAG, RATE, SMALL, INT, BIG):
        assert verdict(dialect, col, c.column_type(col)) is None, col
        assert verdict(dialect, col, c.column_type(col), source=True) is None, col


@pytest.mark.parametrize(
    ("dialect", "col", "found", "want"),
    [
        ("postgresql", AMOUNT, postgresql.NUMERIC(18, 4), NARROWER),  # more decimals at source
        ("postgresql", AMOUNT, sa.INTEGER(), None),  # 10 digits: decimal(12,2) holds them
        ("postgresql", AMOUNT, sa.BIGINT(), NARROWER),
        ("postgresql", BIG, sa.INTEGER(), None),
        ("postgresql", INT, sa.BIGINT(), NARROWER),
        ("postgresql", NAME, sa.TEXT(), NARROWER),
        ("postgresql", CODE, sa.VARCHAR(6), None),  # read unpadded: a char(6) holds it
        ("postgresql", AT, postgresql.TIMESTAMP(timezone=True), INCOMPATIBLE),  # zone kind
        ("postgresql", DAY, sa.TEXT(), INCOMPATIBLE),
        ("mysql", AT_TZ, mysql.TIMESTAMP(fsp=6), None),  # a TIMESTAMP is read as an instant
        ("mysql", AT, mysql.TIMESTAMP(fsp=6), INCOMPATIBLE),
        ("mysql", FLAG, mysql.TINYINT(display_width=1), None),
        ("oracle", AT, oracle.DATE(), None),  # fewer fractions at the source: they fit
        ("sqlite", DAY, sa.INTEGER(), None),  # SQLite sources: values are checked at extract
    ],
)
def test_a_source_column_whose_values_would_not_fit_the_declared_type_is_found(
    dialect: str, col: ColumnSpec, found: Any, want: str | None
) -> None:
    assert verdict(dialect, col, found, source=True) == want


def test_sqlite_affinity_follows_sqlites_own_rules() -> None:
    assert sqlite_affinity("VARCHAR(5)") == "TEXT"
    assert sqlite_affinity("BIGINT") == "INTEGER"
    assert sqlite_affinity("DOUBLE PRECISION") == "REAL"
    assert sqlite_affinity("DECIMAL(10, 2)") == "NUMERIC"
    assert sqlite_affinity("DATETIME") == "NUMERIC"
    assert sqlite_affinity("") == "BLOB"
    assert sqlite_affinity("FLOATING POINT") == "INTEGER"  # "INT" comes first (datatype3)


def column(name: str, typ: Any, nullable: bool = True, **kw: Any) -> dict[str, Any]:
    return {"name": name, "type": typ, "nullable": nullable, "default": None, **kw}


def target_check(found: Reflected, fields: tuple[ColumnSpec, ...]) -> list[Problem]:
    c = connector("postgresql")
    check = compare_target(fields, ("id",), found, c.column_type, c.engine.dialect)
    c.close()
    return list(check.problems)


ID = ColumnSpec("id", "bigint", nullable=False)


def test_the_refusal_names_node_table_column_declared_and_found() -> None:
    found = Reflected(
        (column("id", sa.BIGINT(), False), column("base_amount", sa.INTEGER())), ("id",)
    )

    problems = target_check(found, (ID, AMOUNT))

    assert refusal("tax_fe", "enterprise", problems) == (
        "node 'tax_fe' table enterprise column base_amount: declared decimal(12,2), "
        "found integer: narrower (amounts would be rounded)"
    )


def test_a_not_null_target_column_for_a_nullable_field_is_narrower() -> None:
    found = Reflected(
        (column("id", sa.BIGINT(), False), column("name", sa.VARCHAR(50), False)), ("id",)
    )

    (problem,) = target_check(found, (ID, NAME))

    assert (problem.column, problem.verdict) == ("name", NARROWER)
    assert "NULLs would be refused" in str(problem)


def test_a_target_without_a_key_on_the_declared_primary_key_is_refused() -> None:
    for pk, unique in (((), ()), (("id", "name"), ()), ((), (frozenset({"name"}),))):
        found = Reflected((column("id", sa.BIGINT()), column("name", sa.VARCHAR(50))), pk, unique)
        (problem,) = target_check(found, (ID, NAME))
        assert problem.column == "(id)" and problem.verdict == INCOMPATIBLE
        assert str(problem).startswith("key (id): declared primary key (id)")
    keyed_by_index = Reflected(
        (column("id", sa.BIGINT(), False), column("name", sa.VARCHAR(50))), (), (frozenset({"id"}),)
    )
    assert target_check(keyed_by_index, (ID, NAME)) == []


def test_an_extra_not_null_target_column_without_a_default_is_refused_and_one_with_is_not() -> None:
    found = Reflected(
        (
            column("id", sa.BIGINT(), False),
            column("owner", sa.VARCHAR(10), False),
            column("created", sa.TIMESTAMP(), False, default="now()"),
            column("note", sa.TEXT()),
        ),
        ("id",),
    )

    (problem,) = target_check(found, (ID,))

    assert problem.column == "owner" and "every insert would be refused" in problem.why


def test_a_missing_target_column_is_listed_not_refused() -> None:
    c = connector("mysql")
    found = Reflected((column("id", mysql.BIGINT(), False),), ("id",))

    check = compare_target((ID, AMOUNT), ("id",), found, c.column_type, c.engine.dialect)

    assert check.problems == () and check.missing == ("base_amount",)


def test_a_source_without_a_key_constraint_is_not_keyed() -> None:
    c = connector("postgresql")
    bare = Reflected((column("id", sa.BIGINT()), column("base_amount", sa.NUMERIC(12, 2))), ())
    keyed = Reflected(bare.columns, ("id",))

    assert not compare_source((ID, AMOUNT), ("id",), bare, c.column_type, c.engine.dialect).keyed
    assert compare_source((ID, AMOUNT), ("id",), keyed, c.column_type, c.engine.dialect).keyed
    lacking = compare_source((ID, AMOUNT, NAME), ("id",), keyed, c.column_type, c.engine.dialect)
    assert lacking.missing == ("name",)


CATALOG = """\
version: 1
nodes:
  - {name: src, kind: sqlite, connection: {path: src.db}}
resources:
  - code: ENT
    name: 企业
    kind: table
    provider: src
    share: unconditional
    source: {table: enterprise}
    primary_key: [id]
    fields:
      - {name: id, type: bigint, nullable: false}
"""


def test_target_columns_defaults_to_add_and_takes_refuse(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(CATALOG, "utf-8")
    assert load_catalog(path).resource("ENT").target_columns == "add"

    path.write_text(
        CATALOG.replace("    primary_key:", "    target_columns: refuse\n    primary_key:")
    )
    assert load_catalog(path).resource("ENT").target_columns == "refuse"


def test_target_columns_other_than_add_or_refuse_is_a_catalog_error(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        CATALOG.replace("    primary_key:", "    target_columns: drop\n    primary_key:")
    )

    with pytest.raises(CatalogError) as err:
        load_catalog(path)

    assert err.value.problems == [
        "c.yaml:11 resources[0].target_columns: 'drop' is not one of ['add', 'refuse']"
    ]


def test_catalog_check_of_a_folder_resource_says_there_is_nothing_to_check_yet(
    make_workspace: Callable[[str], Workspace],
) -> None:
    ws = make_workspace(
        catalog_yaml(
            {"files": ("local", "{path: files}")},
            """\
            - code: REPORTS
              name: 年报
              kind: folder
              provider: files
              share: unconditional
              files: {path: reports}
            """,
        )
    )

    report = check_resource(ws, "REPORTS")

    assert report.findings == () and not report.refused
    assert report.nothing_to_check == (
        "resource REPORTS is a folder resource: there is nothing to check yet "
        "(only table resources are compared)"
    )


@pytest.mark.parametrize(
    ("found", "table_charset", "refused"),
    [
        (mysql.VARCHAR(50), "utf8mb4", False),
        (mysql.VARCHAR(50), "utf8mb3", True),  # the table's default
        (mysql.VARCHAR(50, charset="gbk"), "utf8mb4", True),
        (mysql.TEXT(charset="latin1"), "utf8mb4", True),
        (mysql.VARCHAR(50, charset="utf8mb4"), "utf8mb3", False),
    ],
)
def test_a_mariadb_text_column_in_a_charset_narrower_than_utf8mb4_is_refused(
    found: Any, table_charset: str, refused: bool
) -> None:
    c = connector("mysql")
    table = Reflected((column("id", mysql.BIGINT(), False), column("name", found)), ("id",))
    table = Reflected(table.columns, table.primary_key, (), table_charset)

    check = compare_target((ID, NAME), ("id",), table, c.column_type, c.engine.dialect)

    assert bool(check.problems) == refused
    if refused:
        assert check.problems[0].verdict == INCOMPATIBLE
        assert "need utf8mb4" in check.problems[0].why
