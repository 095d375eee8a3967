"""Cursor values as text (for plans, markers and the store) and back, by the cursor's type."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from exchange.catalog.model import Field
from exchange.kernel.clock import SHANGHAI
from exchange.kernel.text import a_or_an


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
    if field.type == "timestamptz":
        # Encoded with its offset; a watermark kept before the field was declared an instant
        # is a wall-clock time in Asia/Shanghai.
        value = dt.datetime.fromisoformat(text)
        return value if value.tzinfo is not None else value.replace(tzinfo=SHANGHAI)
    if field.type == "date":
        return dt.date.fromisoformat(text)
    if field.type in ("smallint", "integer", "bigint"):
        return int(text)
    if field.type == "decimal":
        return Decimal(text)
    if field.type == "double":
        return float(text)
    return text


_LAG_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def lag_amount(lag: str | int) -> dt.timedelta | int:
    """A resource's ``cursor_lag``: a duration (``"10m"``, ``"2h"``, ``"1d"``, ``"0"``) for
    a time cursor, a whole number for a numeric one."""
    if isinstance(lag, int):
        return lag
    if lag in ("", "0"):
        return dt.timedelta(0)
    return dt.timedelta(**{_LAG_UNITS[lag[-1]]: int(lag[:-1])})


def below(text: str | None, field: Field, lag: str | int) -> Any:
    """The cursor value ``lag`` below the encoded ``text`` (where a look-back window starts:
    rows from there up are read again); ``decode(text)`` itself when there is no lag. A date
    cursor moves back by whole days (a lag of a part of a day: one day)."""
    value = decode(text, field)
    amount = lag_amount(lag)
    if value is None or not amount:
        return value
    if isinstance(amount, int):
        return value - amount
    if isinstance(value, dt.datetime):
        return value - amount
    if isinstance(value, dt.date):
        days = -(-amount // dt.timedelta(days=1))  # rounded up
        return value - dt.timedelta(days=days)
    raise ValueError(f"cursor {field.name}: {a_or_an(field.type)} cursor takes no time lag {lag!r}")
