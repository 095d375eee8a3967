"""Why a source value does not fit its declared type, in the catalog's words rather than
Arrow's: ``not an integer`` for ``'abc'`` in an ``integer`` field, where Arrow, which parses
numeric text through a decimal first, says "not a valid decimal128 number"."""

from __future__ import annotations

import decimal
from typing import Any

import pyarrow as pa

#: Arrow's integer widths as the catalog names them.
_INTEGER_NAMES = {8: "tinyint", 16: "smallint", 32: "integer", 64: "bigint"}


def _number(value: Any) -> decimal.Decimal | None:
    """``value`` as a finite decimal number, or None when it is not one."""
    if isinstance(value, bool):
        return None
    try:
        number = decimal.Decimal(str(value).strip())
    except decimal.InvalidOperation:
        return None
    return number if number.is_finite() else None


def _integer(typ: pa.DataType, value: Any) -> str | None:
    number = _number(value)
    if number is None:
        return "not an integer"
    if number != number.to_integral_value():
        return "not an integer (it has a fraction)"
    bits = typ.bit_width
    low, high = (
        (0, 2**bits - 1)
        if pa.types.is_unsigned_integer(typ)
        else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    )
    if not low <= number <= high:
        return f"out of range for {_INTEGER_NAMES.get(bits, 'an integer')} ({low:,} to {high:,})"
    return None


def _decimal(typ: pa.Decimal128Type, value: Any) -> str | None:
    number = _number(value)
    declared = f"decimal({typ.precision},{typ.scale})"
    if number is None:
        return "not a number"
    exponent = number.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > typ.scale:
        return f"has more than {typ.scale} digits after the point ({declared})"
    if abs(number) >= decimal.Decimal(10) ** (typ.precision - typ.scale):
        return f"has more than {typ.precision - typ.scale} digits before the point ({declared})"
    return None


def plain_reason(typ: pa.DataType, value: Any, arrow_reason: str) -> str:
    """Why ``value`` does not convert to ``typ``, in words (Arrow's own when none fit better)."""
    reason: str | None = None
    if pa.types.is_integer(typ):
        reason = _integer(typ, value)
    elif pa.types.is_decimal(typ):
        reason = _decimal(typ, value)
    elif pa.types.is_floating(typ):
        reason = "not a number" if _number(value) is None else None
    elif pa.types.is_date(typ):
        reason = "not a date (YYYY-MM-DD)"
    elif pa.types.is_timestamp(typ):
        reason = "not a time (ISO 8601, e.g. 2026-09-30 10:00:00)"
    elif pa.types.is_boolean(typ):
        reason = "not true or false"
    return reason or arrow_reason
