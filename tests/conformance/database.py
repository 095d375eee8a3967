"""What every ``DatabaseConnector`` must do: the conformance suites.

``DatabaseConnectorSuite`` runs against a live database. A test class inheriting it provides
a ``database_url`` fixture, the URL of a fresh, empty database of its dialect; each test
then gets a ``FrontEndDatabase`` on it and goes through the connector only (read back with
``read_batches``, as the next exchange out of that database would).

``DialectSQLSuite`` needs no server (Oracle runs nowhere here): a class inheriting it
provides a ``dialect`` fixture, a ``Dialect``, and the suite checks the DDL and statements the
connector compiles and, through a recording ``MergeTransaction``, the exactly-once protocol
``merge`` runs over them.
"""

from __future__ import annotations

import datetime as dt
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa
from sqlalchemy.schema import CreateTable

from connectors.base import (
    MARKER_KEY,
    MARKER_TABLE,
    DatabaseConnector,
    DeliveryMarker,
    MergeTransaction,
    SinceFilter,
    StagedMerge,
    TableSpec,
)
from connectors.columns import ColumnSpec
from connectors.postgresql import PostgreSQLConnector
from connectors.schema_check import NARROWER, TableCheck
from exchange.kernel.kinds import LOGICAL_TYPES
from tests.conformance.frontend import (
    CHANGES,
    COMPANY,
    EVENTS,
    EVERY_TYPE,
    EVERY_TYPE_ROWS,
    FIRST,
    INSTALLATION,
    LICENCE,
    LICENCES,
    LICENCES_LATER,
    NODE,
    OTHER_INSTALLATION,
    SNAPSHOT,
    SUBSCRIPTION,
    T0,
    FrontEndDatabase,
    Row,
    batches,
    company,
    empty_batch,
)

KILLED = -signal.SIGKILL


def by_key(rows: Iterable[Row], key: tuple[str, ...] = ("id",)) -> list[Row]:
    return sorted(rows, key=lambda r: tuple(r[k] for k in key))


def merged(*deliveries: list[Row], key: tuple[str, ...] = ("id",)) -> list[Row]:
    """What upserting ``deliveries`` one after the other leaves (later rows win)."""
    out: dict[tuple[Any, ...], Row] = {}
    for rows in deliveries:
        out.update({tuple(r[k] for k in key): r for r in rows})
    return by_key(out.values(), key)


def without(spec: TableSpec, name: str) -> TableSpec:
    return TableSpec(spec.name, tuple(f for f in spec.fields if f.name != name), spec.primary_key)


def replacing(spec: TableSpec, *columns: ColumnSpec) -> TableSpec:
    """``spec`` with the fields of the same name as ``columns`` replaced by them."""
    by_name = {c.name: c for c in columns}
    fields = tuple(by_name.get(f.name, f) for f in spec.fields)
    return TableSpec(spec.name, fields, spec.primary_key, spec.schema)


def old_marker_table(database: FrontEndDatabase, *markers: tuple[int, str, int]) -> None:
    """The marker table as an earlier version made it (keyed by subscription alone), holding
    ``(subscription id, run id, rows)`` markers."""
    md = sa.MetaData()
    old = sa.Table(
        MARKER_TABLE,
        md,
        sa.Column("subscription_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("target_table", sa.String(128), nullable=False),
        sa.Column("watermark", sa.String(1000)),
        sa.Column("rows_merged", sa.BigInteger, nullable=False),
        sa.Column("delivered_at", sa.DateTime, nullable=False),
    )
    connector = database.open()
    try:
        with connector.connect(begin=True) as conn:
            md.create_all(conn)
            for sid, run_id, rows in markers:
                conn.execute(
                    sa.insert(old).values(
                        subscription_id=sid, run_id=run_id, target_table="company",
                        watermark=None, rows_merged=rows, delivered_at=dt.datetime(2026, 11, 1),
                    )
                )  # fmt: skip
    finally:
        connector.close()


def drop_marker_table(database: FrontEndDatabase) -> None:
    connector = database.open()
    try:
        with connector.connect(begin=True) as conn:
            sa.Table(MARKER_TABLE, sa.MetaData()).drop(conn, checkfirst=True)
    finally:
        connector.close()


def upgrade_together(connector: DatabaseConnector, start: threading.Barrier) -> bool:
    start.wait()
    return connector.upgrade_marker_table()


def marker_key(database: FrontEndDatabase) -> list[str]:
    connector = database.open()
    try:
        with connector.connect() as conn:
            pk = sa.inspect(conn).get_pk_constraint(MARKER_TABLE)
    finally:
        connector.close()
    return [c.lower() for c in pk["constrained_columns"]]


def check_target(database: FrontEndDatabase, spec: TableSpec) -> TableCheck:
    connector = database.open()
    try:
        return connector.check_target(spec)
    finally:
        connector.close()


#: COMPANY with every column wider than declared (and an integer and a date to widen too).
MEASURED = TableSpec(
    "measured",
    (
        ColumnSpec("id", "bigint", nullable=False),
        ColumnSpec("n", "smallint"),
        ColumnSpec("m", "integer"),
        ColumnSpec("amount", "decimal", precision=12, scale=2),
        ColumnSpec("label", "varchar", length=10),
        ColumnSpec("day", "date"),
    ),
    ("id",),
)
MEASURED_WIDE = replacing(
    MEASURED,
    ColumnSpec("n", "integer"),
    ColumnSpec("m", "bigint"),
    ColumnSpec("amount", "decimal", precision=20, scale=4),
    ColumnSpec("label", "text"),
    ColumnSpec("day", "timestamp"),
)
MEASURED_ROWS = [
    {"id": 1, "n": 7, "m": 2147483647, "amount": Decimal("1234567890.12"), "label": "北京",
     "day": dt.date(2026, 12, 1)},
    {"id": 2, "n": -1, "m": -5, "amount": Decimal("-0.01"), "label": "x", "day": None},
]  # fmt: skip


class DatabaseConnectorSuite:
    """The behaviour of a connector on a live database of its dialect."""

    @pytest.fixture
    def database(self, database_url: str) -> FrontEndDatabase:
        return FrontEndDatabase(database_url)

    # -- creating tables ------------------------------------------------------------------

    def test_ensure_table_creates_the_target_in_catalog_order_and_the_marker_table(
        self, database: FrontEndDatabase
    ) -> None:
        database.ensure(COMPANY)
        database.ensure(COMPANY)  # a second time changes nothing

        assert database.tables() == {"company", MARKER_TABLE}
        assert database.columns(COMPANY) == COMPANY.column_names
        assert database.rows(COMPANY) == []

    def test_ensure_table_adds_a_catalog_column_the_target_lacks_and_keeps_its_rows(
        self, database: FrontEndDatabase
    ) -> None:
        database.deliver(without(COMPANY, "capital"), FIRST, run_id="run-1")

        database.ensure(COMPANY)

        assert database.columns(COMPANY) == ["id", "name", "updated_at", "capital"]
        assert database.rows(COMPANY) == [{**r, "capital": None} for r in FIRST]

    # -- checking an existing target ---------------------------------------------------------

    def test_check_target_finds_no_table_before_the_first_delivery_and_none_to_refuse_after(
        self, database: FrontEndDatabase
    ) -> None:
        assert check_target(database, COMPANY) == TableCheck(exists=False)

        database.deliver(COMPANY, FIRST, run_id="run-1")

        assert check_target(database, COMPANY) == TableCheck(exists=True)

    def test_check_target_refuses_an_integer_column_for_a_decimal_and_loads_nothing(
        self, database: FrontEndDatabase
    ) -> None:
        database.ensure(replacing(COMPANY, ColumnSpec("capital", "integer")))

        check = check_target(database, COMPANY)

        assert [(p.column, p.declared, p.verdict) for p in check.problems] == [
            ("capital", "decimal(18,2)", NARROWER)
        ]
        assert database.rows(COMPANY) == []

    def test_check_target_lists_a_missing_column_that_ensure_table_then_adds_and_returns(
        self, database: FrontEndDatabase
    ) -> None:
        database.deliver(without(COMPANY, "capital"), FIRST, run_id="run-1")

        assert check_target(database, COMPANY).missing == ("capital",)
        connector = database.open()
        try:
            assert connector.ensure_table(COMPANY) == ["capital"]
            assert connector.ensure_table(COMPANY) == []
        finally:
            connector.close()

    def test_a_wider_existing_target_is_accepted_and_loaded_first_and_then_upserted(
        self, database: FrontEndDatabase
    ) -> None:
        database.ensure(MEASURED_WIDE)

        assert check_target(database, MEASURED) == TableCheck(exists=True)
        database.deliver(MEASURED, MEASURED_ROWS[:1], run_id="run-1")  # into the empty target
        database.deliver(MEASURED, MEASURED_ROWS, run_id="run-2")  # through staging

        read = database.rows(MEASURED_WIDE)
        assert [(r["n"], r["m"], r["amount"], r["label"]) for r in read] == [
            (r["n"], r["m"], r["amount"], r["label"]) for r in MEASURED_ROWS
        ]
        day = read[0]["day"]
        assert (day.year, day.month, day.day, day.hour) == (2026, 12, 1, 0)

    # -- reading --------------------------------------------------------------------------

    def test_every_logical_type_reads_back_as_its_declared_arrow_type_with_nulls_and_chinese(
        self, database: FrontEndDatabase
    ) -> None:
        database.deliver(EVERY_TYPE, EVERY_TYPE_ROWS, run_id="run-1")

        read = database.read(EVERY_TYPE)

        assert {b.schema for b in read} == {EVERY_TYPE.arrow_schema()}
        assert database.rows(EVERY_TYPE) == EVERY_TYPE_ROWS
        assert {f.type for f in EVERY_TYPE.fields} == set(LOGICAL_TYPES)

    def test_read_batches_never_exceed_the_batch_size(self, database: FrontEndDatabase) -> None:
        rows = [company(i) for i in range(1, 11)]
        database.deliver(COMPANY, rows, run_id="run-1")

        read = database.read(COMPANY, batch_size=3)

        assert all(0 < b.num_rows <= 3 for b in read)
        assert sum(b.num_rows for b in read) == 10

    def test_since_filter_includes_the_rows_on_the_boundary_and_after_it(
        self, database: FrontEndDatabase
    ) -> None:
        day = dt.date(2026, 11, 20)
        rows = [
            {"id": i, "updated_at": T0 + dt.timedelta(seconds=s), "day": day + dt.timedelta(s),
             "version": 100 + s}
            for i, s in ((1, -1), (2, 0), (3, 0), (4, 1))
        ]  # fmt: skip
        database.deliver(EVENTS, rows, run_id="run-1")

        for cursor, boundary in (("updated_at", T0), ("day", day), ("version", 100)):
            since = SinceFilter(cursor, boundary)
            assert [r["id"] for r in database.rows(EVENTS, since)] == [2, 3, 4], cursor

    # -- merging --------------------------------------------------------------------------

    def test_a_delivery_into_an_empty_target_bulk_loads_every_row_and_reports_each_batch(
        self, database: FrontEndDatabase
    ) -> None:
        heard: list[int] = []
        rows = [company(i) for i in range(1, 8)]

        loaded = database.deliver(COMPANY, rows, run_id="run-1", on_rows=heard.append)

        assert loaded == 7
        assert heard == [2, 2, 2, 1]  # one call per batch loaded
        assert database.rows(COMPANY) == rows

    def test_a_delivery_into_a_non_empty_target_upserts_by_primary_key(
        self, database: FrontEndDatabase
    ) -> None:
        database.deliver(COMPANY, FIRST, run_id="run-1")

        loaded = database.deliver(COMPANY, CHANGES, run_id="run-2")

        assert loaded == len(CHANGES)
        assert database.rows(COMPANY) == merged(FIRST, CHANGES)  # 1, 3-5 untouched

    def test_a_snapshot_delivery_deletes_the_target_rows_whose_key_it_lacks(
        self, database: FrontEndDatabase
    ) -> None:
        database.deliver(COMPANY, FIRST, run_id="run-1")

        database.deliver(COMPANY, SNAPSHOT, run_id="run-2", delete_missing=True)

        assert database.rows(COMPANY) == by_key(SNAPSHOT)
        lacked = {r["id"] for r in FIRST} - {r["id"] for r in SNAPSHOT}
        assert database.last_deleted == len(lacked) > 0  # counted, for the delivery's notes

    def test_a_snapshot_delivery_keeps_the_rows_the_source_still_has_but_quarantined(
        self, database: FrontEndDatabase
    ) -> None:
        # 3 and 4 are in the source but quarantined this run (4 twice, a duplicated key; one
        # key part NULL matches nothing): they keep their last good version, 1 is deleted.
        database.deliver(COMPANY, FIRST, run_id="run-1")
        quarantined = pa.table(
            {"id": pa.array([3, 4, 4, None], pa.int64()), "name": ["x", "y", "z", "w"]}
        )

        database.deliver(COMPANY, SNAPSHOT, run_id="run-2", delete_missing=True, keep=quarantined)

        kept = [r for r in FIRST if r["id"] in (3, 4)]
        assert database.rows(COMPANY) == by_key(merged(kept, SNAPSHOT))
        assert database.last_deleted == 1
        assert database.tables() == {"company", MARKER_TABLE}

    def test_a_composite_primary_key_upserts_and_deletes_by_every_key_column(
        self, database: FrontEndDatabase
    ) -> None:
        database.deliver(LICENCE, LICENCES, run_id="run-1")

        database.deliver(LICENCE, LICENCES_LATER, run_id="run-2", delete_missing=True)

        assert database.rows(LICENCE) == by_key(LICENCES_LATER, LICENCE.primary_key)

    def test_a_staged_merge_leaves_no_table_but_the_target_and_the_marker(
        self, database: FrontEndDatabase
    ) -> None:
        database.deliver(COMPANY, FIRST, run_id="run-1")
        database.deliver(COMPANY, SNAPSHOT, run_id="run-2", delete_missing=True)

        assert database.tables() == {"company", MARKER_TABLE}

    def test_an_empty_delivery_changes_no_row_and_still_writes_its_marker(
        self, database: FrontEndDatabase
    ) -> None:
        database.deliver(COMPANY, FIRST, run_id="run-1")

        loaded = database.deliver(COMPANY, [empty_batch(COMPANY)], run_id="run-2")

        assert loaded == 0
        assert database.rows(COMPANY) == FIRST
        assert database.marker(COMPANY) == DeliveryMarker(SUBSCRIPTION, "run-2", None, 0)

    def test_an_empty_first_delivery_creates_the_table_and_writes_only_its_marker(
        self, database: FrontEndDatabase
    ) -> None:
        assert database.deliver(COMPANY, [], run_id="run-1") == 0

        assert database.rows(COMPANY) == []
        assert database.marker(COMPANY) == DeliveryMarker(SUBSCRIPTION, "run-1", None, 0)

    def test_an_empty_snapshot_delivery_empties_the_target(
        self, database: FrontEndDatabase
    ) -> None:
        database.deliver(COMPANY, FIRST, run_id="run-1")

        database.deliver(COMPANY, [empty_batch(COMPANY)], run_id="run-2", delete_missing=True)

        assert database.rows(COMPANY) == []

    # -- the delivery marker ----------------------------------------------------------------

    def test_there_is_no_marker_before_the_first_delivery(self, database: FrontEndDatabase) -> None:
        assert database.marker(COMPANY) is None  # not even a marker table yet
        database.ensure(COMPANY)
        assert database.marker(COMPANY) is None

    def test_a_delivery_writes_the_marker_that_read_marker_returns(
        self, database: FrontEndDatabase
    ) -> None:
        database.deliver(COMPANY, FIRST, run_id="run-1", watermark="2026-11-20T10:35:00")

        assert database.marker(COMPANY) == DeliveryMarker(
            SUBSCRIPTION, "run-1", "2026-11-20T10:35:00", len(FIRST)
        )

    def test_each_delivery_replaces_its_own_subscriptions_marker_only(
        self, database: FrontEndDatabase
    ) -> None:
        database.deliver(COMPANY, FIRST, run_id="run-1", subscription_id=8)
        database.deliver(COMPANY, FIRST, run_id="run-1")

        database.deliver(COMPANY, CHANGES, run_id="run-2", watermark="w2")

        assert database.marker(COMPANY) == DeliveryMarker(SUBSCRIPTION, "run-2", "w2", 2)
        assert database.marker(COMPANY, 8) == DeliveryMarker(8, "run-1", None, len(FIRST))

    # -- two installations (two metadata stores) delivering into one database --------------

    def test_two_installations_with_the_same_subscription_id_keep_their_own_markers(
        self, database: FrontEndDatabase
    ) -> None:
        other = database.as_installation(OTHER_INSTALLATION)
        database.deliver(COMPANY, FIRST, run_id="a-1", watermark="wa")
        other.deliver(LICENCE, LICENCES, run_id="b-1", watermark="wb")  # another table
        other.deliver(COMPANY, CHANGES, run_id="b-2", watermark="wb2")  # the same table

        assert database.marker(COMPANY) == DeliveryMarker(SUBSCRIPTION, "a-1", "wa", len(FIRST))
        assert other.marker(COMPANY) == DeliveryMarker(SUBSCRIPTION, "b-2", "wb2", len(CHANGES))
        assert database.rows(COMPANY) == merged(FIRST, CHANGES)  # nothing lost, nothing twice
        assert database.rows(LICENCE) == by_key(LICENCES, LICENCE.primary_key)

        database.deliver(COMPANY, [], run_id="a-2", watermark="wa2")

        assert database.marker(COMPANY) == DeliveryMarker(SUBSCRIPTION, "a-2", "wa2", 0)
        assert other.marker(COMPANY) == DeliveryMarker(SUBSCRIPTION, "b-2", "wb2", len(CHANGES))
        assert marker_key(database) == list(MARKER_KEY)

    def test_an_earlier_versions_marker_table_is_rekeyed_in_place_keeping_its_markers(
        self, database: FrontEndDatabase
    ) -> None:
        database.deliver(COMPANY, FIRST, run_id="run-0")
        drop_marker_table(database)
        old_marker_table(database, (SUBSCRIPTION, "run-1", 5), (8, "run-1", 5))

        assert database.marker(COMPANY) == DeliveryMarker(SUBSCRIPTION, "run-1", None, 5)
        database.ensure(COMPANY)  # the upgrade: the old rows become this installation's

        assert marker_key(database) == list(MARKER_KEY)
        assert database.marker(COMPANY) == DeliveryMarker(SUBSCRIPTION, "run-1", None, 5)
        assert database.marker(COMPANY, 8) == DeliveryMarker(8, "run-1", None, 5)
        other = database.as_installation(OTHER_INSTALLATION)
        assert other.marker(COMPANY) is None
        other.deliver(COMPANY, CHANGES, run_id="b-1")
        database.deliver(COMPANY, CHANGES, run_id="run-2")
        assert database.marker(COMPANY) == DeliveryMarker(SUBSCRIPTION, "run-2", None, 2)
        assert other.marker(COMPANY) == DeliveryMarker(SUBSCRIPTION, "b-1", None, 2)
        assert database.marker(COMPANY, 8) == DeliveryMarker(8, "run-1", None, 5)

    def test_an_upgrade_stopped_half_way_is_finished_by_the_next_delivery(
        self, database: FrontEndDatabase
    ) -> None:
        # The column is there, its values not all (MariaDB commits each DDL statement).
        old_marker_table(database, (SUBSCRIPTION, "run-1", 5))
        connector = database.open()
        try:
            with connector.connect(begin=True) as conn:
                conn.execute(sa.text(f"ALTER TABLE {MARKER_TABLE} ADD installation_id VARCHAR(64)"))
        finally:
            connector.close()

        # Until then its rows, without an installation id yet, are still this installation's:
        # the last delivery is not missed (and merged again).
        assert database.marker(COMPANY) == DeliveryMarker(SUBSCRIPTION, "run-1", None, 5)

        database.deliver(COMPANY, FIRST, run_id="run-2")

        assert marker_key(database) == list(MARKER_KEY)
        assert database.marker(COMPANY) == DeliveryMarker(SUBSCRIPTION, "run-2", None, 5)

    def test_two_deliveries_upgrading_one_marker_table_at_once_both_succeed(
        self, database: FrontEndDatabase
    ) -> None:
        # Parallel load tasks into one database each find the old table and upgrade it; the
        # second waits for the first and then finds nothing left to do.
        for attempt in range(3):
            drop_marker_table(database)
            old_marker_table(database, (SUBSCRIPTION, f"run-{attempt}", 5), (8, "run-0", 5))
            connectors = [database.open(), database.open()]
            start = threading.Barrier(2)
            try:
                with ThreadPoolExecutor(2) as pool:
                    changed = list(pool.map(upgrade_together, connectors, [start] * 2))
            finally:
                for connector in connectors:
                    connector.close()

            assert sorted(changed) == [False, True], attempt  # one did it, neither failed
            assert marker_key(database) == list(MARKER_KEY)
            assert database.marker(COMPANY) == DeliveryMarker(
                SUBSCRIPTION, f"run-{attempt}", None, 5
            )
            assert database.marker(COMPANY, 8) == DeliveryMarker(8, "run-0", None, 5)

    def test_a_connector_without_an_installation_id_is_a_programming_error(
        self, database: FrontEndDatabase
    ) -> None:
        old_marker_table(database, (SUBSCRIPTION, "run-1", 5))

        with pytest.raises(RuntimeError, match="without an installation id"):
            database.as_installation(None).ensure(COMPANY)
        with pytest.raises(RuntimeError, match="without an installation id"):
            database.as_installation(None).marker(COMPANY)

    # -- crashes ----------------------------------------------------------------------------

    @pytest.mark.parametrize("point", ["merge:staged", "merge:upserted", "merge:before-commit"])
    def test_a_merge_killed_at_a_crash_point_leaves_target_and_marker_as_they_were(
        self, database: FrontEndDatabase, point: str
    ) -> None:
        database.deliver(COMPANY, FIRST, run_id="run-1")

        status = database.deliver_killed_at(
            point, "COMPANY", "SNAPSHOT", run_id="run-2", delete_missing=True
        )

        assert status == KILLED
        assert database.rows(COMPANY) == FIRST
        assert database.marker(COMPANY) == DeliveryMarker(SUBSCRIPTION, "run-1", None, 5)
        # Nothing the dead session held stands in the way of delivering again.
        database.deliver(COMPANY, SNAPSHOT, run_id="run-2", delete_missing=True)
        assert database.rows(COMPANY) == by_key(SNAPSHOT)
        assert database.marker(COMPANY) == DeliveryMarker(SUBSCRIPTION, "run-2", None, 5)

    @pytest.mark.parametrize("point", ["merge:staged", "merge:before-commit"])
    def test_a_first_delivery_killed_before_its_commit_leaves_the_target_empty(
        self, database: FrontEndDatabase, point: str
    ) -> None:
        database.ensure(COMPANY)

        status = database.deliver_killed_at(
            point, "COMPANY", "FIRST", run_id="run-1", delete_missing=False
        )

        assert status == KILLED
        assert database.rows(COMPANY) == []
        assert database.marker(COMPANY) is None

    def test_a_first_delivery_has_no_upsert_step_to_crash_in(
        self, database: FrontEndDatabase
    ) -> None:
        database.ensure(COMPANY)

        status = database.deliver_killed_at(
            "merge:upserted", "COMPANY", "FIRST", run_id="run-1", delete_missing=False
        )

        assert status == 0  # loaded straight into the empty target, then committed
        assert database.rows(COMPANY) == FIRST
        assert database.marker(COMPANY) == DeliveryMarker(SUBSCRIPTION, "run-1", None, 5)


# ---------------------------------------------------------------------------------------------
# Without a server


@dataclass(frozen=True)
class Dialect:
    """A dialect as the server-free suite sees it: a URL its connector is built from (never
    connected to) and the column type it compiles for each logical type."""

    url: str
    types: dict[str, str]

    def connector(self) -> DatabaseConnector:
        return FrontEndDatabase(self.url).open()  # builds an engine; never connects


def column_types(create_table: str) -> dict[str, str]:
    """``{column: "TYPE [NOT NULL]"}`` from a compiled CREATE TABLE (names unquoted)."""
    out = {}
    for line in create_table.splitlines():
        if not line.startswith("\t") or line.strip().startswith(("PRIMARY KEY", "UNIQUE")):
            continue
        name, typ = line.strip().rstrip(",").split(" ", 1)
        out[name.strip('"`')] = typ
    return out


def compiled(connector: DatabaseConnector, statement: Any) -> str:
    return " ".join(str(statement.compile(dialect=connector.engine.dialect)).split())


def create_table(connector: DatabaseConnector, spec: TableSpec) -> str:
    return str(CreateTable(connector.sa_table(spec)).compile(dialect=connector.engine.dialect))


def staging_of(connector: DatabaseConnector, target: sa.Table) -> tuple[sa.Table, str | None]:
    """The staging table a merge into ``target`` uses, and the DDL that creates it: captured
    from ``create_staging`` on a mock connection for the SQLAlchemy write path; None for
    PostgreSQL, whose staging table ADBC's ingest creates (temporary) from the Arrow schema."""
    if isinstance(connector, PostgreSQLConnector):
        return connector.staging_table(target), None
    assert isinstance(connector, StagedMerge), "a new write path: say how it stages here"
    executed: list[str] = []

    def capture(statement: Any, *multiparams: Any, **params: Any) -> None:
        executed.append(str(statement.compile(dialect=mock.dialect)).strip())

    mock = sa.create_mock_engine(connector.url, capture)
    staging = connector.create_staging(mock, target)  # type: ignore[arg-type]
    assert len(executed) == 1, executed
    return staging, executed[0]


@dataclass
class RecordingTransaction(MergeTransaction):
    """A ``MergeTransaction`` that runs nothing and records each step ``merge`` takes."""

    connector: DatabaseConnector
    empty: bool
    fail_load: bool = False
    steps: list[str] = field(default_factory=list)
    statements: list[Any] = field(default_factory=list)
    target: sa.Table | None = None
    staging: sa.Table | None = None

    def is_empty(self, table: sa.Table) -> bool:
        self.target = table
        self.steps.append(f"probe {table.name}")
        return self.empty

    def create_staging(self, target: sa.Table) -> sa.Table:
        self.staging, _ = staging_of(self.connector, target)
        self.steps.append("create staging")
        return self.staging

    def load(
        self,
        into: sa.Table,
        batches: Iterable[pa.RecordBatch],
        on_rows: Callable[[int], None] | None,
    ) -> int:
        sizes = [b.num_rows for b in batches]
        if self.fail_load:
            raise RuntimeError("the load failed")
        where = "staging" if into is self.staging else into.name
        self.steps.append(f"load {sizes} into {where}")
        return sum(sizes)

    def execute(self, statement: sa.Executable) -> int:
        self.statements.append(statement)
        self.steps.append(self._name(statement))
        return -1  # as a driver that cannot count

    def commit(self) -> None:
        self.steps.append("commit")

    def _name(self, statement: Any) -> str:
        table = getattr(statement, "table", None)
        if getattr(table, "name", None) == MARKER_TABLE:
            return "delete marker" if isinstance(statement, sa.Delete) else "insert marker"
        assert self.target is not None and self.staging is not None
        sql = compiled(self.connector, statement)
        if sql == compiled(self.connector, self.connector.upsert(self.target, self.staging)):
            return "upsert"
        if sql == compiled(
            self.connector, self.connector.delete_missing(self.target, self.staging)
        ):
            return "delete missing"
        return sql


class DialectSQLSuite:
    """What a dialect's connector compiles, and the protocol its ``merge`` runs: no server."""

    @pytest.fixture
    def connector(self, dialect: Dialect) -> Iterator[DatabaseConnector]:
        connector = dialect.connector()
        yield connector
        connector.close()

    # -- types and DDL ----------------------------------------------------------------------

    def test_every_logical_type_compiles_to_the_dialects_column_type(
        self, dialect: Dialect, connector: DatabaseConnector
    ) -> None:
        types = column_types(create_table(connector, EVERY_TYPE))

        assert types.pop("id").endswith("NOT NULL")
        assert set(dialect.types) == set(LOGICAL_TYPES)
        assert types == {f"f_{t}": dialect.types[t] for t in dialect.types}

    def test_create_table_declares_a_composite_primary_key_whose_columns_are_not_null(
        self, connector: DatabaseConnector
    ) -> None:
        create = create_table(connector, LICENCE)
        types = column_types(create)

        assert "PRIMARY KEY (uscc, seq)" in create
        assert types["uscc"].endswith("NOT NULL") and types["seq"].endswith("NOT NULL")
        assert not types["issued"].endswith("NOT NULL")

    def test_the_staging_table_has_the_targets_columns_and_types_and_is_session_private(
        self, connector: DatabaseConnector
    ) -> None:
        target = connector.sa_table(COMPANY)

        staging, ddl = staging_of(connector, target)

        assert staging.name != target.name
        assert [c.name for c in staging.columns] == COMPANY.column_names
        dialect = connector.engine.dialect
        assert [c.type.compile(dialect) for c in staging.columns] == [
            c.type.compile(dialect) for c in target.columns
        ]
        assert ddl is None or ddl.startswith(("CREATE TEMPORARY ", "CREATE PRIVATE TEMPORARY "))

    def test_upsert_and_snapshot_delete_name_every_column_and_bind_no_values(
        self, connector: DatabaseConnector
    ) -> None:
        target = connector.sa_table(LICENCE)
        staging, _ = staging_of(connector, target)
        dialect = connector.engine.dialect
        quote = dialect.identifier_preparer.quote

        for statement, columns in (
            (connector.upsert(target, staging), LICENCE.column_names),
            (connector.delete_missing(target, staging), list(LICENCE.primary_key)),
        ):
            sql = statement.compile(dialect=dialect)
            assert sql.params == {}, sql  # identifiers only: values never reach the SQL
            assert quote(staging.name) in str(sql) and quote(target.name) in str(sql)
            assert all(quote(c) in str(sql) for c in columns), str(sql)

    def test_a_reserved_word_as_a_column_name_is_quoted_in_ddl_staging_and_upsert(
        self, connector: DatabaseConnector
    ) -> None:
        spec = TableSpec(
            "t",
            (ColumnSpec("id", "bigint", nullable=False), ColumnSpec("order", "varchar", length=5)),
            ("id",),
        )
        target = connector.sa_table(spec)
        staging, ddl = staging_of(connector, target)
        quoted = connector.engine.dialect.identifier_preparer.quote("order")

        assert quoted != "order"
        assert f"\t{quoted} " in create_table(connector, spec)
        assert ddl is None or f"\t{quoted} " in ddl
        upsert = compiled(connector, connector.upsert(target, staging))
        assert " order " not in upsert.replace(quoted, "")

    # -- the merge protocol -----------------------------------------------------------------

    @pytest.fixture
    def record(
        self, connector: DatabaseConnector, monkeypatch: pytest.MonkeyPatch
    ) -> Callable[..., RecordingTransaction]:
        """``record(empty=..)`` -> the transaction ``merge`` will run over, crash points
        recorded among its steps."""

        def make(empty: bool, fail_load: bool = False) -> RecordingTransaction:
            tx = RecordingTransaction(connector, empty, fail_load)

            @contextmanager
            def transaction(spec: TableSpec) -> Iterator[MergeTransaction]:
                yield tx

            def crashpoint(name: str, where: str | None = None) -> None:
                assert where == NODE
                tx.steps.append(f"crash point {name}")

            monkeypatch.setattr(connector, "merge_transaction", transaction)
            monkeypatch.setattr("connectors.base.crashpoint", crashpoint)
            return tx

        return make

    def merge(
        self, connector: DatabaseConnector, *, delete_missing: bool, rows: list[Row] = FIRST
    ) -> int:
        data = [*batches(COMPANY, rows), empty_batch(COMPANY)]
        marker = DeliveryMarker(SUBSCRIPTION, "run-2", "2026-11-20T10:35:00", 0)
        return connector.merge(COMPANY, data, delete_missing=delete_missing, marker=marker)

    def test_merge_into_a_non_empty_target_stages_upserts_deletes_and_marks_then_commits(
        self, connector: DatabaseConnector, record: Callable[..., RecordingTransaction]
    ) -> None:
        tx = record(empty=False)

        assert self.merge(connector, delete_missing=True) == 5

        assert tx.steps == [
            "probe company",
            "create staging",
            "load [2, 2, 1] into staging",  # the empty batch is never loaded
            "crash point merge:staged",
            "upsert",
            "crash point merge:upserted",
            "delete missing",
            "delete marker",
            "insert marker",
            "crash point merge:before-commit",
            "commit",
        ]

    def test_an_incremental_merge_deletes_nothing(
        self, connector: DatabaseConnector, record: Callable[..., RecordingTransaction]
    ) -> None:
        tx = record(empty=False)

        self.merge(connector, delete_missing=False)

        assert "upsert" in tx.steps and "delete missing" not in tx.steps

    def test_merge_into_an_empty_target_loads_it_directly_without_staging(
        self, connector: DatabaseConnector, record: Callable[..., RecordingTransaction]
    ) -> None:
        tx = record(empty=True)

        self.merge(connector, delete_missing=True)

        assert tx.steps == [
            "probe company",
            "load [2, 2, 1] into company",
            "crash point merge:staged",
            "delete marker",
            "insert marker",
            "crash point merge:before-commit",
            "commit",
        ]

    def test_the_marker_replaces_this_installations_subscription_row_with_the_run_and_rows(
        self, connector: DatabaseConnector, record: Callable[..., RecordingTransaction]
    ) -> None:
        tx = record(empty=False)

        self.merge(connector, delete_missing=False, rows=CHANGES)

        delete, insert = tx.statements[-2:]
        assert delete.compile().params == {
            "installation_id_1": INSTALLATION,
            "subscription_id_1": SUBSCRIPTION,
        }
        values = insert.compile().params
        assert isinstance(values.pop("delivered_at"), dt.datetime)
        assert values == {
            "installation_id": INSTALLATION,
            "subscription_id": SUBSCRIPTION,
            "run_id": "run-2",
            "target_table": "company",
            "watermark": "2026-11-20T10:35:00",
            "rows_merged": 2,
        }

    def test_a_merge_whose_load_fails_never_commits(
        self, connector: DatabaseConnector, record: Callable[..., RecordingTransaction]
    ) -> None:
        tx = record(empty=False, fail_load=True)

        with pytest.raises(RuntimeError, match="the load failed"):
            self.merge(connector, delete_missing=True)

        assert tx.steps == ["probe company", "create staging"]
