"""The one interface every front-end database dialect implements.

A connector moves rows and knows nothing of subscriptions, rules or the catalog (it stands on
``exchange.kernel`` only; columns are anything shaped like ``columns.Column``). Reading streams
Arrow record batches (memory bounded by the batch size). Writing is ``ensure_table`` (create or
evolve the target table) and then one call, ``merge``: bulk-load the batches into a
session-private staging table, upsert by primary key, optionally delete what the source no
longer has, and write the delivery marker, all in one transaction. The marker is what makes
delivery exactly once across crashes. Markers are keyed by (installation id, subscription id):
two installations (two metadata stores) delivering into one database each keep their own.
A split full extract merges each key range with a range marker instead (``merge(part=k)``,
``exchange_delivery_part``), and ``close_split`` then reconciles deletes once and writes the
subscription's marker.

``merge`` is written once, here, over a ``MergeTransaction``: the five operations a dialect's
write path provides (probe, create staging, bulk-load, execute a statement, commit).
``StagedMerge`` implements them on a SQLAlchemy connection (MariaDB, SQLite, Oracle);
PostgreSQL implements them on one ADBC connection. A dialect module supplies its type mapping,
its staging table and bulk load, and the dialect-specific statements (``upsert``,
``delete_missing``); adding a dialect is adding a file and a line in ``registry``, and its
conformance is ``tests/conformance/``.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url

from connectors.arrow_types import ConversionFailed, arrow_schema, conform, rows_to_batch
from connectors.columns import Column
from connectors.names import IDENTIFIER as IDENTIFIER  # re-exported: its former home
from connectors.names import check_identifier
from connectors.prefetch import prefetch
from connectors.schema_check import (
    TableCheck,
    compare_source,
    compare_target,
    reflect,
    source_lacks,
)
from connectors.secrets import redact, safe_url
from exchange.kernel.clock import TIMEZONE, utcnow
from exchange.kernel.errors import BadInput, ConnectionFailed, DataError
from exchange.kernel.faults import crashpoint

# A connector lives for one step (closed by ``close``): one connection, reused by the marker
# check, the DDL and the merge (a TLS handshake each would cost more than a small delta).
POOL: dict[str, Any] = {"pool_size": 1, "max_overflow": 1, "pool_pre_ping": False}
MARKER_TABLE = "exchange_delivery_marker"
MARKER_KEY = ("installation_id", "subscription_id")
MARKER_PK = "pk_exchange_delivery_marker"
#: One row per key range of a split run committed to a subscription's target, written in the
#: range's merge transaction; the subscription's marker closes them all when the run's last
#: step for it (``close_split``) commits.
PART_TABLE = "exchange_delivery_part"
PART_PK = "pk_exchange_delivery_part"


@dataclass(frozen=True)
class TableSpec:
    """A table as the engine sees it: name, typed fields (catalog fields, ``ColumnSpec``s or
    anything else shaped like ``Column``), primary key."""

    name: str
    fields: tuple[Column, ...]
    primary_key: tuple[str, ...]
    schema: str | None = None

    def __post_init__(self) -> None:
        check_identifier(self.name, "table name")
        if self.schema is not None:
            check_identifier(self.schema, "schema name")
        for f in self.fields:
            check_identifier(f.name, "field name")

    @property
    def column_names(self) -> list[str]:
        return [f.name for f in self.fields]

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name

    def arrow_schema(self) -> pa.Schema:
        return arrow_schema(self.fields)


@dataclass(frozen=True)
class SinceFilter:
    """Rows whose ``column`` is at or past ``value`` (inclusive, so ties are never lost)."""

    column: str
    value: Any


@dataclass(frozen=True)
class KeyRange(SinceFilter):
    """Rows whose ``column`` is at or above ``low`` and below ``high`` (None: unbounded on
    that side); ``nulls``: the rows whose ``column`` is NULL too (the first range has them, so
    every row is in exactly one range). A split full extract's filter: it has no cursor
    filter, so it takes the place of one (``value`` is unused)."""

    low: Any = None
    high: Any = None
    nulls: bool = False


@dataclass(frozen=True)
class DeliveryMarker:
    """Written in the target in the merge transaction: which run reached this subscription."""

    subscription_id: int
    run_id: str
    watermark: str | None
    rows: int


def driver_connection(conn: Connection) -> Any:
    """The DBAPI driver's own connection under a SQLAlchemy one (for COPY, LOAD DATA, ...)."""
    return conn.connection.driver_connection


def row_key(batch: pa.RecordBatch, index: int, key: tuple[str, ...]) -> str:
    """``id=42`` or ``a=1,b=x``: how errors name a row."""
    names = [k for k in key if k in batch.schema.names]
    return ",".join(f"{k}={batch.column(k)[index].as_py()}" for k in names) or f"row {index + 1}"


@dataclass(frozen=True)
class MarkerShape:
    """A marker table as a database has it now: its columns and its key (lower-cased)."""

    columns: frozenset[str]
    key: tuple[str, ...]
    key_name: str | None

    @property
    def current(self) -> bool:
        """Keyed by (installation id, subscription id): nothing to upgrade."""
        return "installation_id" in self.columns and self.key == MARKER_KEY


def marker_lock_name(database: str | None, schema: str | None) -> str:
    """The name of the lock an upgrade of the marker table of ``database``.``schema`` holds
    (64 characters at most: MariaDB's limit; its locks are server-wide)."""
    digest = hashlib.sha256(f"{database}\0{schema}".encode()).hexdigest()[:32]
    return f"{MARKER_TABLE}:{digest}"


def marker_shape(conn: Connection, schema: str | None) -> MarkerShape | None:
    """The marker table's shape in ``schema`` (None: there is none)."""
    inspector = sa.inspect(conn)
    if not inspector.has_table(MARKER_TABLE, schema):
        return None
    columns = frozenset(c["name"].lower() for c in inspector.get_columns(MARKER_TABLE, schema))
    pk = inspector.get_pk_constraint(MARKER_TABLE, schema)
    key = tuple(c.lower() for c in pk.get("constrained_columns") or [])
    return MarkerShape(columns, key, pk.get("name"))


class DatabaseConnector(ABC):
    """A front-end database: read batches, create/evolve tables, bulk-load and merge."""

    dialect: ClassVar[str]

    def __init__(self, node: str, url: str | URL, installation: str | None = None):
        self.node = node
        self.url = make_url(url)
        self.engine = self._create_engine(self.url)
        #: Whose delivery markers this connector reads and writes: the metadata store's
        #: installation id (``Workspace.database`` sets it). Without one, markers are refused.
        self.installation = installation
        #: Rows the last ``merge`` deleted because the source no longer has them (snapshot).
        self.deleted = 0

    # -- connection ----------------------------------------------------------------------
    def _create_engine(self, url: URL) -> Engine:
        return sa.create_engine(url, **POOL)

    @contextmanager
    def connect(self, *, begin: bool = False) -> Iterator[Connection]:
        """A connection (in a transaction when ``begin``); failures to connect name the node."""
        try:
            conn = self.engine.connect()
        except sa.exc.DBAPIError as exc:
            raise ConnectionFailed(self._connect_message(exc)) from None
        try:
            if begin:
                with conn.begin():
                    yield conn
            else:
                yield conn
        finally:
            conn.close()

    def _connect_message(self, exc: Exception) -> str:
        detail = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        return (
            f"cannot connect to front-end node {self.node!r} ({safe_url(self.url)}): "
            f"{redact(detail, self.url.password)}"
        )

    def close(self) -> None:
        self.engine.dispose()

    # -- types ---------------------------------------------------------------------------
    #: The dialect's type for each logical type without a size (sized ones: ``column_type``).
    SIMPLE_TYPES: ClassVar[dict[str, sa.types.TypeEngine[Any]]] = {}
    #: The zone a value without one is in when its field is declared ``timestamptz``: an
    #: Asia/Shanghai wall-clock time, unless the dialect keeps instants as naive UTC.
    naive_zone: ClassVar[str] = TIMEZONE

    def column_type(self, field: Column) -> sa.types.TypeEngine[Any]:
        """The dialect's column type for a field of a logical type."""
        if field.type == "decimal":
            return sa.Numeric(field.precision, field.scale or 0)
        if field.type == "varchar":
            return sa.String(field.length)
        if field.type == "char":
            return sa.CHAR(field.length)
        return self.SIMPLE_TYPES[field.type]

    def sa_table(self, spec: TableSpec, metadata: sa.MetaData | None = None) -> sa.Table:
        """The spec as a typed SQLAlchemy table (names are quoted by the dialect)."""
        md = metadata or sa.MetaData()
        cols = [
            sa.Column(
                f.name,
                self.column_type(f),
                primary_key=f.name in spec.primary_key,
                nullable=f.nullable and f.name not in spec.primary_key,
                autoincrement=False,
            )
            for f in spec.fields
        ]
        return sa.Table(spec.name, md, *cols, schema=spec.schema, **self.table_options())

    def table_options(self) -> dict[str, Any]:
        return {}

    # -- reading -------------------------------------------------------------------------
    def since_clause(self, column: sa.ColumnClause[Any], value: Any) -> sa.ColumnElement[bool]:
        return column >= sa.bindparam("since", value)

    def range_clause(self, column: sa.ColumnClause[Any], rng: KeyRange) -> sa.ColumnElement[bool]:
        """``low <= column < high`` (either side may be open); ``OR column IS NULL`` for the
        range that takes the NULL keys. The bounds are rendered by SQLAlchemy's literal
        quoting at execution (``literal_execute``), not sent as parameters: ADBC's PostgreSQL
        driver reads a query with parameters whole into memory instead of streaming it by
        COPY (500,000 rows: 750 MB against 188 MB)."""
        parts: list[sa.ColumnElement[bool]] = []
        if rng.low is not None:
            parts.append(column >= sa.bindparam("range_low", rng.low, literal_execute=True))
        if rng.high is not None:
            parts.append(column < sa.bindparam("range_high", rng.high, literal_execute=True))
        inside = sa.and_(sa.true(), *parts)
        return sa.or_(inside, column.is_(None)) if rng.nulls else inside

    def filter_clause(
        self, column: sa.ColumnClause[Any], since: SinceFilter
    ) -> sa.ColumnElement[bool]:
        """The WHERE of a read: a key range's, or ``column >= since``."""
        if isinstance(since, KeyRange):
            return self.range_clause(column, since)
        return self.since_clause(column, since.value)

    def select_statement(self, spec: TableSpec, since: SinceFilter | None) -> sa.Select[Any]:
        """``SELECT <fields> FROM <table> [WHERE <cursor> >= :since | <key range>]``, names
        quoted."""
        table = sa.table(spec.name, *(sa.column(n) for n in spec.column_names), schema=spec.schema)
        stmt = sa.select(*table.c)
        if since is not None:
            stmt = stmt.where(self.filter_clause(table.c[since.column], since))
        return stmt

    def key_cuts(self, spec: TableSpec, column: str, chunks: int, numeric: bool) -> list[Any]:
        """Up to ``chunks - 1`` ascending, distinct values of ``column`` that cut the table
        into ranges of about equal size: equal widths between MIN and MAX for a ``numeric``
        key (two index lookups), else the values at each ``count / chunks`` offset in key
        order (one indexed ``OFFSET`` each). An empty table or a single value: no cut."""
        table = sa.table(spec.name, sa.column(column), schema=spec.schema)
        col = table.c[column]
        with self.connect() as conn:
            if numeric:
                low, high = conn.execute(sa.select(sa.func.min(col), sa.func.max(col))).one()
                if low is None or high is None or low == high:
                    return []
                width = (high - low) / chunks
                cuts = [low + width * i for i in range(1, chunks)]
                if isinstance(low, int):
                    cuts = [low + ((high - low) * i) // chunks for i in range(1, chunks)]
            else:
                count = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
                cuts = []
                for i in range(1, chunks):
                    at = sa.select(col).where(col.is_not(None)).order_by(col)
                    at = at.offset(count * i // chunks).limit(1)  # bound by SQLAlchemy
                    value = conn.execute(at).scalar()
                    if value is not None:
                        cuts.append(value)
        return sorted({c for c in cuts if c is not None})

    def read_batches(
        self, spec: TableSpec, since: SinceFilter | None = None, batch_size: int = 50_000
    ) -> Iterator[pa.RecordBatch]:
        """Stream the table's fields as Arrow batches of at most ``batch_size`` rows.

        Values that do not fit the declared types raise DataError naming field and row key.
        """
        schema = spec.arrow_schema()
        batches = self.arrow_batches(spec, since, batch_size)
        try:
            while True:
                try:
                    batch = next(batches, None)
                    if batch is None:
                        return
                    conformed = conform(batch, schema, self.naive_zone)
                except ConversionFailed as exc:
                    if not exc.key and batch is not None:
                        exc.key = {k: batch.column(k)[exc.index].as_py() for k in spec.primary_key}
                    raise self._data_error(spec, exc) from None
                yield conformed
        finally:
            # Close the driver's cursor and connection now, not when the garbage collector
            # gets to them (ADBC then complained of a connection closed with a statement open).
            close = getattr(batches, "close", None)
            if close is not None:
                close()

    def _data_error(self, spec: TableSpec, exc: ConversionFailed) -> DataError:
        key = ",".join(f"{k}={exc.key.get(k)!r}" for k in spec.primary_key)
        return DataError(
            f"node {self.node!r} table {spec.qualified}: field {exc.field!r} "
            f"row key {key or '?'}: value {str(exc.value)[:40]!r} does not fit: {exc.reason}"
        )

    def arrow_batches(
        self, spec: TableSpec, since: SinceFilter | None, batch_size: int
    ) -> Iterator[pa.RecordBatch]:
        """Raw batches from the driver. This default fetches rows through a server-side
        cursor and converts them column-wise; Arrow-native dialects override it."""
        schema = spec.arrow_schema()
        with self.connect() as conn:
            try:
                result = conn.execution_options(
                    stream_results=True, max_row_buffer=batch_size
                ).execute(self.select_statement(spec, since))
            except sa.exc.DBAPIError as exc:
                raise self._query_error(exc, spec) from None
            for part in result.partitions(batch_size):
                try:
                    yield self.to_batch(part, schema)
                except ConversionFailed as exc:
                    exc.key = dict(zip(spec.column_names, part[exc.index], strict=True))
                    raise

    def to_batch(self, rows: Sequence[Sequence[Any]], schema: pa.Schema) -> pa.RecordBatch:
        """Driver rows as a batch of ``schema`` (a dialect may first decode values its way)."""
        return rows_to_batch(rows, schema, self.naive_zone)

    def _query_error(self, exc: sa.exc.DBAPIError, spec: TableSpec) -> Exception:
        lacks = self.source_lacks(spec)
        if lacks is not None:
            return DataError(lacks)
        detail = redact(str(exc.orig).strip().splitlines()[0], self.url.password)
        return BadInput(f"node {self.node!r} table {spec.qualified}: {detail}")

    def source_lacks(self, spec: TableSpec) -> str | None:
        """Once a query of the provider's table failed: whether the table or a declared column
        is missing, in words (``schema_check.source_lacks``) rather than the driver's. None
        when that is not why, or cannot be asked."""
        try:
            with self.connect() as conn:
                return source_lacks(conn, self.node, spec.name, spec.schema, spec.fields)
        except (sa.exc.SQLAlchemyError, ConnectionFailed):
            return None

    # -- checking (connectors.schema_check) ----------------------------------------------
    def check_target(self, spec: TableSpec) -> TableCheck:
        """An existing target compared with ``spec`` before a load: the columns that would
        not hold the declared values (narrower or incompatible), the key it cannot merge by,
        and the fields it lacks. No table yet: ``exists`` False (``ensure_table`` makes it)."""
        return self._check(spec, compare_target)

    def check_source(self, spec: TableSpec) -> TableCheck:
        """A provider's table compared with ``spec``: the declared columns it lacks, those
        whose values do not fit the declared type, a key no constraint keeps unique."""
        return self._check(spec, compare_source)

    def _check(self, spec: TableSpec, compare: Callable[..., TableCheck]) -> TableCheck:
        with self.connect() as conn:
            found = reflect(conn, spec.name, spec.schema)
        if found is None:
            return TableCheck(exists=False)
        return compare(spec.fields, spec.primary_key, found, self.column_type, self.engine.dialect)

    # -- writing -------------------------------------------------------------------------
    def ensure_table(self, spec: TableSpec, *, parts: bool = False) -> list[str]:
        """Create the target table if missing, add catalog fields it lacks, and the marker
        table (a marker table of an earlier version, keyed by subscription alone, is re-keyed
        in place: ``upgrade_marker_table``); ``parts``: the table of split runs' range
        markers too. Return the names of the columns added to an existing table."""
        md = sa.MetaData()
        table = self.sa_table(spec, md)
        marker = self._marker_table(md, spec.schema)
        tables = [table, marker, *([self._part_table(md, spec.schema)] if parts else [])]
        with self.connect(begin=True) as conn:
            md.create_all(conn, tables=tables, checkfirst=True)
            have = {c["name"].lower() for c in sa.inspect(conn).get_columns(spec.name, spec.schema)}
            missing = [c for c in table.columns if c.name.lower() not in have]
            if missing:
                from alembic.migration import MigrationContext  # only to alter a table
                from alembic.operations import Operations

                ops = Operations(MigrationContext.configure(conn))
                for col in missing:
                    ops.add_column(spec.name, col.copy(), schema=spec.schema)
        self.upgrade_marker_table(spec.schema)
        return [c.name for c in missing]

    def _marker_table(self, md: sa.MetaData, schema: str | None) -> sa.Table:
        return sa.Table(
            MARKER_TABLE,
            md,
            sa.Column("installation_id", sa.String(64), nullable=False),
            sa.Column("subscription_id", sa.BigInteger, nullable=False, autoincrement=False),
            sa.Column("run_id", sa.String(64), nullable=False),
            sa.Column("target_table", sa.String(128), nullable=False),
            sa.Column("watermark", sa.String(1000)),
            sa.Column("rows_merged", sa.BigInteger, nullable=False),
            sa.Column("delivered_at", sa.DateTime, nullable=False),
            sa.PrimaryKeyConstraint(*MARKER_KEY, name=MARKER_PK),
            schema=schema,
        )

    def _part_table(self, md: sa.MetaData, schema: str | None) -> sa.Table:
        return sa.Table(
            PART_TABLE,
            md,
            sa.Column("installation_id", sa.String(64), nullable=False),
            sa.Column("subscription_id", sa.BigInteger, nullable=False, autoincrement=False),
            sa.Column("run_id", sa.String(64), nullable=False),
            sa.Column("part", sa.Integer, nullable=False, autoincrement=False),
            sa.Column("rows_merged", sa.BigInteger, nullable=False),
            sa.Column("delivered_at", sa.DateTime, nullable=False),
            sa.PrimaryKeyConstraint(
                "installation_id", "subscription_id", "run_id", "part", name=PART_PK
            ),
            schema=schema,
        )

    def read_parts(self, spec: TableSpec, subscription_id: int, run_id: str) -> dict[int, int]:
        """The key ranges of run ``run_id`` this installation committed to the subscription's
        target: {range number: rows merged} (none yet: empty)."""
        installation = self._installation()
        part = self._part_table(sa.MetaData(), spec.schema)
        with self.connect() as conn:
            if not sa.inspect(conn).has_table(PART_TABLE, spec.schema):
                return {}
            rows = conn.execute(
                sa.select(part.c.part, part.c.rows_merged).where(
                    part.c.installation_id == installation,
                    part.c.subscription_id == subscription_id,
                    part.c.run_id == run_id,
                )
            ).all()
        return {int(r.part): int(r.rows_merged) for r in rows}

    def _installation(self) -> str:
        if not self.installation:
            # ``Workspace.database`` always sets it: a connector without one is a bug in the
            # caller, not something an operator can fix.
            raise RuntimeError(
                f"node {self.node!r}: delivery markers are read and written for an "
                "installation; this connector was opened without an installation id"
            )
        return self.installation

    def upgrade_marker_table(self, schema: str | None = None) -> bool:
        """Re-key a marker table written by an earlier version (one row per subscription,
        whoever delivered it) by (installation id, subscription id), in place: add the
        column, give the existing rows this installation's id (the installation upgrading is
        taken to be the one that wrote them: an earlier version could not tell two apart),
        make it part of the key. The upgrade runs alone (``marker_upgrade``: parallel loads
        into one database each try it) and looks again at the table once it does, and each
        step looks before it acts, so a crash part-way (MariaDB commits each DDL statement)
        is finished by the next call. Return whether anything changed."""
        with self.connect() as conn:
            shape = marker_shape(conn, schema)
        if shape is None or shape.current:
            return False
        installation = self._installation()
        with self.marker_upgrade(schema) as conn:
            shape = marker_shape(conn, schema)  # another process may have done it meanwhile
            if shape is None or shape.current:
                return False
            self.rekey_marker_table(conn, schema, shape, installation)
        return True

    @contextmanager
    def marker_upgrade(self, schema: str | None) -> Iterator[Connection]:
        """The connection the marker table's upgrade runs on, alone and, where the dialect's
        DDL is transactional, as one transaction. This default is a plain transaction; the
        dialects add their lock (PostgreSQL an advisory lock, MariaDB ``GET_LOCK``, SQLite
        ``BEGIN IMMEDIATE``)."""
        with self.connect(begin=True) as conn:
            yield conn

    def backfill_marker_table(
        self, conn: Connection, schema: str | None, shape: MarkerShape, installation: str
    ) -> None:
        """Add the nullable ``installation_id`` column if it is missing and give every row
        without one ``installation`` (the first half of ``rekey_marker_table``)."""
        if "installation_id" not in shape.columns:
            from alembic.migration import MigrationContext  # only to alter a table
            from alembic.operations import Operations

            ops = Operations(MigrationContext.configure(conn))
            ops.add_column(MARKER_TABLE, sa.Column("installation_id", sa.String(64)), schema=schema)
        old = sa.table(MARKER_TABLE, sa.column("installation_id"), schema=schema)
        conn.execute(
            sa.update(old)
            .where(old.c.installation_id.is_(None))
            .values(installation_id=sa.bindparam("installation", installation))
        )

    def rekey_marker_table(
        self, conn: Connection, schema: str | None, shape: MarkerShape, installation: str
    ) -> None:
        """Bring a marker table of shape ``shape`` to the current one: backfill, then make
        ``installation_id`` NOT NULL and the key (installation id, subscription id). MariaDB
        does the key in one statement; SQLite, which alters no key in place, recreates the
        table."""
        from alembic.migration import MigrationContext  # only to alter a table
        from alembic.operations import Operations

        self.backfill_marker_table(conn, schema, shape, installation)
        ops = Operations(MigrationContext.configure(conn))
        ops.alter_column(
            MARKER_TABLE, "installation_id", existing_type=sa.String(64), nullable=False,
            schema=schema,
        )  # fmt: skip
        if shape.key:
            ops.drop_constraint(
                shape.key_name or "PRIMARY", MARKER_TABLE, type_="primary", schema=schema
            )
        ops.create_primary_key(MARKER_PK, MARKER_TABLE, list(MARKER_KEY), schema=schema)

    def read_marker(self, spec: TableSpec, subscription_id: int) -> DeliveryMarker | None:
        """The last delivery this installation committed to this subscription's target, if
        any (another installation's marker for the same subscription id is not it)."""
        installation = self._installation()
        md = sa.MetaData()
        marker = self._marker_table(md, spec.schema)
        with self.connect() as conn:
            inspector = sa.inspect(conn)
            if not inspector.has_table(MARKER_TABLE, spec.schema):
                return None
            columns = {c["name"].lower() for c in inspector.get_columns(MARKER_TABLE, spec.schema)}
            where = marker.c.subscription_id == subscription_id
            if "installation_id" in columns:
                # A row without an installation id is one of an upgrade cut short before its
                # backfill: this installation's, as the upgrade will make it (still keyed by
                # subscription alone, so it is the only row for the subscription).
                mine = sa.or_(
                    marker.c.installation_id == installation, marker.c.installation_id.is_(None)
                )
                where = sa.and_(mine, where)
            # else a marker table of an earlier version, not re-keyed yet: its rows are taken
            # to be this installation's, as ``upgrade_marker_table`` will make them.
            row = conn.execute(
                sa.select(marker.c.run_id, marker.c.watermark, marker.c.rows_merged).where(where)
            ).first()
        if row is None:
            return None
        return DeliveryMarker(subscription_id, row.run_id, row.watermark, row.rows_merged)

    def merge(
        self,
        spec: TableSpec,
        batches: Iterable[pa.RecordBatch],
        *,
        delete_missing: bool,
        marker: DeliveryMarker,
        on_rows: Callable[[int], None] | None = None,
        keep: pa.Table | None = None,
        part: int | None = None,
    ) -> int:
        """Load ``batches`` into ``spec`` by primary key, with the marker, in one transaction;
        return the number of rows loaded. ``delete_missing`` (snapshot mode) also deletes the
        target rows whose key is not among them, except the keys in ``keep`` (rows the source
        still has but this run does not deliver: quarantined ones keep their last good
        version). ``on_rows`` hears of each batch loaded. The marker is this connector's
        installation's (``installation``): another installation's markers are never touched.

        The exactly-once protocol, for every dialect: probe whether the target is empty;
        bulk-load the batches straight into it when it is (a first delivery: nothing to update
        or delete, and a staging copy would double the work), else into a session-private
        staging table, then upsert from it and, when asked, delete what it lacks; replace this
        installation's marker row for the subscription; commit. A crash before the commit
        leaves the target as it was; the crash points (``EXCHANGE_CRASH_AT``) mark each step.
        The target exists (``ensure_table``); a connector merges once (it lives for one
        delivery).

        ``part``: one key range of a split run. Its marker is a row of ``PART_TABLE`` (the run
        and the range) instead of the subscription's marker, which ``close_split`` writes once
        every range is in; ranges load side by side, so they never delete (``close_split``
        reconciles a snapshot's deletes once, by the keys of all ranges).
        """
        md = sa.MetaData()
        target = self.sa_table(spec, md)
        marker_t = self._marker_table(md, spec.schema)
        with self.merge_transaction(spec) as tx:
            into = target if tx.is_empty(target) else tx.create_staging(target)
            loaded = tx.load(into, (b for b in batches if b.num_rows), on_rows)
            crashpoint("merge:staged", self.node)
            if into is not target:
                tx.execute(self.upsert(target, into))
                crashpoint("merge:upserted", self.node)
                if delete_missing and part is None:
                    kept = self._kept_keys(tx, target, keep)
                    self.deleted = max(tx.execute(self.delete_missing(target, into, kept)), 0)
            if part is not None:
                part_t = self._part_table(md, spec.schema)
                values = self._part_values(marker, part, loaded)
                tx.execute(sa.insert(part_t).values(**values))
                crashpoint("merge:before-commit", self.node)
                tx.commit()
                return loaded
            tx.execute(
                sa.delete(marker_t).where(
                    marker_t.c.installation_id == self._installation(),
                    marker_t.c.subscription_id == marker.subscription_id,
                )
            )
            tx.execute(sa.insert(marker_t).values(**self.marker_values(spec, marker, loaded)))
            crashpoint("merge:before-commit", self.node)
            tx.commit()
        return loaded

    def _part_values(self, marker: DeliveryMarker, part: int, rows: int) -> dict[str, Any]:
        return {
            "installation_id": self._installation(),
            "subscription_id": marker.subscription_id,
            "run_id": marker.run_id,
            "part": part,
            "rows_merged": rows,
            "delivered_at": utcnow(),
        }

    def close_split(
        self,
        spec: TableSpec,
        *,
        marker: DeliveryMarker,
        keys: Iterable[pa.RecordBatch] | None,
        keep: pa.Table | None = None,
    ) -> int:
        """The last step of a split run for one subscription, once every range is in: delete
        the target rows whose key is not in ``keys`` (every range's keys: a snapshot's
        deletes; None: no deletes) nor in ``keep``, replace the subscription's marker by
        ``marker`` (its rows: the ranges' sum) and drop this installation's range markers of
        the subscription, in one transaction; return the rows the ranges merged. A crash
        before the commit leaves the ranges committed and this step to redo."""
        md = sa.MetaData()
        target = self.sa_table(spec, md)
        marker_t = self._marker_table(md, spec.schema)
        part_t = self._part_table(md, spec.schema)
        installation = self._installation()
        mine = sa.and_(
            part_t.c.installation_id == installation,
            part_t.c.subscription_id == marker.subscription_id,
        )
        self.deleted = 0
        with self.connect() as conn:  # the ranges' markers are committed already
            rows = conn.execute(
                sa.select(sa.func.coalesce(sa.func.sum(part_t.c.rows_merged), 0)).where(
                    mine, part_t.c.run_id == marker.run_id
                )
            ).scalar_one()
        with self.merge_transaction(spec) as tx:
            if keys is not None:
                names = [c.name for c in target.primary_key.columns]
                shape = sa.Table(
                    f"{target.name}_keys"[:56], sa.MetaData(),
                    *(sa.Column(n, target.c[n].type, primary_key=True) for n in names),
                )  # fmt: skip
                staged = tx.create_staging(shape)
                tx.load(staged, (b.select(names) for b in keys if b.num_rows), None)
                kept = self._kept_keys(tx, target, keep)
                self.deleted = max(tx.execute(self.delete_missing(target, staged, kept)), 0)
                crashpoint("merge:upserted", self.node)
            tx.execute(sa.delete(part_t).where(mine))
            tx.execute(
                sa.delete(marker_t).where(
                    marker_t.c.installation_id == installation,
                    marker_t.c.subscription_id == marker.subscription_id,
                )
            )
            tx.execute(sa.insert(marker_t).values(**self.marker_values(spec, marker, int(rows))))
            crashpoint("merge:before-commit", self.node)
            tx.commit()
        return int(rows)

    def _kept_keys(
        self, tx: MergeTransaction, target: sa.Table, keep: pa.Table | None
    ) -> sa.Table | None:
        """Stage the distinct, complete keys of ``keep`` (None when there are none)."""
        if keep is None or keep.num_rows == 0:
            return None
        names = [c.name for c in target.primary_key.columns]
        keys = keep.select(names).drop_null()  # a key with a NULL part matches no target row
        keys = keys.group_by(names).aggregate([]).select(names)  # duplicates: once each
        if keys.num_rows == 0:
            return None
        shape = sa.Table(
            f"{target.name}_keep"[:56], sa.MetaData(),
            *(sa.Column(n, target.c[n].type, primary_key=True) for n in names),
        )  # fmt: skip
        kept = tx.create_staging(shape)
        tx.load(kept, keys.to_batches(), None)
        return kept

    @abstractmethod
    def merge_transaction(self, spec: TableSpec) -> AbstractContextManager[MergeTransaction]:
        """The transaction one ``merge`` into ``spec`` runs in, on one session of the target.

        Leaving it without ``commit`` (an exception, or the process dying) rolls everything
        back. Failures surface as errors naming node and table (and row key where known).
        """

    def marker_values(self, spec: TableSpec, marker: DeliveryMarker, rows: int) -> dict[str, Any]:
        return {
            "installation_id": self._installation(),
            "subscription_id": marker.subscription_id,
            "run_id": marker.run_id,
            "target_table": spec.qualified,
            "watermark": marker.watermark,
            "rows_merged": rows,
            "delivered_at": utcnow(),
        }

    def upsert(self, target: sa.Table, staging: sa.Table) -> sa.Executable:
        """Insert staging rows into target, updating rows whose primary key exists."""
        raise NotImplementedError

    def explain_load_error(
        self, exc: sa.exc.DBAPIError, spec: TableSpec, batch: pa.RecordBatch
    ) -> Exception:
        """Turn a bulk-load failure into an error naming the field and row key where possible."""
        detail = redact(str(exc.orig).strip().splitlines()[0], self.url.password)
        index = self.failing_row(exc)
        where = f" row key {row_key(batch, index, spec.primary_key)}" if index is not None else ""
        return DataError(f"node {self.node!r} table {spec.qualified}{where}: {detail}")

    def failing_row(self, exc: sa.exc.DBAPIError) -> int | None:
        """0-based index in the batch of the row the database rejected, when it says."""
        return None

    def delete_missing(
        self, target: sa.Table, staging: sa.Table, kept: sa.Table | None = None
    ) -> sa.Executable:
        """Delete target rows whose primary key is neither staged nor kept (snapshot mode)."""
        pk = [target.c[c.name] for c in target.primary_key.columns]
        gone = ~sa.exists().where(sa.and_(*(staging.c[c.name] == c for c in pk)))
        if kept is not None:
            gone = sa.and_(gone, ~sa.exists().where(sa.and_(*(kept.c[c.name] == c for c in pk))))
        return sa.delete(target).where(gone)

    def positional_insert(self, staging: sa.Table, placeholder: Callable[[int], str]) -> str:
        """``INSERT INTO staging (cols) VALUES (?, ?, …)`` for a driver's executemany."""
        prep = self.engine.dialect.identifier_preparer
        cols = ", ".join(prep.quote(c.name) for c in staging.columns)
        marks = ", ".join(placeholder(i) for i in range(len(staging.columns)))
        # Only validated identifiers, quoted by the dialect, and placeholders: no values.
        return f"INSERT INTO {prep.format_table(staging)} ({cols}) VALUES ({marks})"  # noqa: S608

    def staging_copy(
        self, target: sa.Table, name: str, *, keyed: bool = True, **kw: Any
    ) -> sa.Table:
        """A same-shaped table object under another name (for DDL and statements).

        ``keyed`` keeps the primary key (for the anti-join of snapshot deletes); never an
        auto-increment, which would make MariaDB's LOAD DATA replace a key 0 by a new value.
        """
        md = sa.MetaData()
        cols = [
            sa.Column(c.name, c.type, primary_key=keyed and c.primary_key, autoincrement=False)
            for c in target.columns
        ]
        return sa.Table(name, md, *cols, **kw)


class MergeTransaction(ABC):
    """The operations ``DatabaseConnector.merge`` is written over: one transaction on one
    session of the target database. Each write path (a SQLAlchemy connection, ADBC, ...)
    implements them; the protocol itself, its order and its crash points live in ``merge``."""

    @abstractmethod
    def is_empty(self, table: sa.Table) -> bool:
        """Whether ``table`` holds no row."""

    @abstractmethod
    def create_staging(self, target: sa.Table) -> sa.Table:
        """A session-private staging table shaped like ``target`` (gone with the session)."""

    @abstractmethod
    def load(
        self,
        into: sa.Table,
        batches: Iterable[pa.RecordBatch],
        on_rows: Callable[[int], None] | None,
    ) -> int:
        """Bulk-load the (non-empty) ``batches`` into ``into``; the number of rows loaded."""

    @abstractmethod
    def execute(self, statement: sa.Executable) -> int:
        """Run one statement (upsert, delete, marker) in the transaction; the rows it
        changed (-1 when the driver cannot tell)."""

    @abstractmethod
    def commit(self) -> None:
        """Commit everything done in the transaction."""


class StagedMerge(DatabaseConnector):
    """``merge`` through a SQLAlchemy transaction (``ConnectionMerge``): the dialect supplies
    its staging table (``create_staging``) and its bulk path (``encode``, ``bulk_load``)."""

    @contextmanager
    def merge_transaction(self, spec: TableSpec) -> Iterator[MergeTransaction]:
        with self.connect() as conn, conn.begin() as transaction:
            yield ConnectionMerge(self, spec, conn, transaction)

    def encode(self, batch: pa.RecordBatch) -> Any:
        """Prepare a batch for ``bulk_load`` (runs ahead, in the prefetch thread)."""
        return None

    @abstractmethod
    def create_staging(self, conn: Connection, target: sa.Table) -> sa.Table:
        """Create a session-private staging table shaped like ``target``; return it."""

    @abstractmethod
    def bulk_load(
        self, conn: Connection, table: sa.Table, batch: pa.RecordBatch, payload: Any
    ) -> None:
        """Append ``batch`` (``payload`` is what ``encode`` made of it) to ``table``."""


class ConnectionMerge(MergeTransaction):
    """A merge on a SQLAlchemy connection: the statements through SQLAlchemy, the batches
    through the dialect's bulk path, each encoded ahead in the prefetch thread while the
    previous one loads. A load failure names the node, the table and, when the database says
    which row it rejected, its key."""

    def __init__(
        self,
        connector: StagedMerge,
        spec: TableSpec,
        conn: Connection,
        transaction: sa.RootTransaction,
    ):
        self.connector, self.spec, self.conn, self.transaction = connector, spec, conn, transaction

    def is_empty(self, table: sa.Table) -> bool:
        probe = sa.select(sa.literal(1)).select_from(table).limit(1)
        return self.conn.execute(probe).first() is None

    def create_staging(self, target: sa.Table) -> sa.Table:
        return self.connector.create_staging(self.conn, target)

    def load(
        self,
        into: sa.Table,
        batches: Iterable[pa.RecordBatch],
        on_rows: Callable[[int], None] | None,
    ) -> int:
        connector, loaded = self.connector, 0
        # bulk_load runs on the driver's own cursor (LOAD DATA, executemany): its errors are
        # the driver's, not SQLAlchemy's, and must be explained the same way.
        driver_error = self.conn.dialect.loaded_dbapi.Error
        for batch, payload in prefetch((b, connector.encode(b)) for b in batches):
            try:
                connector.bulk_load(self.conn, into, batch, payload)
            except sa.exc.DBAPIError as exc:
                raise connector.explain_load_error(exc, self.spec, batch) from None
            except driver_error as exc:
                wrapped = sa.exc.DBAPIError("bulk load", None, exc)
                raise connector.explain_load_error(wrapped, self.spec, batch) from None
            loaded += batch.num_rows
            if on_rows:
                on_rows(batch.num_rows)
        return loaded

    def execute(self, statement: sa.Executable) -> int:
        return int(self.conn.execute(statement).rowcount)

    def commit(self) -> None:
        self.transaction.commit()
