"""Step 3, validate: good rows go on, bad rows are quarantined with every reason."""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from exchange.kernel.clock import local_now
from exchange.kernel.faults import crashpoint
from exchange.kernel.modes import private_copy, private_dirs
from exchange.quality.quarantine import already_quarantined, judge_run, record_validation
from exchange.runs.handle import RunHandle, set_step
from exchange.runs.rundir import RunDir
from exchange.workspace import Workspace
from quality import Rule, Verdict, evaluate, rules_for_resource
from quality.rules import DuplicateKey, Unique


@dataclass
class ValidationResult:
    """Counts of one run's validation: valid + quarantined = extracted.

    ``held`` says why the run delivers nothing (too many bad rows, an implausible row
    count); ``stale`` flags data older than its update cycle allows (delivered all the same)."""

    valid: int = 0
    quarantined: int = 0
    by_rule: dict[str, int] = field(default_factory=dict)
    by_dimension: dict[str, int] = field(default_factory=dict)
    held: str | None = None
    stale: str | None = None


def _same_file(source: Path, target: Path) -> None:
    """Every row is valid: valid/ is the extract itself (a hard link; a copy where links are
    not possible), instead of decoding and encoding every row again."""
    if not source.exists():
        return
    private_dirs(target.parent)
    try:
        os.link(source, target)  # the extract's own inode, and so its 0600
    except OSError:
        private_copy(source, target)


SPILL = "spill"  # the run directory's entry where whole-run rules spill their hash partitions


def _bound_to_run(rules: list[Rule], rd: RunDir, standing: np.ndarray) -> list[Rule]:
    """Rules that judge a value against the whole run (unique, key integrity) read the staged
    columns a batch at a time, their hashes spilled to partition files in the run directory
    (bounded memory whatever the run's size); key integrity less the ``standing`` rows."""
    out: list[Rule] = []
    spill = rd.path / SPILL
    rd.reset(SPILL)  # what a crash left
    try:
        for rule in rules:
            if isinstance(rule, Unique):
                column = functools.partial(rd.batches, "extract", columns=[rule.field])
                rule = rule.over_run(column, spill=spill)
            elif isinstance(rule, DuplicateKey):
                keys = functools.partial(_key_batches, rd, list(rule.keys), standing)
                rule = rule.over(keys, spill=spill)
            out.append(rule)
    finally:
        rd.reset(SPILL)
    return out


def _in(batch: pa.RecordBatch, offset: int, rows: np.ndarray) -> np.ndarray:
    """The positions within ``batch`` (at ``offset`` in its part) of ``rows`` (ascending)."""
    lo, hi = np.searchsorted(rows, [offset, offset + batch.num_rows])
    return rows[lo:hi] - offset


def _key_batches(rd: RunDir, keys: list[str], rows: np.ndarray) -> Iterator[pa.RecordBatch]:
    """The extract's key columns less the ``rows`` positions."""
    offset = 0
    for batch in rd.batches("extract", columns=keys):
        at = _in(batch, offset, rows)
        offset += batch.num_rows
        if len(at):
            keep = np.ones(batch.num_rows, dtype=bool)
            keep[at] = False
            batch = batch.filter(pa.array(keep))
        yield batch


def _sparing(batch: pa.RecordBatch, verdict: Verdict, at: np.ndarray, rules: list[Rule]) -> Verdict:
    """``verdict`` with the rows ``at`` judged without ``duplicate_key``: an earlier file's
    row that stands while every later row of its key is quarantined (``exchange.files.keys``)."""
    rows = batch.take(pa.array(at))
    was = evaluate(rows, rules)
    now = evaluate(rows, [r for r in rules if not isinstance(r, DuplicateKey)])
    mask = np.zeros(batch.num_rows, dtype=bool)
    mask[at] = True
    marks = pa.array(mask)

    def tally(total: dict[str, int], old: dict[str, int], new: dict[str, int]) -> dict[str, int]:
        out = {k: total.get(k, 0) - old.get(k, 0) + new.get(k, 0) for k in {*total, *new}}
        return {k: n for k, n in out.items() if n}

    return Verdict(
        pc.replace_with_mask(verdict.bad, marks, now.bad),
        pc.replace_with_mask(verdict.reasons, marks, now.reasons),
        tally(verdict.counts, was.counts, now.counts),
        tally(verdict.by_dimension, was.by_dimension, now.by_dimension),
    )


def validate(ws: Workspace, run: RunHandle) -> ValidationResult:
    """Split the extract into valid and quarantined rows. Done already: skip."""
    rd, run_id = run.dir, run.id
    if rd.is_done("validate"):
        d = rd.read_done("validate")
        return ValidationResult(
            d["valid"],
            d["quarantined"],
            d["by_rule"],
            d.get("by_dimension", {}),
            d.get("held"),
            d.get("stale"),
        )
    resource = run.resource
    now = local_now()
    rules = rules_for_resource(resource, now)
    # Tabular files: earlier files' rows whose key is in the run again only in quarantined rows.
    standing = np.array(rd.read_done("extract").get("standing", []), dtype=np.int64)
    if rd.part("extract").exists():
        rules = _bound_to_run(rules, rd, standing)
    rd.reset("valid", "quarantine")
    result = ValidationResult()
    valid_writer = quarantine_writer = None
    clean_prefix = 0  # leading batches without a bad row, not written (yet)
    offset = 0
    try:
        for batch in rd.batches("extract", batch_size=resource.batch_size):
            verdict = evaluate(batch, rules)
            spared = _in(batch, offset, standing)
            if len(spared):
                verdict = _sparing(batch, verdict, spared, rules)
            offset += batch.num_rows
            if valid_writer is None and verdict.counts:
                # The first bad row: from here on valid/ is its own file, so write it, the
                # clean batches before this one first (the same batches, read again).
                valid_writer = rd.writer("valid", batch.schema)
                earlier = rd.batches("extract", batch_size=resource.batch_size)
                for clean in itertools.islice(earlier, clean_prefix):
                    valid_writer.write_batch(clean)
            good = verdict.good(batch) if verdict.counts else batch
            if valid_writer is not None:
                valid_writer.write_batch(good)
            else:
                clean_prefix += 1
            result.valid += good.num_rows
            if verdict.counts:
                bad = verdict.quarantined(batch)
                if quarantine_writer is None:
                    quarantine_writer = rd.writer("quarantine", bad.schema)
                quarantine_writer.write_batch(bad)
                result.quarantined += bad.num_rows
                for rule, n in verdict.counts.items():
                    result.by_rule[rule] = result.by_rule.get(rule, 0) + n
                for dim, n in verdict.by_dimension.items():
                    result.by_dimension[dim] = result.by_dimension.get(dim, 0) + n
    finally:
        for w in (valid_writer, quarantine_writer):
            if w is not None:
                w.close()
    if valid_writer is None:
        _same_file(rd.part("extract"), rd.part("valid"))
    extracted = result.valid + result.quarantined
    high = rd.read_done("extract").get("high")
    # An incremental run judges a row quarantined unchanged by an earlier run once, not again;
    # a full extract judges the whole table.
    full = run.plan.since is None
    repeats = 0 if full else already_quarantined(ws, run_id, resource, rd)
    outcome = judge_run(ws, resource, extracted, result.quarantined, full, high, now, repeats)
    result.held, result.stale = outcome.held, outcome.stale
    record_validation(
        ws,
        run_id,
        rd,
        resource,
        result.by_rule,
        result.by_dimension,
        extracted,
        result.valid,
        result.quarantined,
        outcome,
    )
    rd.mark_done(
        "validate",
        {
            "valid": result.valid,
            "quarantined": result.quarantined,
            "by_rule": result.by_rule,
            "by_dimension": result.by_dimension,
            "held": result.held,
            "stale": result.stale,
        },
    )
    set_step(ws, run_id, "validate", rows_valid=result.valid, rows_quarantined=result.quarantined)
    crashpoint("validate:done")
    return result
