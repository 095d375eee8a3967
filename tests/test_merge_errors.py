"""A bulk load the target rejects fails naming node, table and, where the database says which
row, its key; never the password."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pymysql
import pytest
import sqlalchemy as sa

from connectors.base import TableSpec
from connectors.columns import ColumnSpec
from connectors.mysql import MySQLConnector
from exchange.kernel.errors import DataError
from tests.conformance.frontend import COMPANY, FIRST, LICENCE, LICENCES, FrontEndDatabase

SECRET = "S3cret-Pw-7781"
NAMELESS = [{**FIRST[0], "name": None}]  # name is NOT NULL


def mariadb_rejection(message: str) -> sa.exc.DBAPIError:
    """How a rejected LOAD DATA reaches ``explain_load_error``."""
    return sa.exc.OperationalError(
        "LOAD DATA LOCAL INFILE ...", None, pymysql.err.DataError(1406, message)
    )


def test_mariadb_names_the_key_of_the_row_it_rejected_and_never_the_password() -> None:
    connector = MySQLConnector("maria_fe", f"mysql+pymysql://u:{SECRET}@127.0.0.1:3306/fe")
    batch = pa.RecordBatch.from_pylist(LICENCES, schema=LICENCE.arrow_schema())

    error = connector.explain_load_error(
        mariadb_rejection(f"Data too long for column 'note' at row 2 (user u, {SECRET})"),
        LICENCE,
        batch,
    )

    assert isinstance(error, DataError)
    assert str(error) == (
        "node 'maria_fe' table licence row key uscc=91110105MA0000001A,seq=2: "
        "(1406, \"Data too long for column 'note' at row 2 (user u, ***)\")"
    )


def test_a_rejection_that_names_no_row_names_node_and_schema_qualified_table() -> None:
    connector = MySQLConnector("maria_fe", "mysql+pymysql://u@127.0.0.1:3306/fe")
    spec = TableSpec("company", (ColumnSpec("id", "bigint", nullable=False),), ("id",), "fe")
    batch = pa.record_batch({"id": pa.array([1], pa.int64())})

    error = connector.explain_load_error(mariadb_rejection("Lost connection"), spec, batch)

    assert str(error) == "node 'maria_fe' table fe.company: (1406, 'Lost connection')"


@pytest.mark.postgres
@pytest.mark.parametrize("first", [True, False], ids=["into the target", "through staging"])
def test_a_postgresql_load_the_target_rejects_names_node_and_table(
    pg_database: str, first: bool
) -> None:
    database = FrontEndDatabase(pg_database)
    if not first:
        database.deliver(COMPANY, FIRST[1:], run_id="run-1")

    with pytest.raises(DataError, match=r"^node 'conformance_fe' table company: "):
        database.deliver(COMPANY, NAMELESS, run_id="run-2")

    assert database.rows(COMPANY) == ([] if first else FIRST[1:])


def test_a_sqlite_load_the_target_rejects_names_node_and_table(tmp_path: Path) -> None:
    # The driver's own error (sqlite3, PyMySQL, oracledb under LOAD DATA / executemany) is
    # explained like SQLAlchemy's, so the delivery fails alone instead of crashing the run.
    database = FrontEndDatabase(f"sqlite:///{tmp_path / 'fe.db'}")

    with pytest.raises(DataError, match=r"^node 'conformance_fe' table company: NOT NULL"):
        database.deliver(COMPANY, NAMELESS, run_id="run-1")

    assert database.rows(COMPANY) == []
