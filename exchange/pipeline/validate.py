"""Step 3, validate: good rows go on, bad rows are quarantined with every reason."""

from __future__ import annotations

from dataclasses import dataclass, field

from exchange.faults import crashpoint
from exchange.pipeline.plan import run_dir_of, set_step
from exchange.workspace import Workspace
from quality import evaluate, rules_for_fields


@dataclass
class ValidationResult:
    """Counts of one run's validation: valid + quarantined = extracted."""

    valid: int = 0
    quarantined: int = 0
    by_rule: dict[str, int] = field(default_factory=dict)


def validate(ws: Workspace, run_id: str) -> ValidationResult:
    """Split the extract into valid and quarantined rows. Done already: skip."""
    run, rd = run_dir_of(ws, run_id)
    if rd.is_done("validate"):
        d = rd.read_done("validate")
        return ValidationResult(d["valid"], d["quarantined"], d["by_rule"])
    resource = ws.catalog.resource(run.resource_code)
    rules = rules_for_fields(resource.fields, resource.primary_key)
    rd.reset("valid", "quarantine")
    result = ValidationResult()
    schema = None
    valid_writer = quarantine_writer = None
    try:
        for batch in rd.batches("extract", batch_size=resource.batch_size):
            if schema is None:
                schema = batch.schema
                valid_writer = rd.writer("valid", schema)
            verdict = evaluate(batch, rules)
            good = verdict.good(batch) if verdict.counts else batch
            assert valid_writer is not None
            valid_writer.write_batch(good)
            result.valid += good.num_rows
            if verdict.counts:
                bad = verdict.quarantined(batch)
                if quarantine_writer is None:
                    quarantine_writer = rd.writer("quarantine", bad.schema)
                quarantine_writer.write_batch(bad)
                result.quarantined += bad.num_rows
                for rule, n in verdict.counts.items():
                    result.by_rule[rule] = result.by_rule.get(rule, 0) + n
    finally:
        for w in (valid_writer, quarantine_writer):
            if w is not None:
                w.close()
    rd.mark_done(
        "validate",
        {"valid": result.valid, "quarantined": result.quarantined, "by_rule": result.by_rule},
    )
    set_step(ws, run_id, "validate", rows_valid=result.valid, rows_quarantined=result.quarantined)
    crashpoint("validate:done")
    return result
