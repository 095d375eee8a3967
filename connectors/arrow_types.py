"""Logical column types as Arrow types, and turning driver rows into Arrow batches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from connectors.columns import Column


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
        return pa.timestamp("us")
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


def _first_bad(values: Sequence[Any], typ: pa.DataType) -> tuple[int, Any, str]:
    # Slow path, only taken once a column already failed to convert: find the culprit.
    for i, v in enumerate(values):
        try:
            _convert([v], typ)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            return i, v, str(exc).splitlines()[0]
    return 0, values[0] if values else None, "cannot convert"


def _convert(values: Sequence[Any], typ: pa.DataType) -> pa.Array:
    try:
        return pa.array(values, type=typ)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # Drivers without native types (SQLite) hand over text or floats: let Arrow parse them.
        raw = pa.array(values)
        if pa.types.is_decimal(typ) and pa.types.is_floating(raw.type):
            # A REAL column holding money: round to the declared scale, as the source meant.
            return pc.cast(pc.round(raw, typ.scale), typ, safe=False)
        return pc.cast(raw, typ)


def conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """Cast an Arrow-native driver's batch to the staging schema (columns by name).

    Raises ConversionFailed naming the field and the first row whose value does not fit.
    """
    arrays = []
    for fld in schema:
        col = batch.column(fld.name)
        if isinstance(col.type, pa.BaseExtensionType):
            col = col.storage  # e.g. PostgreSQL numeric, handed over as opaque text
        if col.type != fld.type:
            try:
                col = _cast(col, fld.type)
            except _ARROW_ERRORS:
                for i in range(len(col)):  # slow path, once a column failed: find the row
                    try:
                        _cast(col.slice(i, 1), fld.type)
                    except _ARROW_ERRORS as exc:
                        raise ConversionFailed(
                            fld.name, i, col[i].as_py(), str(exc).splitlines()[0]
                        ) from None
                raise
        arrays.append(col)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError)


def _cast(col: pa.Array, typ: pa.DataType) -> pa.Array:
    if pa.types.is_string(col.type) and pa.types.is_integer(typ):
        # Numeric text ('2.00') reaches integers through a decimal: a fraction or an
        # overflow is an error, never a silent truncation.
        col = pc.cast(col, pa.decimal128(38, 9))
    return pc.cast(col, typ)


def rows_to_batch(rows: Sequence[Sequence[Any]], schema: pa.Schema) -> pa.RecordBatch:
    """Column-wise conversion of driver rows; raises ConversionFailed naming field and row."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
    arrays = []
    for values, fld in zip(columns, schema, strict=True):
        try:
            arrays.append(_convert(values, fld.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            index, value, reason = _first_bad(values, fld.type)
            raise ConversionFailed(fld.name, index, value, reason) from None
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
