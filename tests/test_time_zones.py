"""Time zones (issue 13, Must have 3): a ``timestamp`` is Asia/Shanghai wall-clock time, a
``timestamptz`` an instant, on every dialect and every source -> target pair.

The case from the issue: a ``timestamptz`` source column declared ``timestamp`` arrived as naive
UTC, ``2026-12-01 00:30:00+08`` became ``2026-11-30 16:30:00``: the day before, for every reader
in Asia/Shanghai.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from sqlalchemy.schema import CreateTable

from connectors.arrow_types import INSTANT, WALL_CLOCK, conform, rows_to_batch
from connectors.base import SinceFilter, TableSpec
from connectors.columns import ColumnSpec
from connectors.oracle import OracleConnector, _bind
from exchange.catalog.model import Field
from exchange.flow import run_resource
from exchange.kernel.clock import SHANGHAI
from exchange.runs import watermark
from exchange.workflow.grants import add_subscription
from exchange.workspace import Workspace
from quality.resource_checks import staleness
from quality.rules import Between, Compare, NotFuture
from tests.conftest import catalog_yaml
from tests.sources import connect

UTC = dt.UTC
PLUS8 = dt.timezone(dt.timedelta(hours=8))
FAR = dt.date.today() + dt.timedelta(days=300)
#: 00:30 and 23:30 in Shanghai (either side of midnight, UTC the day before), one given in UTC.
INSTANTS = {
    1: dt.datetime(2026, 12, 1, 0, 30, tzinfo=PLUS8),
    2: dt.datetime(2026, 11, 30, 23, 30, tzinfo=PLUS8),
    3: dt.datetime(2026, 11, 30, 20, 15, 0, 123456, tzinfo=UTC),
}
LATER = {4: dt.datetime(2026, 12, 1, 1, 0, tzinfo=UTC)}
#: The calendar day each row is on for a reader in Asia/Shanghai.
DAYS = {1: dt.date(2026, 12, 1), 2: dt.date(2026, 11, 30), 3: dt.date(2026, 12, 1)}
FIELDS = ["id", "zoned_wall", "zoned_instant", "naive_instant", "wall"]

# Every column carries one instant per row, each as its kind of source column keeps it:
#   zoned_wall     a column with a zone, declared timestamp    -> Shanghai wall-clock time
#   zoned_instant  a column with a zone, declared timestamptz  -> the instant (also the cursor)
#   naive_instant  a column without one, declared timestamptz  -> Shanghai wall time as instant
#                  (MariaDB: a DATETIME(6) holding UTC, the documented convention)
#   wall           a column without one, declared timestamp    -> unchanged
RESOURCE = """\
- code: EVT
  name: 事件
  kind: table
  provider: src
  share: unconditional
  source: {table: event}
  mode: incremental
  primary_key: [id]
  cursor: zoned_instant
  fields:
    - {name: id, type: bigint, nullable: false}
    - {name: zoned_wall, type: timestamp}
    - name: zoned_instant
      type: timestamptz
      nullable: false
      rules: {min: "2026-11-30T00:00:00+08:00", not_future: true}
    - {name: naive_instant, type: timestamptz}
    - {name: wall, type: timestamp, rules: {max: "2026-12-02 00:00:00"}}
  quality:
    compare: ["naive_instant == zoned_instant", "wall == zoned_instant"]
"""

DDL = {
    "postgresql": "CREATE TABLE event (id bigint PRIMARY KEY, zoned_wall timestamptz, "
    "zoned_instant timestamptz NOT NULL, naive_instant timestamp, wall timestamp)",
    "mysql": "CREATE TABLE event (id bigint PRIMARY KEY, "
    "zoned_wall TIMESTAMP(6) NULL DEFAULT NULL, "
    "zoned_instant TIMESTAMP(6) NOT NULL DEFAULT '2000-01-01 00:00:00', "
    "naive_instant DATETIME(6), wall DATETIME(6))",
    "sqlite": "CREATE TABLE event (id INTEGER PRIMARY KEY, zoned_wall TEXT, zoned_instant TEXT, "
    "naive_instant TEXT, wall TEXT)",
}


def wall_of(instant: dt.datetime) -> dt.datetime:
    return instant.astimezone(SHANGHAI).replace(tzinfo=None)


def utc_of(instant: dt.datetime) -> dt.datetime:
    return instant.astimezone(UTC).replace(tzinfo=None)


def source_row(dialect: str, i: int, instant: dt.datetime) -> tuple[Any, ...]:
    """One instant as each kind of source column of ``dialect`` holds it."""
    if dialect == "postgresql":  # timestamptz from text with its offset, as written
        zoned = instant.isoformat(sep=" ")
        return (i, zoned, zoned, wall_of(instant), wall_of(instant))
    if dialect == "mysql":  # TIMESTAMP inserted as UTC (session +00:00); DATETIME(6) UTC
        return (i, utc_of(instant), utc_of(instant), utc_of(instant), wall_of(instant))
    zoned = instant.isoformat(sep=" ")  # SQLite: ISO text with the offset, or without one
    return (i, zoned, zoned, wall_of(instant).isoformat(sep=" "), wall_of(instant).isoformat())


def fill_source(url: str, dialect: str, rows: dict[int, dt.datetime], create: bool) -> None:
    mark = "?" if dialect == "sqlite" else "%s"
    insert = f"INSERT INTO event ({', '.join(FIELDS)}) VALUES ({', '.join([mark] * 5)})"  # noqa: S608
    with connect(url) as conn:
        cur = conn.cursor()
        if dialect == "mysql":
            cur.execute("SET time_zone = '+00:00'")
        if create:
            cur.execute(DDL[dialect])
        cur.executemany(insert, [source_row(dialect, i, t) for i, t in rows.items()])
        conn.commit()


def held(target: str, declared: str, instant: dt.datetime) -> Any:
    """What ``target`` must hold for ``instant`` delivered as a field of type ``declared``."""
    if declared == "timestamp":  # Shanghai wall-clock time, never UTC
        wall = wall_of(instant)
        return wall.isoformat(sep=" ", timespec="microseconds") if target == "sqlite" else wall
    if target == "postgresql":  # timestamptz: the instant itself
        return instant
    if target == "mysql":  # DATETIME(6): the instant in UTC, by convention
        return utc_of(instant)
    return utc_of(instant).isoformat(sep=" ", timespec="microseconds") + "+00:00"


def target_rows(url: str) -> dict[int, tuple[Any, ...]]:
    with connect(url) as conn:
        cur = conn.cursor()
        cur.execute(f"SELECT {', '.join(FIELDS)} FROM event_copy ORDER BY id")  # noqa: S608
        return {r[0]: tuple(r[1:]) for r in cur.fetchall()}


def expected(target: str, rows: dict[int, dt.datetime]) -> dict[int, tuple[Any, ...]]:
    kinds = ("timestamp", "timestamptz", "timestamptz", "timestamp")
    return {i: tuple(held(target, k, t) for k in kinds) for i, t in rows.items()}


@pytest.fixture
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str, str], str]:
    """``database('postgresql', 'src')`` -> URL of a fresh database (one per dialect: a
    same-dialect pair delivers into the source's database, to a table of its own)."""

    def get(dialect: str, role: str) -> str:
        if dialect == "sqlite":
            return f"sqlite:///{tmp_path / f'{role}.db'}"
        fixture = "pg_database" if dialect == "postgresql" else "mariadb_database"
        return str(request.getfixturevalue(fixture))

    return get


DIALECTS = ("sqlite", "postgresql", "mysql")
PAIRS = [(s, t) for s in DIALECTS for t in DIALECTS]


@pytest.mark.parametrize(("source", "target"), PAIRS, ids=[f"{s}->{t}" for s, t in PAIRS])
def test_each_time_reaches_every_target_as_shanghai_wall_time_or_as_the_same_instant(
    source: str,
    target: str,
    database: Callable[[str, str], str],
    make_workspace: Callable[[str], Workspace],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src_url, tgt_url = database(source, "src"), database(target, "tgt")
    monkeypatch.setenv("SRC_URL", src_url)
    monkeypatch.setenv("TGT_URL", tgt_url)
    fill_source(src_url, source, INSTANTS, create=True)
    ws = make_workspace(
        catalog_yaml(
            {"src": (source, "{env: SRC_URL}"), "tgt": (target, "{env: TGT_URL}")}, RESOURCE
        )
    )
    add_subscription(ws, "EVT", "tgt", FIELDS, FAR, target_table="event_copy")

    first = run_resource(ws, "EVT")

    assert first.status == "succeeded", first.failures
    assert first.quarantined == 0  # min, not_future and compare take both kinds of time
    got = target_rows(tgt_url)
    assert got == expected(target, INSTANTS)
    # The case: a reader in Shanghai sees each row on its own calendar day.
    assert {i: dt.date.fromisoformat(str(r[0])[:10]) for i, r in got.items()} == DAYS

    # The timestamptz cursor: its watermark encodes and decodes the instant, and the next
    # run delivers the new row.
    fill_source(src_url, source, LATER, create=False)

    second = run_resource(ws, "EVT")

    assert second.status == "succeeded", second.failures
    if source != "mysql":  # MariaDB binds the instant as UTC: a TIMESTAMP reads 8 h more
        assert second.extracted == 2  # the row on the watermark, and the new one
    assert target_rows(tgt_url) == expected(target, INSTANTS | LATER)


# -- where the zone is settled: conforming a driver's batch ---------------------------------


def test_an_aware_arrow_column_declared_timestamp_becomes_shanghai_wall_time_not_utc() -> None:
    # What ADBC hands over for a PostgreSQL timestamptz: the instant, tagged UTC.
    col = pa.array([INSTANTS[1], INSTANTS[2], None], type=INSTANT)
    batch = pa.RecordBatch.from_arrays([col, col], names=["wall", "instant"])
    schema = pa.schema([("wall", WALL_CLOCK), ("instant", INSTANT)])

    out = conform(batch, schema).to_pydict()

    assert out["wall"] == [dt.datetime(2026, 12, 1, 0, 30), dt.datetime(2026, 11, 30, 23, 30), None]
    assert out["instant"] == [INSTANTS[1], INSTANTS[2], None]


def test_aware_driver_datetimes_declared_timestamp_become_shanghai_wall_time() -> None:
    rows = [(INSTANTS[1], INSTANTS[1]), (INSTANTS[3], INSTANTS[3]), (None, None)]
    schema = pa.schema([("wall", WALL_CLOCK), ("instant", INSTANT)])

    out = rows_to_batch(rows, schema).to_pydict()

    assert out["wall"] == [wall_of(INSTANTS[1]), wall_of(INSTANTS[3]), None]
    assert out["instant"] == [INSTANTS[1], INSTANTS[3], None]


def test_a_naive_value_declared_timestamptz_is_shanghai_wall_time_unless_the_dialect_says_utc() -> (
    None
):
    naive = [(dt.datetime(2026, 12, 1, 0, 30),)]
    schema = pa.schema([("instant", INSTANT)])

    assert rows_to_batch(naive, schema).column(0).to_pylist() == [INSTANTS[1]]
    as_utc = rows_to_batch(naive, schema, "UTC").column(0).to_pylist()
    assert as_utc == [dt.datetime(2026, 12, 1, 0, 30, tzinfo=UTC)]


def test_iso_text_with_and_without_offsets_conforms_to_both_kinds_of_time() -> None:
    text = pa.array(["2026-12-01 00:30:00+08:00", "2026-11-30 23:30:00", "2026-11-30T20:15:00Z"])
    batch = pa.RecordBatch.from_arrays([text, text], names=["wall", "instant"])
    schema = pa.schema([("wall", WALL_CLOCK), ("instant", INSTANT)])

    out = conform(batch, schema).to_pydict()

    assert out["wall"] == [
        dt.datetime(2026, 12, 1, 0, 30),
        dt.datetime(2026, 11, 30, 23, 30),
        dt.datetime(2026, 12, 1, 4, 15),
    ]
    assert out["instant"] == [
        INSTANTS[1],
        INSTANTS[2],
        dt.datetime(2026, 11, 30, 20, 15, tzinfo=UTC),
    ]


# -- cursors and rules -----------------------------------------------------------------------


def test_a_timestamptz_cursor_encodes_and_decodes_the_same_instant() -> None:
    cursor = Field("zoned_instant", "timestamptz")

    text = watermark.encode(INSTANTS[3])

    assert text == "2026-11-30T20:15:00.123456+00:00"
    assert watermark.decode(text, cursor) == INSTANTS[3]
    # A watermark kept while the field was still declared timestamp: Shanghai wall time.
    assert watermark.decode("2026-12-01T00:30:00", cursor) == INSTANTS[1]


def test_rules_that_take_times_judge_a_timestamptz_in_shanghai_time() -> None:
    col = pa.array([INSTANTS[1], INSTANTS[2]], type=INSTANT)  # Dec 1 00:30, Nov 30 23:30
    wall = pa.array([dt.datetime(2026, 12, 1, 0, 30), dt.datetime(2026, 12, 1, 0, 30)])
    batch = pa.RecordBatch.from_arrays([col, wall], names=["at", "wall"])

    since_dec_1 = Between(field="at", low="2026-12-01")
    before_midnight = NotFuture(field="at", now=dt.datetime(2026, 11, 30, 23, 59))
    same = Compare(field="wall", op="==", other="at")

    assert since_dec_1.violations(batch).to_pylist() == [False, True]
    assert before_midnight.violations(batch).to_pylist() == [True, False]
    assert same.violations(batch).to_pylist() == [False, True]


def test_freshness_takes_a_timestamptz_cursor_as_shanghai_time() -> None:
    now = dt.datetime(2026, 12, 1, 1, 30)  # Shanghai wall clock, as the validate step passes it

    assert staleness(INSTANTS[1], now, dt.timedelta(hours=1)) is None
    assert staleness(INSTANTS[2], now, dt.timedelta(hours=1)) is not None


# -- Oracle: compiled only (no server runs here) ---------------------------------------------

ORACLE_URL = "oracle+oracledb://u:p@127.0.0.1:1521/?service_name=FREEPDB1"
EVENT = TableSpec(
    "event",
    (
        ColumnSpec("id", "bigint", nullable=False),
        ColumnSpec("zoned_wall", "timestamp"),
        ColumnSpec("zoned_instant", "timestamptz"),
    ),
    ("id",),
)


def test_oracle_keeps_a_timestamptz_as_timestamp_with_time_zone_and_reads_it_as_utc_text() -> None:
    conn = OracleConnector("ora", ORACLE_URL)
    since = SinceFilter("zoned_instant", INSTANTS[3])
    try:
        table = conn.sa_table(EVENT)
        create = str(CreateTable(table).compile(dialect=conn.engine.dialect))
        select = conn.select_statement(EVENT, since).compile(dialect=conn.engine.dialect)
        insert = conn.positional_insert(table, lambda i: _bind(table.columns[i], i))
    finally:
        conn.close()

    assert "zoned_instant TIMESTAMP WITH TIME ZONE" in create
    assert "zoned_wall TIMESTAMP," in create
    assert (
        "concat(to_char(sys_extract_utc(CAST(event.zoned_instant AS TIMESTAMP WITH TIME ZONE)),"
        " 'YYYY-MM-DD HH24:MI:SS.FF6'), '+00:00') AS zoned_instant" in str(select)
    )
    assert (
        "CAST(CAST(event.zoned_wall AS TIMESTAMP WITH TIME ZONE) AT TIME ZONE 'Asia/Shanghai'"
        " AS TIMESTAMP) AS zoned_wall" in str(select)
    )
    # The thin driver drops a bound datetime's zone: the cursor goes as Shanghai wall time.
    assert select.params["since"] == wall_of(INSTANTS[3])
    assert insert.endswith(
        "VALUES (:1, :2, TO_TIMESTAMP_TZ(:3, 'YYYY-MM-DD HH24:MI:SS.FF6TZH:TZM'))"
    )


def test_sqlite_keeps_a_timestamptz_as_iso_text_with_the_utc_offset(tmp_path: Path) -> None:
    from connectors.sqlite import SQLiteConnector

    conn = SQLiteConnector("fe", f"sqlite:///{tmp_path / 'fe.db'}")
    batch = pa.RecordBatch.from_pydict(
        {"id": [1], "zoned_wall": [wall_of(INSTANTS[1])], "zoned_instant": [INSTANTS[1]]},
        schema=EVENT.arrow_schema(),
    )
    try:
        conn.ensure_table(EVENT)
        with conn.connect(begin=True) as c:
            conn.bulk_load(c, conn.sa_table(EVENT), batch, conn.encode(batch))
    finally:
        conn.close()

    with sqlite3.connect(tmp_path / "fe.db") as db:
        row = db.execute("SELECT zoned_wall, zoned_instant FROM event").fetchone()
    assert row == ("2026-12-01 00:30:00.000000", "2026-11-30 16:30:00.000000+00:00")


def test_catalog_check_warns_of_a_zoned_source_column_declared_timestamp(
    pg_database: str, make_workspace: Callable[[str], Workspace], monkeypatch: pytest.MonkeyPatch
) -> None:
    from exchange.tables.check import WARNING, check_resource

    monkeypatch.setenv("SRC_URL", pg_database)
    fill_source(pg_database, "postgresql", INSTANTS, create=True)
    ws = make_workspace(catalog_yaml({"src": ("postgresql", "{env: SRC_URL}")}, RESOURCE))

    report = check_resource(ws, "EVT")

    warned = {f.column: f.detail for f in report.findings if f.level == WARNING}
    assert "Asia/Shanghai wall-clock time (never UTC)" in warned["zoned_wall"]
    assert "zoned_instant" not in warned  # a timestamptz declared timestamptz: as it should be
    assert not report.refused
