"""Cursor values as text (for plans, markers and the store) and back, by the cursor's type."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from exchange.catalog.model import Field


def encode(value: Any) -> str | None:
    """A cursor value as text that sorts and parses back exactly."""
    if value is None:
        return None
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value)


def decode(text: str | None, field: Field) -> Any:
    """The Python value of an encoded cursor, for a bound query parameter."""
    if text is None:
        return None
    if field.type == "timestamp":
        return dt.datetime.fromisoformat(text)
    if field.type == "date":
        return dt.date.fromisoformat(text)
    if field.type in ("smallint", "integer", "bigint"):
        return int(text)
    if field.type == "decimal":
        return Decimal(text)
    if field.type == "double":
        return float(text)
    return text
