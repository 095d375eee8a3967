"""Quality rules as the catalog declares them: per field (``rules:``) and per resource
(``quality:``). Plain data here; ``quality.compile`` turns them into rules on Arrow batches.

    fields:
      - {name: uscc, type: char, length: 18, rules: {validator: uscc, unique: true}}
      - {name: established, type: date, rules: {min: "1949-10-01", not_future: true}}
      - {name: status, type: smallint, rules: {enum: [1, 2, 3, 4]}}
    quality:
      max_bad_ratio: 0.05            # more bad rows than this share: the run delivers nothing
      row_count: {min: 1000}         # on full extracts: fewer/more rows hold the delivery back
      freshness: cycle               # newest cursor older than the update cycle allows: stale
      compare: ["established <= updated_at"]
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from exchange.kernel.text import a_or_an

_NAME = r"([A-Za-z_][A-Za-z0-9_]{0,62})"
COMPARE_RE = re.compile(rf"^\s*{_NAME}\s*(<=|>=|==|!=|<|>)\s*{_NAME}\s*$")
FRESHNESS_RE = re.compile(r"^(cycle|[1-9][0-9]*[mhd])$")
_TEXT = ("varchar", "char", "text")
_NUMERIC = ("smallint", "integer", "bigint", "decimal", "double")
_TEMPORAL = ("date", "timestamp", "timestamptz")


@dataclass(frozen=True)
class FieldRules:
    """What one field's values must satisfy besides its declared type and length."""

    regex: str | None = None
    enum: tuple[Any, ...] | None = None
    min: float | str | None = None
    max: float | str | None = None
    not_future: bool = False
    validator: str | None = None
    unique: bool = False


@dataclass(frozen=True)
class Comparison:
    """A cross-field rule ``left op right`` that every row must satisfy."""

    left: str
    op: str
    right: str

    def __str__(self) -> str:
        return f"{self.left}{self.op}{self.right}"


@dataclass(frozen=True)
class ResourceQuality:
    """Resource-level rules: the hold-back threshold, row-count bounds, freshness."""

    max_bad_ratio: float | None = None
    row_count_min: int | None = None
    row_count_max: int | None = None
    freshness: str | None = None  # "cycle" (from update_cycle) or an age like "36h", "2d"
    compare: tuple[Comparison, ...] = ()


def parse_comparison(text: str) -> Comparison | None:
    m = COMPARE_RE.match(text)
    return Comparison(m.group(1), m.group(2), m.group(3)) if m else None


def field_rules(doc: dict[str, Any] | None) -> FieldRules:
    """From a schema-valid ``rules:`` mapping."""
    if not doc:
        return FieldRules()
    enum = doc.get("enum")
    return FieldRules(
        regex=doc.get("regex"),
        enum=tuple(enum) if enum is not None else None,
        min=doc.get("min"),
        max=doc.get("max"),
        not_future=bool(doc.get("not_future", False)),
        validator=doc.get("validator"),
        unique=bool(doc.get("unique", False)),
    )


def resource_quality(doc: dict[str, Any] | None) -> ResourceQuality:
    """From a schema-valid ``quality:`` mapping."""
    if not doc:
        return ResourceQuality()
    rows = doc.get("row_count") or {}
    compare = tuple(c for c in (parse_comparison(t) for t in doc.get("compare", [])) if c)
    return ResourceQuality(
        max_bad_ratio=doc.get("max_bad_ratio"),
        row_count_min=rows.get("min"),
        row_count_max=rows.get("max"),
        freshness=doc.get("freshness"),
        compare=compare,
    )


def _is_date(v: Any) -> bool:
    if isinstance(v, dt.date):
        return True
    try:
        dt.datetime.fromisoformat(str(v))
    except ValueError:
        return False
    return True


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def quality_problems(resource: dict[str, Any]) -> Iterator[tuple[list[str | int], str]]:
    """Checks of a resource's rules that JSON Schema cannot express (paths relative to it).

    They run even when the schema found problems, so every key is read defensively."""
    raw_fields = _list(resource.get("fields"))
    fields = {
        f["name"]: f for f in raw_fields if isinstance(f, dict) and isinstance(f.get("name"), str)
    }
    for j, f in enumerate(raw_fields):
        if not isinstance(f, dict):
            continue
        rules = _mapping(f.get("rules"))
        at: list[str | int] = ["fields", j, "rules"]
        kind, name = f.get("type"), f.get("name")
        if isinstance(rules.get("regex"), str):
            try:
                re.compile(rules["regex"])
            except re.error as exc:
                yield at + ["regex"], f"not a valid regular expression: {exc}"
        if ("regex" in rules or "validator" in rules) and kind not in _TEXT:
            yield at, f"regex and validator apply to text fields, {name!r} is {kind}"
        for bound in ("min", "max"):
            if bound not in rules:
                continue
            v = rules[bound]
            if kind in _NUMERIC and not isinstance(v, int | float):
                yield at + [bound], f"{bound} of {a_or_an(kind)} field must be a number"
            elif kind in _TEMPORAL and not _is_date(v):
                yield (
                    at + [bound],
                    f"{bound} of {a_or_an(kind)} field must be an ISO date, got {v!r}",
                )
            elif kind not in _NUMERIC + _TEMPORAL:
                yield at + [bound], f"{bound} applies to numbers and dates, not {kind}"
        if rules.get("not_future") and kind not in _TEMPORAL:
            yield at + ["not_future"], f"not_future applies to dates, {name!r} is {kind}"
        enum = _list(rules.get("enum"))
        for k, v in enumerate(enum):
            if kind in _NUMERIC and not isinstance(v, int | float):
                yield at + ["enum", k], f"{v!r} is not a number ({name!r} is {kind})"
            elif kind in _TEXT and not isinstance(v, str):
                yield at + ["enum", k], f"{v!r} is not text ({name!r} is {kind})"
    quality = _mapping(resource.get("quality"))
    rows = _mapping(quality.get("row_count"))
    lo, hi = rows.get("min"), rows.get("max")
    if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
        yield ["quality", "row_count"], "min is larger than max"
    if quality.get("freshness") and not resource.get("cursor"):
        yield ["quality", "freshness"], "freshness needs a cursor field"
    compare = _list(quality.get("compare"))
    family = {t: "number" for t in _NUMERIC} | {t: "date" for t in _TEMPORAL}
    family |= {t: "text" for t in _TEXT}
    for k, text in enumerate(compare):
        c = parse_comparison(text) if isinstance(text, str) else None
        if c is None:
            continue  # the schema's pattern reports it
        for fname in (c.left, c.right):
            if fname not in fields:
                yield ["quality", "compare", k], f"{fname!r} is not a field of the resource"
        if c.left in fields and c.right in fields:
            a, b = str(fields[c.left].get("type")), str(fields[c.right].get("type"))
            if family.get(a, a) != family.get(b, b):
                yield ["quality", "compare", k], f"cannot compare {a} {c.left} with {b} {c.right}"
