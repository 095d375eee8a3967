"""Every database dialect passes the conformance suites of ``tests/conformance/``.

A new dialect gets the whole suite with one line in ``FRESH_DATABASES`` (how to get a fresh
database of it) and one in ``DIALECTS`` (its column types, checked without a server). Oracle,
which no development machine runs, takes the server-free part only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest

from tests.conformance.database import DatabaseConnectorSuite, Dialect, DialectSQLSuite
from tests.conformance.frontend import EVERY_TYPE

FreshDatabase = Callable[[pytest.FixtureRequest, Path], str]


def server(fixture: str) -> FreshDatabase:
    """A database from one of conftest's server fixtures (they skip or fail without it)."""
    return lambda request, tmp_path: str(request.getfixturevalue(fixture))


def sqlite_file(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'fe.db'}"


FRESH_DATABASES = [
    pytest.param(server("pg_database"), id="postgresql", marks=pytest.mark.postgres),
    pytest.param(server("mariadb_database"), id="mysql", marks=pytest.mark.mariadb),
    pytest.param(sqlite_file, id="sqlite"),
]


class TestDatabaseConnector(DatabaseConnectorSuite):
    @pytest.fixture(params=FRESH_DATABASES)
    def database_url(self, request: pytest.FixtureRequest, tmp_path: Path) -> str:
        fresh: FreshDatabase = request.param
        return fresh(request, tmp_path)


ORACLE = Dialect(
    "oracle+oracledb://u:p@127.0.0.1:1521/?service_name=FREEPDB1",
    {
        "smallint": "NUMBER(5, 0)",
        "integer": "NUMBER(10, 0)",
        "bigint": "NUMBER(19, 0)",
        "decimal": "NUMBER(18, 2)",
        "double": "BINARY_DOUBLE",
        "varchar": "VARCHAR2(20 CHAR)",
        "char": "CHAR(6 CHAR)",
        "text": "CLOB",
        "date": "DATE",
        "timestamp": "TIMESTAMP",
        "timestamptz": "TIMESTAMP WITH TIME ZONE",
        "boolean": "NUMBER(1, 0)",
    },
)
POSTGRESQL = Dialect(
    "postgresql+psycopg://u:p@127.0.0.1:5432/fe",
    {
        "smallint": "SMALLINT",
        "integer": "INTEGER",
        "bigint": "BIGINT",
        "decimal": "NUMERIC(18, 2)",
        "double": "DOUBLE PRECISION",
        "varchar": "VARCHAR(20)",
        "char": "CHAR(6)",
        "text": "TEXT",
        "date": "DATE",
        "timestamp": "TIMESTAMP WITHOUT TIME ZONE",
        "timestamptz": "TIMESTAMP WITH TIME ZONE",
        "boolean": "BOOLEAN",
    },
)
MYSQL = Dialect(
    "mysql+pymysql://u:p@127.0.0.1:3306/fe",
    {
        "smallint": "SMALLINT",
        "integer": "INTEGER",
        "bigint": "BIGINT",
        "decimal": "NUMERIC(18, 2)",
        "double": "DOUBLE",
        "varchar": "VARCHAR(20)",
        "char": "CHAR(6)",
        "text": "LONGTEXT",
        "date": "DATE",
        "timestamp": "DATETIME(6)",
        "timestamptz": "DATETIME(6)",  # UTC, by convention
        "boolean": "TINYINT(1)",
    },
)
# No date, decimal or boolean storage class: ISO and exact-decimal text, integers.
SQLITE = Dialect(
    "sqlite:////nonexistent/never-opened.db",
    {
        "smallint": "INTEGER",
        "integer": "INTEGER",
        "bigint": "BIGINT",
        "decimal": "TEXT",
        "double": "FLOAT",
        "varchar": "TEXT",
        "char": "TEXT",
        "text": "TEXT",
        "date": "TEXT",
        "timestamp": "TEXT",
        "timestamptz": "TEXT",  # ISO text with the offset
        "boolean": "INTEGER",
    },
)
DIALECTS = [
    pytest.param(ORACLE, id="oracle"),
    pytest.param(POSTGRESQL, id="postgresql"),
    pytest.param(MYSQL, id="mysql"),
    pytest.param(SQLITE, id="sqlite"),
]


class TestDialectSQL(DialectSQLSuite):
    @pytest.fixture(params=DIALECTS)
    def dialect(self, request: pytest.FixtureRequest) -> Dialect:
        chosen: Dialect = request.param
        return chosen


def test_every_logical_type_travels_as_one_arrow_type_whatever_the_dialect() -> None:
    schema = EVERY_TYPE.arrow_schema()

    assert dict(zip(schema.names, schema.types, strict=True)) == {
        "id": pa.int64(),
        "f_smallint": pa.int16(),
        "f_integer": pa.int32(),
        "f_bigint": pa.int64(),
        "f_decimal": pa.decimal128(18, 2),
        "f_double": pa.float64(),
        "f_varchar": pa.string(),
        "f_char": pa.string(),
        "f_text": pa.string(),
        "f_date": pa.date32(),
        "f_timestamp": pa.timestamp("us"),
        "f_timestamptz": pa.timestamp("us", tz="UTC"),
        "f_boolean": pa.bool_(),
    }
