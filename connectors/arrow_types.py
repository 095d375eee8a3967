"""Logical column types as Arrow types, and turning driver rows into Arrow batches.

Times: a ``timestamp`` is a wall-clock time in Asia/Shanghai (naive ``timestamp("us")``), a
``timestamptz`` an instant (``timestamp("us", tz="UTC")``). Conforming a driver's values to
the declared type is where zones are settled, once for every dialect: a value with a zone
declared ``timestamp`` becomes its Asia/Shanghai wall-clock time (never UTC); a value without
one declared ``timestamptz`` is a wall-clock time in the connector's ``naive_zone`` (Asia/
Shanghai, but UTC for MariaDB/MySQL, whose ``DATETIME(6)`` holds instants as UTC).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc

from connectors.cast_reasons import plain_reason
from connectors.columns import Column
from exchange.kernel.clock import TIMEZONE

#: How a ``timestamptz`` (an instant) travels: microseconds, UTC.
INSTANT = pa.timestamp("us", tz="UTC")
#: How a ``timestamp`` (a wall-clock time in Asia/Shanghai) travels: naive microseconds.
WALL_CLOCK = pa.timestamp("us")
# ISO text ending in a zone offset (a time first, so that a date's "-01" is not one).
_OFFSET = r"\d:\d\d(:\d\d(\.\d+)?)?\s*(Z|[+-]\d\d(:?\d\d)?)$"


def arrow_type(field: Column) -> pa.DataType:
    """The Arrow type that carries a column (a catalog field, say) through staging."""
    t = field.type
    if t == "smallint":
        return pa.int16()
    if t == "integer":
        return pa.int32()
    if t == "bigint":
        return pa.int64()
    if t == "decimal":
        return pa.decimal128(field.precision or 38, field.scale or 0)
    if t == "double":
        return pa.float64()
    if t in ("varchar", "char", "text"):
        return pa.string()
    if t == "date":
        return pa.date32()
    if t == "timestamp":
        return WALL_CLOCK
    if t == "timestamptz":
        return INSTANT
    if t == "boolean":
        return pa.bool_()
    raise ValueError(f"unknown logical type {t!r}")


def arrow_schema(fields: Sequence[Column]) -> pa.Schema:
    """The staging schema for these fields (nullability is checked by validation, not Arrow)."""
    return pa.schema([pa.field(f.name, arrow_type(f)) for f in fields])


class ConversionFailed(Exception):
    """A column's values do not convert to the declared type; ``index`` is the first bad row."""

    def __init__(self, field: str, index: int, value: Any, reason: str):
        self.field, self.index, self.value, self.reason = field, index, value, reason
        self.key: dict[str, Any] = {}  # the failing row's values, filled in by the reader
        super().__init__(f"{field}: {reason}")


def _first_bad(
    values: Sequence[Any], typ: pa.DataType, naive_zone: str = TIMEZONE
) -> tuple[int, Any, str]:
    # Slow path, only taken once a column already failed to convert: find the culprit.
    for i, v in enumerate(values):
        try:
            _convert([v], typ, naive_zone)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            return i, v, plain_reason(typ, v, str(exc).splitlines()[0])
    return 0, values[0] if values else None, "cannot convert"


def to_time(col: pa.Array, typ: pa.DataType, naive_zone: str = TIMEZONE) -> pa.Array:
    """``col`` (timestamps with or without a zone, ISO text, dates) as ``typ``: a naive
    timestamp holds Asia/Shanghai wall-clock time, an aware one the instant. Naive values
    bound for an instant are wall-clock times in ``naive_zone``."""
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        col = _parse_times(col, naive_zone)
    elif pa.types.is_date(col.type):
        col = pc.cast(col, WALL_CLOCK)  # midnight, wall-clock
    if not pa.types.is_timestamp(col.type):
        return pc.cast(col, typ)
    if typ.tz is None and col.type.tz is not None:
        # An instant read as a wall-clock time: Asia/Shanghai's, never UTC's.
        col = pc.local_timestamp(pc.cast(col, pa.timestamp(col.type.unit, tz=TIMEZONE)))
    elif typ.tz is not None and col.type.tz is None:
        col = pc.assume_timezone(col, naive_zone)
    return pc.cast(col, typ)


def _parse_times(col: pa.Array, naive_zone: str) -> pa.Array:
    """ISO text as timestamps: naive when no value has an offset, else instants (UTC)."""
    zoned = pc.match_substring_regex(col, _OFFSET)
    if not pc.any(zoned).as_py():
        return pc.cast(col, WALL_CLOCK)
    if pc.all(pc.fill_null(zoned, True)).as_py():
        return pc.cast(col, INSTANT)
    zoned = pc.fill_null(zoned, False)
    naive = pc.assume_timezone(pc.cast(pc.if_else(zoned, None, col), WALL_CLOCK), naive_zone)
    return pc.if_else(
        zoned, pc.cast(pc.if_else(zoned, col, None), INSTANT), pc.cast(naive, INSTANT)
    )


def _python_times(values: Sequence[Any], typ: pa.DataType, naive_zone: str) -> pa.Array:
    """A driver's datetimes (aware or naive), dates or text as ``typ`` (see ``to_time``)."""
    if any(isinstance(v, dt.datetime) and v.tzinfo is not None for v in values):
        zone = ZoneInfo(naive_zone)
        values = [
            v.replace(tzinfo=zone) if isinstance(v, dt.datetime) and v.tzinfo is None else v
            for v in values
        ]
        return to_time(pa.array(values, type=INSTANT), typ, naive_zone)
    try:
        raw = pa.array(values, type=WALL_CLOCK)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        raw = pa.array(values)
    return to_time(raw, typ, naive_zone)


def instant_text(arr: pa.Array) -> pa.Array:
    """Instants as ISO-8601 text in UTC with the offset: ``2026-11-30 16:30:00.000000+00:00``
    (how SQLite keeps a ``timestamptz``, and how Oracle's is bound)."""
    utc = pc.cast(pc.cast(arr, INSTANT), WALL_CLOCK)  # the same microseconds, naive
    return pc.binary_join_element_wise(pc.cast(utc, pa.string()), pa.scalar("+00:00"), "")


def _convert(values: Sequence[Any], typ: pa.DataType, naive_zone: str = TIMEZONE) -> pa.Array:
    if pa.types.is_timestamp(typ):
        return _python_times(values, typ, naive_zone)
    if pa.types.is_integer(typ) and any(isinstance(v, float) for v in values):
        # pa.array(floats, type=int) truncates 2.5 to 2 without a word (a SQLite REAL in an
        # integer field); the safe cast keeps 2.0 and refuses the fraction.
        return pc.cast(pa.array(values), typ)
    try:
        return pa.array(values, type=typ)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # Drivers without native types (SQLite) hand over text or floats: let Arrow parse them.
        raw = pa.array(values)
        if pa.types.is_decimal(typ) and pa.types.is_floating(raw.type):
            # A REAL column holding money: round to the declared scale, as the source meant.
            return pc.cast(pc.round(raw, typ.scale), typ, safe=False)
        return pc.cast(raw, typ)


def conform(batch: pa.RecordBatch, schema: pa.Schema, naive_zone: str = TIMEZONE) -> pa.RecordBatch:
    """Cast an Arrow-native driver's batch to the staging schema (columns by name); times
    as ``to_time`` settles them (``naive_zone``: the zone of naive values bound for an instant).

    Raises ConversionFailed naming the field and the first row whose value does not fit.
    """
    arrays = []
    for fld in schema:
        col = batch.column(fld.name)
        if isinstance(col.type, pa.BaseExtensionType):
            col = col.storage  # e.g. PostgreSQL numeric, handed over as opaque text
        if col.type != fld.type:
            try:
                col = _cast(col, fld.type, naive_zone)
            except _ARROW_ERRORS:
                for i in range(len(col)):  # slow path, once a column failed: find the row
                    try:
                        _cast(col.slice(i, 1), fld.type, naive_zone)
                    except _ARROW_ERRORS as exc:
                        value = col[i].as_py()
                        reason = plain_reason(fld.type, value, str(exc).splitlines()[0])
                        raise ConversionFailed(fld.name, i, value, reason) from None
                raise
        arrays.append(col)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError)


def _cast(col: pa.Array, typ: pa.DataType, naive_zone: str = TIMEZONE) -> pa.Array:
    if pa.types.is_timestamp(typ):
        return to_time(col, typ, naive_zone)
    if pa.types.is_string(col.type) and pa.types.is_integer(typ):
        # Numeric text ('2.00') reaches integers through a decimal: a fraction or an
        # overflow is an error, never a silent truncation.
        col = pc.cast(col, pa.decimal128(38, 9))
    return pc.cast(col, typ)


def rows_to_batch(
    rows: Sequence[Sequence[Any]], schema: pa.Schema, naive_zone: str = TIMEZONE
) -> pa.RecordBatch:
    """Column-wise conversion of driver rows (times: ``to_time``); raises ConversionFailed
    naming field and row."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
    arrays = []
    for values, fld in zip(columns, schema, strict=True):
        try:
            arrays.append(_convert(values, fld.type, naive_zone))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            index, value, reason = _first_bad(values, fld.type, naive_zone)
            raise ConversionFailed(fld.name, index, value, reason) from None
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
