"""Quality rules: each one small class with the same shape, evaluated on an Arrow batch.

A rule returns a boolean mask, True where a row breaks it (null counts as not broken unless
the rule is about nulls). Adding a rule is adding a class here and a line in the compiler
(``quality.compile``). Each rule also says which of the six assessment dimensions (seed 004
§10) it measures, and which Great Expectations expectation, if any, checks the same thing.
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from exchange.catalog.model import Field
from quality.validators import VALIDATORS

# The six dimensions of seed 004 §10; rules feed four of them, runs the other two.
COMPLETENESS = "completeness"
NORMATIVITY = "normativity"
AUTHENTICITY = "authenticity"
CONSISTENCY = "consistency"

Expectation = dict[str, Any]


def _no_nulls(mask: pa.Array | pa.ChunkedArray) -> pa.BooleanArray:
    if isinstance(mask, pa.ChunkedArray):
        mask = mask.combine_chunks()
    return pc.fill_null(mask, False)


@dataclass(frozen=True)
class Rule(ABC):
    """One check on one field (``field``; cross-field rules name their other fields too)."""

    field: str

    name: str = "rule"
    dimension: ClassVar[str] = NORMATIVITY
    mask: ClassVar[str | None] = None  # "id" or "phone": how the field's values are masked

    @abstractmethod
    def violations(self, batch: pa.RecordBatch) -> pa.BooleanArray:
        """True for every row of ``batch`` that breaks the rule."""

    def reason(self) -> str:
        return f"{self.name}:{self.field}"

    def columns(self) -> tuple[str, ...]:
        """The fields whose values a bad row's excerpt shows."""
        return (self.field,)

    def expectation(self) -> Expectation | None:
        """The Great Expectations 1.x expectation (type and kwargs) checking the same rows."""
        return None


@dataclass(frozen=True)
class Required(Rule):
    """The field must have a value (declared ``nullable: false``, or part of the primary key)."""

    name: str = "required"
    dimension: ClassVar[str] = COMPLETENESS

    def violations(self, batch: pa.RecordBatch) -> pa.BooleanArray:
        return pc.is_null(batch.column(self.field))

    def expectation(self) -> Expectation | None:
        return {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": self.field}}


@dataclass(frozen=True)
class MaxLength(Rule):
    """Text longer than the declared length (in characters) would not fit the target column."""

    length: int = 0
    name: str = "max_length"

    def violations(self, batch: pa.RecordBatch) -> pa.BooleanArray:
        return _no_nulls(pc.greater(pc.utf8_length(batch.column(self.field)), self.length))

    def reason(self) -> str:
        return f"{self.name}({self.length}):{self.field}"

    def expectation(self) -> Expectation | None:
        return {
            "type": "expect_column_value_lengths_to_be_between",
            "kwargs": {"column": self.field, "max_value": self.length},
        }


@dataclass(frozen=True)
class Pattern(Rule):
    """Text must match a regular expression (RE2 syntax, searched: anchor it with ^ and $)."""

    pattern: str = ""
    name: str = "regex"

    def violations(self, batch: pa.RecordBatch) -> pa.BooleanArray:
        matched = pc.match_substring_regex(batch.column(self.field), self.pattern)
        return pc.invert(pc.fill_null(matched, True))

    def expectation(self) -> Expectation | None:
        return {
            "type": "expect_column_values_to_match_regex",
            "kwargs": {"column": self.field, "regex": self.pattern},
        }


@dataclass(frozen=True)
class InSet(Rule):
    """The value must be one of a code list (an ``enum``)."""

    values: tuple[Any, ...] = ()
    name: str = "enum"

    def violations(self, batch: pa.RecordBatch) -> pa.BooleanArray:
        col = batch.column(self.field)
        allowed = pa.array(list(self.values)).cast(col.type)
        return pc.invert(pc.fill_null(pc.is_in(col, value_set=allowed), True))

    def expectation(self) -> Expectation | None:
        return {
            "type": "expect_column_values_to_be_in_set",
            "kwargs": {"column": self.field, "value_set": list(self.values)},
        }


def _bound(value: float | str | dt.date | dt.datetime, typ: pa.DataType) -> pa.Scalar:
    """A catalog bound as a scalar of the column's type (dates from ISO text)."""
    if pa.types.is_date(typ):
        value = value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value)[:10])
        if isinstance(value, dt.datetime):
            value = value.date()
    elif pa.types.is_timestamp(typ):
        if not isinstance(value, dt.datetime):
            value = dt.datetime.fromisoformat(str(value))
    elif pa.types.is_decimal(typ):
        return pa.scalar(Decimal(str(value))).cast(typ)
    return pa.scalar(value).cast(typ)


@dataclass(frozen=True)
class Between(Rule):
    """A number or date within ``low`` .. ``high`` (inclusive; either may be open)."""

    low: float | str | None = None
    high: float | str | None = None
    name: str = "range"
    dimension: ClassVar[str] = AUTHENTICITY

    def violations(self, batch: pa.RecordBatch) -> pa.BooleanArray:
        col = batch.column(self.field)
        checks = []
        if self.low is not None:
            checks.append(_no_nulls(pc.less(col, _bound(self.low, col.type))))
        if self.high is not None:
            checks.append(_no_nulls(pc.greater(col, _bound(self.high, col.type))))
        if not checks:
            return pa.nulls(len(col), pa.bool_()).fill_null(False)
        return checks[0] if len(checks) == 1 else pc.or_(checks[0], checks[1])

    def reason(self) -> str:
        low = "" if self.low is None else self.low
        high = "" if self.high is None else self.high
        return f"{self.name}({low}..{high}):{self.field}"

    def expectation(self) -> Expectation | None:
        if isinstance(self.low, str) or isinstance(self.high, str):
            return None  # dates: GX compares them as text, not as dates
        kwargs: dict[str, Any] = {"column": self.field}
        if self.low is not None:
            kwargs["min_value"] = self.low
        if self.high is not None:
            kwargs["max_value"] = self.high
        return {"type": "expect_column_values_to_be_between", "kwargs": kwargs}


@dataclass(frozen=True)
class NotFuture(Rule):
    """A date or time after ``now`` (a registration dated tomorrow is not authentic)."""

    now: dt.datetime = dt.datetime(2000, 1, 1)
    name: str = "not_future"
    dimension: ClassVar[str] = AUTHENTICITY

    def violations(self, batch: pa.RecordBatch) -> pa.BooleanArray:
        col = batch.column(self.field)
        limit = self.now.date() if pa.types.is_date(col.type) else self.now
        return _no_nulls(pc.greater(col, _bound(limit, col.type)))


@dataclass(frozen=True)
class Validator(Rule):
    """A domain validator: check characters of codes, region codes, phone numbers."""

    kind: str = "uscc"
    today: dt.date | None = None
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", self.name or self.kind)

    @property
    def dimension(self) -> str:  # type: ignore[override]
        # Check characters and birth dates are about real entities; the rest about form.
        return AUTHENTICITY if self.kind in ("uscc", "resident_id") else NORMATIVITY

    @property
    def mask(self) -> str | None:  # type: ignore[override]
        return {"resident_id": "id", "mobile": "phone", "phone": "phone"}.get(self.kind)

    def violations(self, batch: pa.RecordBatch) -> pa.BooleanArray:
        col = batch.column(self.field)
        if self.kind == "resident_id":
            from quality.validators import invalid_resident_id

            return invalid_resident_id(col, self.today)
        return VALIDATORS[self.kind](col)

    def expectation(self) -> Expectation | None:
        from quality.validators import MOBILE_PATTERN, PHONE_PATTERN, REGION_CODE_PATTERN

        pattern = {
            "region_code": REGION_CODE_PATTERN,
            "mobile": MOBILE_PATTERN,
            "phone": PHONE_PATTERN,
        }.get(self.kind)
        if pattern is None:
            return None  # check characters: GX has no counterpart
        return {
            "type": "expect_column_values_to_match_regex",
            "kwargs": {"column": self.field, "regex": pattern},
        }


@dataclass(frozen=True)
class Unique(Rule):
    """No two rows share a value. Every row holding a duplicated value is flagged (as GX does).

    ``duplicates`` is the set of values seen more than once in the whole run: the validate
    step computes it from the staged column before the batches go through; unbound, the rule
    looks at the batch alone."""

    duplicates: pa.Array | None = field(default=None, compare=False, repr=False)
    name: str = "unique"
    dimension: ClassVar[str] = CONSISTENCY

    def over(self, column: pa.Array | pa.ChunkedArray) -> Unique:
        """This rule bound to the values duplicated in ``column``."""
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()  # hashing one array is twice as fast as chunks
        distinct = pc.unique(column)
        if len(distinct) - distinct.null_count == len(column) - column.null_count:
            return replace(self, duplicates=distinct.slice(0, 0))  # the usual case: none
        counts = pc.value_counts(column)
        dups = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
        return replace(self, duplicates=dups.drop_null())

    def violations(self, batch: pa.RecordBatch) -> pa.BooleanArray:
        col = batch.column(self.field)
        bound = self if self.duplicates is not None else self.over(col)
        assert bound.duplicates is not None
        return _no_nulls(pc.is_in(col, value_set=bound.duplicates))

    def expectation(self) -> Expectation | None:
        return {"type": "expect_column_values_to_be_unique", "kwargs": {"column": self.field}}


_OPS = {
    "<=": pc.less_equal,
    "<": pc.less,
    ">=": pc.greater_equal,
    ">": pc.greater,
    "==": pc.equal,
    "!=": pc.not_equal,
}


@dataclass(frozen=True)
class Compare(Rule):
    """A cross-field comparison every row must satisfy, e.g. ``established <= updated_at``.
    A row where either side is null is not judged."""

    op: str = "<="
    other: str = ""
    name: str = "compare"
    dimension: ClassVar[str] = CONSISTENCY

    def reason(self) -> str:
        return f"{self.name}({self.field}{self.op}{self.other}):{self.field}"

    def columns(self) -> tuple[str, ...]:
        return (self.field, self.other)

    def violations(self, batch: pa.RecordBatch) -> pa.BooleanArray:
        a, b = batch.column(self.field), batch.column(self.other)
        if a.type != b.type and pa.types.is_date(a.type) and pa.types.is_timestamp(b.type):
            a = pc.cast(a, b.type)
        elif a.type != b.type and pa.types.is_timestamp(a.type) and pa.types.is_date(b.type):
            b = pc.cast(b, a.type)
        return pc.invert(pc.fill_null(_OPS[self.op](a, b), True))

    def expectation(self) -> Expectation | None:
        if self.op == "==":
            return {
                "type": "expect_column_pair_values_to_be_equal",
                "kwargs": {
                    "column_A": self.field,
                    "column_B": self.other,
                    "ignore_row_if": "either_value_is_missing",
                },
            }
        if self.op == "!=":
            return None
        bigger, smaller = (
            (self.other, self.field) if self.op in ("<=", "<") else (self.field, self.other)
        )
        return {
            "type": "expect_column_pair_values_a_to_be_greater_than_b",
            "kwargs": {
                "column_A": bigger,
                "column_B": smaller,
                "or_equal": self.op in ("<=", ">="),
                "ignore_row_if": "either_value_is_missing",
            },
        }


def rules_for_fields(fields: Sequence[Field], primary_key: Sequence[str]) -> list[Rule]:
    """Conformance to the declared schema: required fields and text lengths."""
    rules: list[Rule] = []
    for f in fields:
        if not f.nullable or f.name in primary_key:
            rules.append(Required(field=f.name))
        if f.type in ("varchar", "char") and f.length:
            rules.append(MaxLength(field=f.name, length=f.length))
    return rules
