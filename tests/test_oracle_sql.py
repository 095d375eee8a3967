"""Dialect SQL without a server: Oracle (which no development machine runs) is pinned by the
DDL and statements its connector compiles, and PostgreSQL/MySQL by their type mapping.

Creating a connector creates an engine but never connects. Staging DDL is captured with
SQLAlchemy's ``create_mock_engine``, which turns the DDL the connector executes into strings.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.schema import CreateTable

from connectors.base import DatabaseConnector, TableSpec
from connectors.mysql import MySQLConnector
from connectors.oracle import OracleConnector
from connectors.postgresql import PostgreSQLConnector
from exchange.catalog.model import Field
from exchange.kernel.errors import BadInput

URLS: dict[str, tuple[type[DatabaseConnector], str]] = {
    "oracle": (OracleConnector, "oracle+oracledb://u:p@127.0.0.1:1521/?service_name=FREEPDB1"),
    "postgresql": (PostgreSQLConnector, "postgresql+psycopg://u:p@127.0.0.1:5432/fe"),
    "mysql": (MySQLConnector, "mysql+pymysql://u:p@127.0.0.1:3306/fe"),
}

EVERY_TYPE = TableSpec(
    name="enterprise",
    fields=(
        Field("id", "bigint", nullable=False),
        Field("f_smallint", "smallint"),
        Field("f_integer", "integer"),
        Field("f_bigint", "bigint"),
        Field("f_decimal", "decimal", precision=18, scale=2),
        Field("f_double", "double"),
        Field("f_varchar", "varchar", length=100),
        Field("f_char", "char", length=18),
        Field("f_text", "text"),
        Field("f_date", "date"),
        Field("f_timestamp", "timestamp"),
        Field("f_boolean", "boolean"),
    ),
    primary_key=("id",),
)

COMPANY = TableSpec(
    name="company",
    fields=(
        Field("id", "bigint", nullable=False),
        Field("name", "varchar", length=100, nullable=False),
        Field("updated_at", "timestamp"),
    ),
    primary_key=("id",),
)


def connector(dialect: str) -> DatabaseConnector:
    cls, url = URLS[dialect]
    return cls(f"{dialect}_fe", url)


def ddl(conn: DatabaseConnector, spec: TableSpec) -> str:
    """The CREATE TABLE the connector would run for ``spec``."""
    table = conn.sa_table(spec)
    return str(CreateTable(table).compile(dialect=conn.engine.dialect))


def column_types(create_table: str) -> dict[str, str]:
    """``{column: "TYPE [NOT NULL]"}`` from a compiled CREATE TABLE."""
    out = {}
    for line in create_table.splitlines():
        if not line.startswith("\t") or line.strip().startswith("PRIMARY KEY"):
            continue
        name, typ = line.strip().rstrip(",").split(" ", 1)
        out[name] = typ
    return out


def sql(conn: DatabaseConnector, stmt: Any) -> str:
    return str(stmt.compile(dialect=conn.engine.dialect))


def staging(conn: DatabaseConnector, spec: TableSpec) -> tuple[sa.Table, sa.Table, str]:
    """Target, the staging table ``create_staging`` makes, and the DDL it executed.

    PostgreSQL's staging table is created by ADBC's bulk ingest, not by DDL: "" for it."""
    target = conn.sa_table(spec)
    if isinstance(conn, PostgreSQLConnector):
        return target, conn.staging_table(target), ""
    executed: list[str] = []

    def capture(statement: Any, *multiparams: Any, **params: Any) -> None:
        executed.append(str(statement.compile(dialect=mock.dialect)).strip())

    mock = sa.create_mock_engine(conn.url, capture)
    stage = conn.create_staging(mock, target)  # type: ignore[arg-type]
    assert len(executed) == 1
    return target, stage, executed[0]


# -- Oracle: types ----------------------------------------------------------------------------


def test_oracle_maps_every_logical_type() -> None:
    types = column_types(ddl(connector("oracle"), EVERY_TYPE))

    assert types.pop("f_char").startswith("CHAR(18")  # its length semantics: see below
    assert types == {
        "id": "NUMBER(19, 0) NOT NULL",
        "f_smallint": "NUMBER(5, 0)",
        "f_integer": "NUMBER(10, 0)",
        "f_bigint": "NUMBER(19, 0)",
        "f_decimal": "NUMBER(18, 2)",
        "f_double": "BINARY_DOUBLE",
        "f_varchar": "VARCHAR2(100 CHAR)",
        "f_text": "CLOB",
        "f_date": "DATE",
        "f_timestamp": "TIMESTAMP",
        "f_boolean": "NUMBER(1, 0)",
    }


def test_oracle_table_has_its_primary_key() -> None:
    create = ddl(connector("oracle"), EVERY_TYPE)

    assert create.strip().startswith("CREATE TABLE enterprise (")
    assert "PRIMARY KEY (id)" in create


def test_oracle_varchar_length_counts_characters_so_chinese_text_fits() -> None:
    spec = TableSpec("t", (Field("name", "varchar", length=4),), ("name",))

    # 4 CHAR holds '张三李四' (12 bytes in AL32UTF8); a plain VARCHAR2(4) would hold 4 bytes.
    assert column_types(ddl(connector("oracle"), spec))["name"] == "VARCHAR2(4 CHAR) NOT NULL"


def test_oracle_char_length_counts_characters_too() -> None:
    spec = TableSpec("t", (Field("code", "char", length=4),), ("code",))

    assert column_types(ddl(connector("oracle"), spec))["code"] == "CHAR(4 CHAR) NOT NULL"


# -- Oracle: merge ----------------------------------------------------------------------------


def test_oracle_staging_is_a_private_temporary_table_dropped_on_commit() -> None:
    _, stage, create = staging(connector("oracle"), COMPANY)

    assert stage.name == "ora$ptt_stg_company"
    assert create.startswith("CREATE PRIVATE TEMPORARY TABLE ora$ptt_stg_company (")
    assert create.endswith("ON COMMIT DROP DEFINITION")
    assert column_types(create) == {
        "id": "NUMBER(19, 0)",  # no NOT NULL: no key is allowed on a private temp table
        "name": "VARCHAR2(100 CHAR)",
        "updated_at": "TIMESTAMP",
    }


def test_oracle_staging_has_no_constraint_that_needs_an_index() -> None:
    _, _, create = staging(connector("oracle"), COMPANY)

    assert "PRIMARY KEY" not in create
    assert "UNIQUE" not in create


def test_oracle_merge_matches_on_the_key_updates_the_rest_and_inserts_everything() -> None:
    conn = connector("oracle")
    target, stage, _ = staging(conn, COMPANY)

    assert sql(conn, conn.upsert(target, stage)) == (
        "MERGE INTO company t USING ora$ptt_stg_company s ON (t.id = s.id)"
        " WHEN MATCHED THEN UPDATE SET t.name = s.name, t.updated_at = s.updated_at"
        " WHEN NOT MATCHED THEN INSERT (id, name, updated_at)"
        " VALUES (s.id, s.name, s.updated_at)"
    )


def test_oracle_merge_on_a_composite_key_joins_every_key_column() -> None:
    spec = TableSpec(
        "licence",
        (
            Field("uscc", "char", length=18, nullable=False),
            Field("seq", "integer", nullable=False),
            Field("issued", "date"),
        ),
        ("uscc", "seq"),
    )
    conn = connector("oracle")
    target, stage, _ = staging(conn, spec)

    merge = sql(conn, conn.upsert(target, stage))

    assert " ON (t.uscc = s.uscc AND t.seq = s.seq) " in merge
    assert " WHEN MATCHED THEN UPDATE SET t.issued = s.issued WHEN NOT MATCHED " in merge


def test_oracle_merge_with_only_key_columns_has_no_update_clause() -> None:
    spec = TableSpec(
        "link",
        (Field("a", "bigint", nullable=False), Field("b", "bigint", nullable=False)),
        ("a", "b"),
    )
    conn = connector("oracle")
    target, stage, _ = staging(conn, spec)

    assert sql(conn, conn.upsert(target, stage)) == (
        "MERGE INTO link t USING ora$ptt_stg_link s ON (t.a = s.a AND t.b = s.b)"
        " WHEN NOT MATCHED THEN INSERT (a, b) VALUES (s.a, s.b)"
    )


def test_oracle_positional_insert_binds_1_to_n() -> None:
    conn = connector("oracle")
    _, stage, _ = staging(conn, EVERY_TYPE)

    insert = conn.positional_insert(stage, lambda i: f":{i + 1}")

    assert insert.startswith("INSERT INTO ora$ptt_stg_enterprise (id, f_smallint, ")
    marks = ", ".join(f":{n}" for n in range(1, 13))
    assert insert.endswith(f"f_boolean) VALUES ({marks})")


def test_oracle_snapshot_delete_removes_target_rows_not_staged() -> None:
    conn = connector("oracle")
    target, stage, _ = staging(conn, COMPANY)

    delete = " ".join(sql(conn, conn.delete_missing(target, stage)).split())

    assert delete == (
        "DELETE FROM company WHERE NOT (EXISTS (SELECT * FROM ora$ptt_stg_company"
        " WHERE ora$ptt_stg_company.id = company.id))"
    )


# -- PostgreSQL -------------------------------------------------------------------------------


def test_postgresql_maps_every_logical_type() -> None:
    assert column_types(ddl(connector("postgresql"), EVERY_TYPE)) == {
        "id": "BIGINT NOT NULL",
        "f_smallint": "SMALLINT",
        "f_integer": "INTEGER",
        "f_bigint": "BIGINT",
        "f_decimal": "NUMERIC(18, 2)",
        "f_double": "DOUBLE PRECISION",
        "f_varchar": "VARCHAR(100)",
        "f_char": "CHAR(18)",
        "f_text": "TEXT",
        "f_date": "DATE",
        "f_timestamp": "TIMESTAMP WITHOUT TIME ZONE",
        "f_boolean": "BOOLEAN",
    }


def test_postgresql_staging_is_unkeyed_and_named_after_the_target() -> None:
    _, stage, _ = staging(connector("postgresql"), COMPANY)

    assert stage.name == "stg_company"
    assert not stage.primary_key.columns


def test_postgresql_upsert_updates_non_key_columns_on_conflict() -> None:
    conn = connector("postgresql")
    target, stage, _ = staging(conn, COMPANY)

    upsert = " ".join(sql(conn, conn.upsert(target, stage)).split())

    assert upsert == (
        "INSERT INTO company (id, name, updated_at)"
        " SELECT stg_company.id, stg_company.name, stg_company.updated_at FROM stg_company"
        " ON CONFLICT (id) DO UPDATE SET name = excluded.name, updated_at = excluded.updated_at"
    )


def test_postgresql_upsert_with_only_key_columns_does_nothing_on_conflict() -> None:
    spec = TableSpec("link", (Field("a", "bigint", nullable=False),), ("a",))
    conn = connector("postgresql")
    target, stage, _ = staging(conn, spec)

    assert sql(conn, conn.upsert(target, stage)).endswith("ON CONFLICT (a) DO NOTHING")


# -- MySQL / MariaDB --------------------------------------------------------------------------


def test_mysql_maps_every_logical_type() -> None:
    assert column_types(ddl(connector("mysql"), EVERY_TYPE)) == {
        "id": "BIGINT NOT NULL",
        "f_smallint": "SMALLINT",
        "f_integer": "INTEGER",
        "f_bigint": "BIGINT",
        "f_decimal": "NUMERIC(18, 2)",
        "f_double": "DOUBLE",
        "f_varchar": "VARCHAR(100)",
        "f_char": "CHAR(18)",
        "f_text": "LONGTEXT",
        "f_date": "DATE",
        "f_timestamp": "DATETIME(6)",
        "f_boolean": "TINYINT(1)",
    }


def test_mysql_tables_are_innodb_utf8mb4_with_binary_collation() -> None:
    create = ddl(connector("mysql"), EVERY_TYPE)

    assert create.rstrip().endswith(")ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_bin")


def test_mysql_connections_are_utf8mb4_and_strict() -> None:
    conn = connector("mysql")

    assert conn.engine.url.query["charset"] == "utf8mb4"
    assert conn.engine.url.query["local_infile"] == "1"


def test_mysql_staging_is_a_utf8mb4_temporary_table() -> None:
    _, stage, create = staging(connector("mysql"), COMPANY)

    assert stage.name == "stg_company"
    assert create.startswith("CREATE TEMPORARY TABLE stg_company (")
    assert create.endswith("ENGINE=InnoDB CHARSET=utf8mb4 COLLATE utf8mb4_bin")


def test_mysql_staging_never_generates_key_values() -> None:
    _, _, create = staging(connector("mysql"), COMPANY)

    assert "AUTO_INCREMENT" not in create


def test_mysql_upsert_updates_non_key_columns_on_duplicate_key() -> None:
    conn = connector("mysql")
    target, stage, _ = staging(conn, COMPANY)

    upsert = " ".join(sql(conn, conn.upsert(target, stage)).split())

    assert upsert.endswith(
        "ON DUPLICATE KEY UPDATE name = VALUES(name), updated_at = VALUES(updated_at)"
    )


def test_mysql_upsert_with_only_key_columns_keeps_the_row() -> None:
    spec = TableSpec("link", (Field("a", "bigint", nullable=False),), ("a",))
    conn = connector("mysql")
    target, stage, _ = staging(conn, spec)

    assert sql(conn, conn.upsert(target, stage)).endswith("ON DUPLICATE KEY UPDATE a = link.a")


def test_mysql_snapshot_delete_is_a_left_join_not_a_correlated_subquery() -> None:
    conn = connector("mysql")
    target, stage, _ = staging(conn, COMPANY)

    assert sql(conn, conn.delete_missing(target, stage)) == (
        "DELETE t FROM company AS t LEFT JOIN stg_company AS s ON s.id = t.id WHERE s.id IS NULL"
    )


# -- identifiers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "spec_kwargs"),
    [
        ("table name", {"name": "x; DROP TABLE y"}),
        ("schema name", {"schema": "public; DROP TABLE y"}),
        ("field name", {"fields": (Field('id" text); DROP TABLE y; --', "bigint"),)}),
        ("field name", {"fields": (Field("legal person", "varchar", length=10),)}),
    ],
)
def test_a_name_that_is_not_a_plain_identifier_is_bad_input(
    where: str, spec_kwargs: dict[str, Any]
) -> None:
    kwargs: dict[str, Any] = {"name": "company", "fields": COMPANY.fields, "primary_key": ("id",)}

    with pytest.raises(BadInput, match=f"^{where} .* is not a valid identifier"):
        TableSpec(**{**kwargs, **spec_kwargs})


def test_a_name_with_a_trailing_newline_is_bad_input() -> None:
    with pytest.raises(BadInput):
        TableSpec("company\n", COMPANY.fields, ("id",))


QUOTED = {"oracle": '"{}"', "postgresql": '"{}"', "mysql": "`{}`"}


@pytest.mark.parametrize("word", ["order", "select"])
@pytest.mark.parametrize("dialect", ["oracle", "postgresql", "mysql"])
def test_a_reserved_word_as_a_column_name_is_quoted(dialect: str, word: str) -> None:
    spec = TableSpec(
        "t", (Field("id", "bigint", nullable=False), Field(word, "varchar", length=5)), ("id",)
    )
    conn = connector(dialect)
    target, stage, create_staging = staging(conn, spec)
    quoted = QUOTED[dialect].format(word)

    assert f"\t{quoted} " in ddl(conn, spec)
    assert f"\t{quoted} " in create_staging or dialect == "postgresql"
    upsert = sql(conn, conn.upsert(target, stage))
    assert upsert.count(quoted) >= 3  # insert list, select list, update
    assert f" {word} " not in upsert.replace(quoted, "")
    assert f"{quoted})" in conn.positional_insert(stage, lambda i: "?")


@pytest.mark.parametrize("word", ["file", "session", "rows", "online", "column", "access"])
def test_an_oracle_only_reserved_word_as_a_column_name_is_quoted(word: str) -> None:
    spec = TableSpec(
        "t", (Field("id", "bigint", nullable=False), Field(word, "varchar", length=5)), ("id",)
    )

    # Quoted in whichever case the fix chooses, as long as it is quoted.
    assert f'\t"{word}" ' in ddl(connector("oracle"), spec).lower()
