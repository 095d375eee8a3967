"""Run a resource's rules on one batch: which rows are bad, and every reason for each."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from quality.rules import Rule

REASONS_COLUMN = "_reasons"


@dataclass(frozen=True)
class Verdict:
    """``bad`` marks rows that break at least one rule; ``reasons`` lists them ('; '-joined)."""

    bad: pa.BooleanArray
    reasons: pa.StringArray
    counts: dict[str, int]

    @property
    def bad_rows(self) -> int:
        return int(pc.sum(self.bad).as_py() or 0)

    def good(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        return batch.filter(pc.invert(self.bad))

    def quarantined(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        bad = batch.filter(self.bad)
        return bad.append_column(REASONS_COLUMN, self.reasons.filter(self.bad))


def evaluate(batch: pa.RecordBatch, rules: Sequence[Rule]) -> Verdict:
    """Evaluate every rule on the whole batch (vectorised; no per-row Python)."""
    n = batch.num_rows
    bad: pa.BooleanArray = pa.nulls(n, pa.bool_()).fill_null(False)
    labels: list[pa.Array] = []
    counts: dict[str, int] = {}
    for rule in rules:
        mask = rule.violations(batch)
        hits = int(pc.sum(mask).as_py() or 0)
        if not hits:
            continue
        counts[rule.reason()] = hits
        bad = pc.or_(bad, mask)
        labels.append(pc.if_else(mask, rule.reason(), pa.scalar(None, pa.string())))
    reasons = pa.nulls(n, pa.string())
    for label in labels:
        # Not binary_join_element_wise(null_handling="skip"): pyarrow 26 returns a shorter
        # array when every input of a row is null.
        joined = pc.binary_join_element_wise(reasons, label, "; ")
        reasons = pc.coalesce(joined, reasons, label)
    return Verdict(bad=bad, reasons=reasons, counts=counts)
