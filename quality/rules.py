"""Quality rules: each one small class with the same shape, evaluated on an Arrow batch.

A rule returns a boolean mask, True where a row breaks it (null counts as not broken unless
the rule is about nulls). Adding a rule is adding a class here and a line in the compiler.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from exchange.catalog.model import Field


@dataclass(frozen=True)
class Rule(ABC):
    """One check on one field (or on the row, when ``field`` is None)."""

    field: str

    name: str = "rule"

    @abstractmethod
    def violations(self, batch: pa.RecordBatch) -> pa.BooleanArray:
        """True for every row of ``batch`` that breaks the rule."""

    def reason(self) -> str:
        return f"{self.name}:{self.field}"


@dataclass(frozen=True)
class Required(Rule):
    """The field must have a value (declared ``nullable: false``, or part of the primary key)."""

    name: str = "required"

    def violations(self, batch: pa.RecordBatch) -> pa.BooleanArray:
        return pc.is_null(batch.column(self.field))


@dataclass(frozen=True)
class MaxLength(Rule):
    """Text longer than the declared length (in characters) would not fit the target column."""

    length: int = 0
    name: str = "max_length"

    def violations(self, batch: pa.RecordBatch) -> pa.BooleanArray:
        too_long = pc.greater(pc.utf8_length(batch.column(self.field)), self.length)
        return pc.fill_null(too_long, False)

    def reason(self) -> str:
        return f"{self.name}({self.length}):{self.field}"


def rules_for_fields(fields: Sequence[Field], primary_key: Sequence[str]) -> list[Rule]:
    """Conformance to the declared schema: required fields and text lengths."""
    rules: list[Rule] = []
    for f in fields:
        if not f.nullable or f.name in primary_key:
            rules.append(Required(field=f.name))
        if f.type in ("varchar", "char") and f.length:
            rules.append(MaxLength(field=f.name, length=f.length))
    return rules
