"""Quality rules: each one small class with the same shape, evaluated on an Arrow batch.

A rule returns a boolean mask, True where a row breaks it (null counts as not broken unless
the rule is about nulls). Adding a rule is adding a class here and a line in the compiler
(``quality.compile``). Each rule also says which of the six assessment dimensions (document 004
§10) it measures, and which Great Expectations expectation, if any, checks the same thing.
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from exchange.catalog.model import Field
from exchange.kernel.clock import SHANGHAI, TIMEZONE
from exchange.kernel.text import INVALID_UTF8_MARK, LONE_SURROGATE_MARK
from quality.key_hash import column_hash, key_hashes, repeated_hashes
from quality.mask import MASK_OF_VALIDATOR, excerpt
from quality.validators import VALIDATORS

# The six dimensions of document 004 §10; rules feed four of them, runs the other two.
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

    def shown(self, batch: pa.RecordBatch, rows: pa.Array, masks: dict[str, str]) -> pa.Array:
        """What the reason of each bad row (``rows``: their indices) shows after the '=':
        the excerpts of ``columns()`` ('a vs b'), ID and phone numbers masked (``masks``)."""
        parts = [excerpt(batch.column(c).take(rows), masks.get(c)) for c in self.columns()]
        return parts[0] if len(parts) == 1 else pc.binary_join_element_wise(*parts, " vs ")

    def expectation(self) -> Expectation | None:
        """The Great Expectations 1.x expectation (type and kwargs) checking the same rows."""
        return None


@dataclass(frozen=True)
class Required(Rule):
    """The field must have a value (declared ``nullable: false``; key parts: ``NullKey``)."""

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
        if typ.tz is not None and value.tzinfo is None:
            value = value.replace(tzinfo=SHANGHAI)  # a bound without a zone: Shanghai time
        elif typ.tz is None and value.tzinfo is not None:
            value = value.astimezone(SHANGHAI).replace(tzinfo=None)
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
        return MASK_OF_VALIDATOR.get(self.kind)

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
    step binds it (``over_run``: the staged column a batch at a time, in bounded memory)
    before the batches go through; unbound, the rule looks at the batch alone."""

    duplicates: pa.Array | None = field(default=None, compare=False, repr=False)
    name: str = "unique"
    dimension: ClassVar[str] = CONSISTENCY

    def over(self, column: pa.Array | pa.ChunkedArray) -> Unique:
        """This rule bound to the values duplicated in ``column`` (held in memory whole)."""
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()  # hashing one array is twice as fast as chunks
        distinct = pc.unique(column)
        if len(distinct) - distinct.null_count == len(column) - column.null_count:
            return replace(self, duplicates=distinct.slice(0, 0))  # the usual case: none
        counts = pc.value_counts(column)
        dups = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
        return replace(self, duplicates=dups.drop_null())

    def over_run(
        self, batches: Callable[[], Iterable[pa.RecordBatch]], *, spill: Path | None = None
    ) -> Unique:
        """This rule bound to the values duplicated in the run, ``batches()`` reading its
        column, in bounded memory: the values' 64-bit hashes (spilled to partition files in
        ``spill``) show which repeat; only the values of a repeated hash are then read again
        and counted by value, so a collision never flags a value seen once."""

        def valid(b: pa.RecordBatch) -> tuple[pa.Array, np.ndarray]:
            col = b.column(self.field)
            present = pc.is_valid(col).to_numpy(zero_copy_only=False)
            return col, present

        typ = pa.null()

        def hashes() -> Iterator[np.ndarray]:
            nonlocal typ
            for b in batches():
                col, present = valid(b)
                typ = col.type
                yield column_hash(col)[present]

        repeated = repeated_hashes(hashes(), spill)
        if not len(repeated):
            return replace(self, duplicates=pa.array([], typ))  # the usual case: none
        candidates = []
        for b in batches():
            col, present = valid(b)
            suspect = _member(column_hash(col), repeated) & present
            if suspect.any():
                candidates.append(col.filter(pa.array(suspect)))
        counts = pc.value_counts(pa.chunked_array(candidates).combine_chunks())
        dups = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
        return replace(self, duplicates=dups.drop_null())

    def violations(self, batch: pa.RecordBatch) -> pa.BooleanArray:
        col = batch.column(self.field)
        bound = self if self.duplicates is not None else self.over(col)
        assert bound.duplicates is not None
        return _no_nulls(pc.is_in(col, value_set=bound.duplicates))

    def expectation(self) -> Expectation | None:
        return {"type": "expect_column_values_to_be_unique", "kwargs": {"column": self.field}}


_INSTANT = pa.timestamp("us", tz="UTC")


def _as_time(col: pa.Array, typ: pa.DataType) -> pa.Array:
    """Dates or wall-clock times (Asia/Shanghai) as ``typ``; an instant stays the instant."""
    if pa.types.is_date(col.type):
        col = pc.cast(col, pa.timestamp("us"))
    if typ.tz is not None and col.type.tz is None:
        col = pc.assume_timezone(col, TIMEZONE)
    elif typ.tz is None and col.type.tz is not None:
        col = pc.local_timestamp(pc.cast(col, pa.timestamp(col.type.unit, tz=TIMEZONE)))
    return pc.cast(col, typ)


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
            a = _as_time(a, b.type)
        elif a.type != b.type and pa.types.is_timestamp(a.type) and pa.types.is_date(b.type):
            b = _as_time(b, a.type)
        elif a.type != b.type and pa.types.is_timestamp(a.type) and pa.types.is_timestamp(b.type):
            # A wall-clock time against an instant: both as instants (Shanghai wall time).
            a, b = _as_time(a, _INSTANT), _as_time(b, _INSTANT)
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


@dataclass(frozen=True)
class NullKey(Required):
    """A primary-key part without a value: the row cannot be merged by key (``null_key``).
    It replaces ``required`` on key fields, so a missing key is flagged once."""

    name: str = "null_key"


KEY_SEPARATOR = "|"  # between the parts of a composite key, as the quarantine index writes it
_ROW = "__exchange_row__"


def _key_columns(batch: pa.RecordBatch | pa.Table, keys: Sequence[str]) -> pa.Table:
    part = batch.select(list(keys))
    return part if isinstance(part, pa.Table) else pa.Table.from_batches([part])


def _complete(batch: pa.RecordBatch | pa.Table, keys: Sequence[str]) -> np.ndarray:
    """True for the rows with a value in every key part (the others are ``null_key``)."""
    ok = np.ones(batch.num_rows, dtype=bool)
    for k in keys:
        col = batch.column(k)
        if col.null_count:
            ok &= pc.is_valid(col).to_numpy(zero_copy_only=False)
    return ok


def _member(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """``values`` found in the sorted uint64 array ``sorted_set`` (binary search, vectorised)."""
    if not len(sorted_set):
        return np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_set, values), len(sorted_set) - 1)
    return sorted_set[at] == values


@dataclass(frozen=True)
class DuplicateKey(Rule):
    """No two rows of a run share a primary key (``keys``, composite or not): every row of a
    duplicated key is flagged (as ``unique`` does), so no subscriber gets either version and
    every dialect's target ends the same. Rows with a null key part are ``null_key``'s.

    ``over`` binds the rule to the whole run in bounded memory: the keys' 64-bit hashes
    (``quality.key_hash``), spilled to partition files; the hashes that repeat are confirmed
    by comparing the rows that carry them by value (a hash collision never quarantines a
    row), leaving ``duplicates``, the keys that really occur more than once, and their
    hashes. Unbound, the rule looks at the batch alone."""

    keys: tuple[str, ...] = ()
    duplicates: pa.Table | None = field(default=None, compare=False, repr=False)
    hashes: np.ndarray | None = field(default=None, compare=False, repr=False)
    name: str = "duplicate_key"
    dimension: ClassVar[str] = CONSISTENCY

    def __post_init__(self) -> None:
        if not self.keys:
            object.__setattr__(self, "keys", (self.field,))

    def reason(self) -> str:
        return f"{self.name}:{','.join(self.keys)}"

    def columns(self) -> tuple[str, ...]:
        return self.keys

    def shown(self, batch: pa.RecordBatch, rows: pa.Array, masks: dict[str, str]) -> pa.Array:
        parts = [excerpt(batch.column(k).take(rows), masks.get(k)) for k in self.keys]
        return parts[0] if len(parts) == 1 else pc.binary_join_element_wise(*parts, KEY_SEPARATOR)

    def over(
        self,
        batches: Callable[[], Iterable[pa.RecordBatch | pa.Table]],
        *,
        spill: Path | None = None,
    ) -> DuplicateKey:
        """This rule bound to the keys duplicated in the run; ``batches()`` reads the run's
        key columns (twice, the second time only when some hash repeats). With a ``spill``
        directory the hashes go to partition files there, so memory stays bounded."""

        def hashes() -> Iterator[np.ndarray]:
            for b in batches():
                yield key_hashes(b, self.keys)[_complete(b, self.keys)]

        repeated = repeated_hashes(hashes(), spill)
        if not len(repeated):
            return replace(self, duplicates=None, hashes=repeated)  # the usual case: none
        # Only the rows whose hash repeats, by value: duplicates, or a collision.
        candidates = []
        for b in batches():
            suspect = _member(key_hashes(b, self.keys), repeated) & _complete(b, self.keys)
            if suspect.any():
                candidates.append(_key_columns(b, self.keys).filter(pa.array(suspect)))
        table = pa.concat_tables(candidates)
        counts = table.group_by(list(self.keys)).aggregate([([], "count_all")])
        dups = counts.filter(pc.greater(counts.column("count_all"), 1)).select(list(self.keys))
        return replace(self, duplicates=dups, hashes=np.unique(key_hashes(dups, self.keys)))

    def violations(self, batch: pa.RecordBatch) -> pa.BooleanArray:
        bound = self if self.hashes is not None else self.over(lambda: [batch])
        assert bound.hashes is not None
        n = batch.num_rows
        if not len(bound.hashes) or bound.duplicates is None:
            return pa.array(np.zeros(n, dtype=bool))
        suspect = _member(key_hashes(batch, self.keys), bound.hashes) & _complete(batch, self.keys)
        if not suspect.any():
            return pa.array(np.zeros(n, dtype=bool))
        at = np.flatnonzero(suspect)
        rows = _key_columns(batch, self.keys).take(pa.array(at))
        rows = rows.append_column(_ROW, pa.array(at))
        found = rows.join(bound.duplicates, keys=list(self.keys), join_type="left semi")
        mask = np.zeros(n, dtype=bool)
        mask[found.column(_ROW).to_numpy()] = True
        return pa.array(mask)

    def expectation(self) -> Expectation | None:
        if len(self.keys) == 1:
            return {"type": "expect_column_values_to_be_unique", "kwargs": {"column": self.field}}
        return {
            "type": "expect_compound_columns_to_be_unique",
            "kwargs": {"column_list": list(self.keys), "ignore_row_if": "any_value_is_missing"},
        }


# A NUL alone, or a NUL that marks what the source driver could not decode as UTF-8
# (exchange.kernel.text): the marks first, so that they are named as what they mean.
_TEXT_FAULTS = (
    (INVALID_UTF8_MARK, "invalid UTF-8"),
    (LONE_SURROGATE_MARK, "lone surrogate"),
    ("\x00", "contains NUL"),
)


def _has_zero_byte(col: pa.Array) -> bool:
    """Whether the text's bytes hold a zero anywhere: one vectorised pass (numpy's min over
    the value buffer), against Arrow's per-value substring search, ten times slower."""
    offsets = col.buffers()[1]
    data = col.buffers()[2]
    if data is None or not len(col):
        return False
    width = 8 if pa.types.is_large_string(col.type) else 4
    ends = np.frombuffer(offsets, dtype=np.int64 if width == 8 else np.int32)
    start, end = int(ends[col.offset]), int(ends[col.offset + len(col)])
    values = np.frombuffer(data, dtype=np.uint8)[start:end]
    return bool(len(values)) and int(values.min()) == 0


@dataclass(frozen=True)
class Text(Rule):
    """Text every target can hold, on every text field, always: no NUL character (PostgreSQL
    text cannot hold one; it would fail that subscriber on every run), nothing the source
    driver could not decode as UTF-8 (invalid bytes, lone surrogates: NUL marks, see
    ``exchange.kernel.text``). Every other Unicode scalar value is held by every target
    (UTF-8 databases, MariaDB utf8mb4, Oracle AL32UTF8): supplementary characters and the
    noncharacters U+FFFE/U+FFFF are delivered as the source has them. The reason says what
    is wrong, never the value (a NUL in the quarantine index would fail it too)."""

    name: str = "text"

    def violations(self, batch: pa.RecordBatch) -> pa.BooleanArray:
        col = batch.column(self.field)
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            col = pc.cast(col, pa.string())  # a column of nulls only, say
        if not _has_zero_byte(col):
            return pa.array(np.zeros(len(col), dtype=bool))  # the usual case, found at once
        return _no_nulls(pc.match_substring(col, "\x00"))

    def shown(self, batch: pa.RecordBatch, rows: pa.Array, masks: dict[str, str]) -> pa.Array:
        values = batch.column(self.field).take(rows)
        out = pa.nulls(len(values), pa.string())
        for mark, what in reversed(_TEXT_FAULTS):  # the first fault listed wins
            found = _no_nulls(pc.match_substring(values, mark))
            out = pc.if_else(found, pa.scalar(what), out)
        return out

    def expectation(self) -> Expectation | None:
        return {
            "type": "expect_column_values_to_not_match_regex",
            "kwargs": {"column": self.field, "regex": "\\x00"},
        }


def rules_for_fields(fields: Sequence[Field], primary_key: Sequence[str]) -> list[Rule]:
    """Conformance to the declared schema: required fields, key parts present, text lengths,
    text every target can hold; and, with a primary key, no key twice in a run. Always on."""
    rules: list[Rule] = []
    for f in fields:
        if f.name in primary_key:
            rules.append(NullKey(field=f.name))
        elif not f.nullable:
            rules.append(Required(field=f.name))
        if f.type in ("varchar", "char") and f.length:
            rules.append(MaxLength(field=f.name, length=f.length))
        if f.type in ("varchar", "char", "text"):
            rules.append(Text(field=f.name))
    if primary_key:
        rules.append(DuplicateKey(field=primary_key[0], keys=tuple(primary_key)))
    return rules
