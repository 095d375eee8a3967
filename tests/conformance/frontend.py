"""The tables, rows and deliveries the database conformance suite is written in.

Kept free of pytest: the crash tests' child process (``merge_child``) imports it to make the
very delivery the parent then checks.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import sqlalchemy as sa

from connectors.base import DatabaseConnector, DeliveryMarker, SinceFilter, TableSpec
from connectors.columns import ColumnSpec
from connectors.registry import normalise_url, open_database

NODE = "conformance_fe"
SUBSCRIPTION = 7
#: The installation (metadata store) a delivery is made for; a second one shares the target.
INSTALLATION = "0123456789abcdef0123456789abcdef"
OTHER_INSTALLATION = "fedcba9876543210fedcba9876543210"
REPO = Path(__file__).resolve().parents[2]

Row = dict[str, Any]

# -- tables -----------------------------------------------------------------------------------

#: One column of every logical type (``exchange.kernel.kinds.LOGICAL_TYPES``).
EVERY_TYPE = TableSpec(
    "every_type",
    (
        ColumnSpec("id", "bigint", nullable=False),
        ColumnSpec("f_smallint", "smallint"),
        ColumnSpec("f_integer", "integer"),
        ColumnSpec("f_bigint", "bigint"),
        ColumnSpec("f_decimal", "decimal", precision=18, scale=2),
        ColumnSpec("f_double", "double"),
        ColumnSpec("f_varchar", "varchar", length=20),
        ColumnSpec("f_char", "char", length=6),
        ColumnSpec("f_text", "text"),
        ColumnSpec("f_date", "date"),
        ColumnSpec("f_timestamp", "timestamp"),
        ColumnSpec("f_timestamptz", "timestamptz"),
        ColumnSpec("f_boolean", "boolean"),
    ),
    ("id",),
)

COMPANY = TableSpec(
    "company",
    (
        ColumnSpec("id", "bigint", nullable=False),
        ColumnSpec("name", "varchar", length=50, nullable=False),
        ColumnSpec("capital", "decimal", precision=18, scale=2),
        ColumnSpec("updated_at", "timestamp"),
    ),
    ("id",),
)

#: A composite key: ``(uscc, seq)``.
LICENCE = TableSpec(
    "licence",
    (
        ColumnSpec("uscc", "char", length=18, nullable=False),
        ColumnSpec("seq", "integer", nullable=False),
        ColumnSpec("issued", "date"),
        ColumnSpec("note", "varchar", length=20),
    ),
    ("uscc", "seq"),
)

#: Cursors of the three kinds a resource uses: a timestamp, a date, a number.
EVENTS = TableSpec(
    "events",
    (
        ColumnSpec("id", "bigint", nullable=False),
        ColumnSpec("updated_at", "timestamp", nullable=False),
        ColumnSpec("day", "date", nullable=False),
        ColumnSpec("version", "bigint", nullable=False),
    ),
    ("id",),
)

# -- rows -------------------------------------------------------------------------------------

OUTSIDE_BMP = "𠮷"  # U+20BB7: four bytes in UTF-8, utf8mb4 in MariaDB, a surrogate pair in UTF-16

EVERY_TYPE_ROWS: list[Row] = [
    {
        "id": 1,
        "f_smallint": 32767,
        "f_integer": 2147483647,
        "f_bigint": 9007199254740993,  # 2**53 + 1: no float on the way
        "f_decimal": Decimal("1234567890123456.78"),
        "f_double": 0.1,
        "f_varchar": f"{OUTSIDE_BMP}野家 统一社会信用代码",
        "f_char": "北京市朝阳区",  # exactly 6 characters: CHAR pads shorter values
        "f_text": "第一行\n第二行\t制表符 \\ 反斜杠 \\N 不是空值",
        "f_date": dt.date(2026, 3, 2),
        "f_timestamp": dt.datetime(2026, 3, 2, 9, 30, 0, 123456),
        # 00:30 in Shanghai is the previous day in UTC: the instant must come back unchanged.
        "f_timestamptz": dt.datetime(2026, 11, 30, 16, 30, 0, 123456, tzinfo=dt.UTC),
        "f_boolean": True,
    },
    {
        "id": 2,
        "f_smallint": -32768,
        "f_integer": -2147483648,
        "f_bigint": -9223372036854775808,
        "f_decimal": Decimal("-0.01"),
        "f_double": -1e300,
        "f_varchar": "a",
        "f_char": "110105",
        "f_text": "x",
        "f_date": dt.date(1900, 1, 1),
        "f_timestamp": dt.datetime(1970, 1, 1),
        "f_timestamptz": dt.datetime(1970, 1, 1, tzinfo=dt.UTC),
        "f_boolean": False,
    },
    {"id": 3, **{f.name: None for f in EVERY_TYPE.fields if f.name != "id"}},
]

T0 = dt.datetime(2026, 11, 20, 10, 30, 0, 123456)


def company(i: int, name: str | None = None, capital: str = "100.00") -> Row:
    return {
        "id": i,
        "name": name or f"企业{i}",
        "capital": Decimal(capital),
        "updated_at": T0 + dt.timedelta(minutes=i),
    }


#: The first delivery: companies 1-5.
FIRST = [company(i) for i in range(1, 6)]
#: An incremental change: 2 renamed and recapitalised, 6 new.
CHANGES = [company(2, "企业2（更名）", "2500.50"), company(6)]
#: The provider's whole table later: 1 gone, 2 changed, 6 new.
SNAPSHOT = [r for r in FIRST if r["id"] not in (1, 2)] + CHANGES

LICENCES = [
    {"uscc": "91110105MA0000001A", "seq": 1, "issued": dt.date(2024, 1, 1), "note": "首次"},
    {"uscc": "91110105MA0000001A", "seq": 2, "issued": dt.date(2025, 1, 1), "note": "换证"},
    {"uscc": "91310000MA0000002B", "seq": 1, "issued": dt.date(2024, 6, 1), "note": "首次"},
]
#: Later: (A, 1) changed, (A, 2) gone, (B, 2) new. (A, 2) shares its uscc with a kept row and
#: its seq with a new one, so a delete or upsert matching one key column only gets it wrong.
LICENCES_LATER = [
    {**LICENCES[0], "note": "更正"},
    LICENCES[2],
    {"uscc": "91310000MA0000002B", "seq": 2, "issued": dt.date(2026, 1, 1), "note": "换证"},
]


def batches(spec: TableSpec, rows: Sequence[Row], size: int = 2) -> list[pa.RecordBatch]:
    """``rows`` as the load step hands them over: batches of ``spec``'s Arrow schema."""
    schema = spec.arrow_schema()
    return [
        pa.RecordBatch.from_pylist(list(rows[i : i + size]), schema=schema)
        for i in range(0, len(rows), size)
    ]


def empty_batch(spec: TableSpec) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([], schema=spec.arrow_schema())


def as_batches(
    spec: TableSpec, data: Sequence[Row] | Sequence[pa.RecordBatch]
) -> list[pa.RecordBatch]:
    if all(isinstance(item, pa.RecordBatch) for item in data):
        return list(data)  # type: ignore[arg-type]
    return batches(spec, data)  # type: ignore[arg-type]


# -- a front-end database under test ----------------------------------------------------------


@dataclass
class FrontEndDatabase:
    """A database at ``url`` seen through its connector, used as the load step uses it."""

    url: str
    installation: str | None = INSTALLATION
    last_deleted: int = 0  # rows the last ``deliver`` deleted (snapshot mode)

    @property
    def kind(self) -> str:
        return normalise_url(self.url).get_backend_name()

    def open(self) -> DatabaseConnector:
        connector = open_database(NODE, self.kind, self.url)
        connector.installation = self.installation
        return connector

    def as_installation(self, installation: str | None) -> FrontEndDatabase:
        """The same database, delivered into by another installation (metadata store)."""
        return FrontEndDatabase(self.url, installation)

    def ensure(self, spec: TableSpec) -> None:
        connector = self.open()
        try:
            connector.ensure_table(spec)
        finally:
            connector.close()

    def deliver(
        self,
        spec: TableSpec,
        data: Sequence[Row] | Sequence[pa.RecordBatch],
        *,
        run_id: str,
        delete_missing: bool = False,
        subscription_id: int = SUBSCRIPTION,
        watermark: str | None = None,
        on_rows: Callable[[int], None] | None = None,
        keep: pa.Table | None = None,
    ) -> int:
        """One delivery as ``load_subscriber`` makes it: a connector of its own (a connector
        lives for one delivery), ``ensure_table``, ``merge`` with the marker; rows merged.
        ``data`` is rows (sent in batches of two) or the batches themselves."""
        connector = self.open()
        try:
            connector.ensure_table(spec)
            loaded = connector.merge(
                spec,
                as_batches(spec, data),
                delete_missing=delete_missing,
                marker=DeliveryMarker(subscription_id, run_id, watermark, 0),
                on_rows=on_rows,
                keep=keep,
            )
            self.last_deleted = connector.deleted  # what the snapshot delivery deleted
            return loaded
        finally:
            connector.close()

    def read(
        self, spec: TableSpec, since: SinceFilter | None = None, batch_size: int = 50_000
    ) -> list[pa.RecordBatch]:
        connector = self.open()
        try:
            return list(connector.read_batches(spec, since, batch_size))
        finally:
            connector.close()

    def rows(self, spec: TableSpec, since: SinceFilter | None = None) -> list[Row]:
        """Every row of the table, read back through the connector, in key order."""
        table = pa.Table.from_batches(self.read(spec, since), schema=spec.arrow_schema())
        return sorted(table.to_pylist(), key=lambda r: tuple(r[k] for k in spec.primary_key))

    def marker(self, spec: TableSpec, subscription_id: int = SUBSCRIPTION) -> DeliveryMarker | None:
        connector = self.open()
        try:
            return connector.read_marker(spec, subscription_id)
        finally:
            connector.close()

    def tables(self) -> set[str]:
        connector = self.open()
        try:
            with connector.connect() as conn:
                return {t.lower() for t in sa.inspect(conn).get_table_names()}
        finally:
            connector.close()

    def columns(self, spec: TableSpec) -> list[str]:
        connector = self.open()
        try:
            with connector.connect() as conn:
                return [c["name"].lower() for c in sa.inspect(conn).get_columns(spec.name)]
        finally:
            connector.close()

    def deliver_killed_at(
        self, point: str, table: str, rows: str, *, run_id: str, delete_missing: bool
    ) -> int:
        """``deliver`` in a child process with ``EXCHANGE_CRASH_AT=<point>@<node>``: its exit
        status, ``-SIGKILL`` when the crash point killed it (``table`` and ``rows`` name this
        module's constants)."""
        env = {**os.environ, "CONFORMANCE_URL": self.url, "EXCHANGE_CRASH_AT": f"{point}@{NODE}"}
        mode = "snapshot" if delete_missing else "incremental"
        proc = subprocess.run(
            [sys.executable, "-m", "tests.conformance.merge_child", table, rows, run_id, mode],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if proc.returncode not in (0, -signal.SIGKILL):
            raise AssertionError(f"merge child exited {proc.returncode}:\n{proc.stderr}")
        return proc.returncode
