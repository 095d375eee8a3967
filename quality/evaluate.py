"""Run a resource's rules on one batch: which rows are bad, and every reason for each.

A reason is ``rule:field=excerpt`` (``required:name`` when the value is missing), e.g.
``max_length(20):name=鹰城科技有限公司鹰城科技有限公…`` or ``resident_id:id_card=410****3X``;
a row's reasons are joined with ``; ``. Excerpts are built only for the rows that broke the
rule, and ID and phone numbers in them are masked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from quality.rules import Rule

REASONS_COLUMN = "_reasons"


@dataclass(frozen=True)
class Verdict:
    """``bad`` marks rows that break at least one rule; ``reasons`` lists them ('; '-joined).

    ``counts`` is violations per rule; ``by_dimension`` is bad rows per assessment dimension
    (a row breaking two rules of one dimension counts once there)."""

    bad: pa.BooleanArray
    reasons: pa.StringArray
    counts: dict[str, int]
    by_dimension: dict[str, int] = field(default_factory=dict)

    @property
    def bad_rows(self) -> int:
        return int(pc.sum(self.bad).as_py() or 0)

    def good(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        return batch.filter(pc.invert(self.bad))

    def quarantined(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        bad = batch.filter(self.bad)
        return bad.append_column(REASONS_COLUMN, self.reasons.filter(self.bad))


def _mask_kinds(rules: Sequence[Rule]) -> dict[str, str]:
    """Fields whose values are ID or phone numbers, by any rule that knows it."""
    return {r.field: r.mask for r in rules if r.mask}


def _labels(
    batch: pa.RecordBatch, rule: Rule, mask: pa.BooleanArray, masks: dict[str, str]
) -> pa.Array:
    """``rule:field=excerpt`` on the rows ``mask`` marks, null elsewhere."""
    shown = rule.shown(batch, pc.indices_nonzero(mask), masks)
    label = pa.scalar(rule.reason())
    text = pc.coalesce(pc.binary_join_element_wise(label, shown, "="), label)
    return pc.replace_with_mask(pa.nulls(len(mask), pa.string()), mask, text)


def evaluate(batch: pa.RecordBatch, rules: Sequence[Rule]) -> Verdict:
    """Evaluate every rule on the whole batch (vectorised; no per-row Python)."""
    n = batch.num_rows
    bad: pa.BooleanArray = pa.nulls(n, pa.bool_()).fill_null(False)
    masks = _mask_kinds(rules)
    labels: list[pa.Array] = []
    counts: dict[str, int] = {}
    dims: dict[str, pa.BooleanArray] = {}
    for rule in rules:
        mask = rule.violations(batch)
        hits = int(pc.sum(mask).as_py() or 0)
        if not hits:
            continue
        counts[rule.reason()] = counts.get(rule.reason(), 0) + hits
        bad = pc.or_(bad, mask)
        dims[rule.dimension] = (
            pc.or_(dims[rule.dimension], mask) if rule.dimension in dims else mask
        )
        labels.append(_labels(batch, rule, mask, masks))
    reasons = pa.nulls(n, pa.string())
    for label in labels:
        # Not binary_join_element_wise(null_handling="skip"): pyarrow 26 returns a shorter
        # array when every input of a row is null.
        joined = pc.binary_join_element_wise(reasons, label, "; ")
        reasons = pc.coalesce(joined, reasons, label)
    by_dimension = {d: int(pc.sum(m).as_py() or 0) for d, m in dims.items()}
    return Verdict(bad=bad, reasons=reasons, counts=counts, by_dimension=by_dimension)
