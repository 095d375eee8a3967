"""After validation: the quarantine index, the run's quality statistics, the resource-level
findings (hold-back threshold, row count, freshness) and the provider's quality ticket.

All of it is written in one transaction and is idempotent per run, so a validate step that
crashed after this and before its done-file can simply be redone.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.orm import Session

from exchange.catalog.model import Resource
from exchange.quality.models import QualityRunStat, QuarantineEntry
from exchange.quality.tickets import note_run
from exchange.runs import watermark
from exchange.runs.rowhash import HASH_TYPE, row_hashes
from exchange.runs.rundir import RunDir
from exchange.workspace import Workspace
from quality.evaluate import REASONS_COLUMN
from quality.resource_checks import (
    bad_ratio_hold,
    freshness_allowance,
    row_count_hold,
    staleness,
)

KEY_SEPARATOR = "|"
INDEX_CHUNK = 5_000


def row_keys(batch: pa.RecordBatch | pa.Table, primary_key: Sequence[str]) -> pa.Array:
    """Each row's primary key as text (composite keys joined with '|'), vectorised; a NUL in
    a text key shown as '␀' (such a row is quarantined, and a store may not hold a NUL)."""
    parts = [pc.cast(batch.column(k), pa.string()) for k in primary_key]
    if len(parts) == 1:
        out = parts[0]
    else:
        out = pc.binary_join_element_wise(*parts, KEY_SEPARATOR)
    out = pc.replace_substring(out, "\x00", "␀")
    return out.combine_chunks() if isinstance(out, pa.ChunkedArray) else out


@dataclass(frozen=True)
class Outcome:
    """The run-level verdict: ``held`` stops every delivery of the run; ``stale`` only flags."""

    held: str | None
    stale: str | None
    newest: str | None


def _newest(ws: Workspace, resource: Resource, high: str | None) -> str | None:
    """The newest cursor value at the source: this extract's, or the last run's if this one
    brought nothing new."""
    if high is not None or resource.cursor is None:
        return high
    with ws.store.session() as s:
        return s.execute(
            sa.select(QualityRunStat.newest_cursor)
            .where(
                QualityRunStat.resource_code == resource.code,
                QualityRunStat.newest_cursor.is_not(None),
            )
            .order_by(QualityRunStat.at.desc())
            .limit(1)
        ).scalar()


def judge_run(
    ws: Workspace,
    resource: Resource,
    extracted: int,
    quarantined: int,
    full_extract: bool,
    high: str | None,
    now: dt.datetime,
    repeats: int = 0,
) -> Outcome:
    """Resource-level rules on the run's counts and newest cursor value. ``repeats`` of the
    quarantined rows were quarantined unchanged by an earlier run: the bad-row ratio is of
    the other rows (``already_quarantined``)."""
    spec = resource.quality
    held = bad_ratio_hold(extracted - repeats, quarantined - repeats, spec) or row_count_hold(
        extracted, full_extract, spec
    )
    newest = _newest(ws, resource, high)
    allowance = freshness_allowance(spec, resource.update_cycle)
    stale = None
    if allowance is not None and resource.cursor is not None:
        value = watermark.decode(newest, resource.field(resource.cursor))
        stale = staleness(value, now, allowance)
    return Outcome(held, stale, newest)


def _repeats(
    s: Session, run_id: str, resource: Resource, batch: pa.RecordBatch
) -> tuple[pa.Array, pa.Array, pa.Array]:
    """Each quarantined row's key, the hash of its values, and whether an earlier run's
    unreleased entry holds that very row (same key, same values)."""
    keys = row_keys(batch, resource.primary_key)
    hashes = row_hashes(batch, resource.field_names)
    wanted = [k for k in pc.unique(keys).to_pylist() if k is not None]
    known: list[bytes] = []
    for start in range(0, len(wanted), INDEX_CHUNK):
        known += [
            bytes(h or b"")
            for h in s.execute(
                sa.select(QuarantineEntry.row_hash).where(
                    QuarantineEntry.resource_code == resource.code,
                    QuarantineEntry.released_run_id.is_(None),
                    QuarantineEntry.run_id != run_id,
                    QuarantineEntry.row_hash.is_not(None),
                    QuarantineEntry.row_key.in_(wanted[start : start + INDEX_CHUNK]),
                )
            ).scalars()
        ]
    repeated = pc.is_in(hashes, value_set=pa.array(known, HASH_TYPE))
    return keys, hashes, repeated


def already_quarantined(ws: Workspace, run_id: str, resource: Resource, rd: RunDir) -> int:
    """How many of the run's quarantined rows an earlier run quarantined unchanged (a row at
    or near the watermark comes back in every incremental extract): they are judged once, so
    they count neither toward ``max_bad_ratio`` again nor in the quarantine list twice."""
    n = 0
    with ws.store.session() as s:
        for batch in rd.batches("quarantine", columns=list(resource.field_names)):
            n += pc.sum(_repeats(s, run_id, resource, batch)[2]).as_py() or 0
    return n


def record_validation(
    ws: Workspace,
    run_id: str,
    rd: RunDir,
    resource: Resource,
    counts: dict[str, int],
    by_dimension: dict[str, int],
    extracted: int,
    valid: int,
    quarantined: int,
    outcome: Outcome,
) -> None:
    """Write the quarantine index and the run's statistics; open or update the ticket."""
    samples: list[str] = []
    new_rows = 0  # not already quarantined unchanged by an earlier run
    with ws.store.session() as s:
        s.execute(sa.delete(QuarantineEntry).where(QuarantineEntry.run_id == run_id))
        for batch in rd.batches(
            "quarantine", columns=[*resource.field_names, REASONS_COLUMN], batch_size=INDEX_CHUNK
        ):
            keys_arr, hashes_arr, repeated = _repeats(s, run_id, resource, batch)
            fresh = pc.invert(repeated)
            keys = keys_arr.filter(fresh).to_pylist()
            hashes = hashes_arr.filter(fresh).to_pylist()
            reasons = batch.column(REASONS_COLUMN).filter(fresh).to_pylist()
            new_rows += len(keys)
            if len(samples) < 10:
                samples += [k for k in keys[: 10 - len(samples)] if k is not None]
            if not keys:
                continue
            s.execute(
                sa.insert(QuarantineEntry),
                [
                    {
                        "run_id": run_id,
                        "resource_code": resource.code,
                        "row_key": (k or "(no key)")[:500],
                        "reasons": r,
                        "row_hash": h,
                    }
                    for k, r, h in zip(keys, reasons, hashes, strict=True)
                ],
            )
        stat = s.get(QualityRunStat, run_id) or QualityRunStat(run_id=run_id)
        stat.resource_code = resource.code
        stat.extracted, stat.valid, stat.quarantined = extracted, valid, quarantined
        stat.by_rule, stat.by_dimension = dict(counts), dict(by_dimension)
        stat.newest_cursor, stat.stale, stat.held = outcome.newest, outcome.stale, outcome.held
        s.add(stat)
        findings = [f for f in (outcome.held and f"held back: {outcome.held}", outcome.stale) if f]
        if new_rows or findings:
            note_run(s, resource, run_id, counts, new_rows, samples, findings)


def release_fixed(ws: Workspace, run_id: str, resource: Resource, rd: RunDir) -> int:
    """Mark earlier quarantined rows whose keys this run delivered as released (the provider
    fixed them at the source); return how many."""
    with ws.store.session() as s:
        held_keys = list(
            s.execute(
                sa.select(QuarantineEntry.row_key)
                .where(
                    QuarantineEntry.resource_code == resource.code,
                    QuarantineEntry.released_run_id.is_(None),
                    QuarantineEntry.run_id != run_id,
                )
                .distinct()
            ).scalars()
        )
        if not held_keys:
            return 0
        wanted = pa.array(held_keys, pa.string())
        found: list[str] = []
        for batch in rd.batches("valid", columns=list(resource.primary_key)):
            keys = row_keys(batch, resource.primary_key)
            found += keys.filter(pc.is_in(keys, value_set=wanted)).to_pylist()
        for start in range(0, len(found), INDEX_CHUNK):
            s.execute(
                sa.update(QuarantineEntry)
                .where(
                    QuarantineEntry.resource_code == resource.code,
                    QuarantineEntry.released_run_id.is_(None),
                    QuarantineEntry.run_id != run_id,
                    QuarantineEntry.row_key.in_(found[start : start + INDEX_CHUNK]),
                )
                .values(released_run_id=run_id)
            )
        return len(found)


@dataclass(frozen=True)
class QuarantinedRow:
    run_id: str
    row_key: str
    reasons: str
    created_at: dt.datetime
    released_run_id: str | None


def list_quarantine(
    ws: Workspace, resource_code: str, *, include_released: bool = False, limit: int = 200
) -> tuple[int, list[QuarantinedRow]]:
    """How many rows of a resource are held, and the newest ``limit`` of them."""
    ws.catalog.resource(resource_code)  # NotFound for an unknown code
    where = [QuarantineEntry.resource_code == resource_code]
    if not include_released:
        where.append(QuarantineEntry.released_run_id.is_(None))
    with ws.store.session() as s:
        total = s.execute(sa.select(sa.func.count(QuarantineEntry.id)).where(*where)).scalar_one()
        rows = s.execute(
            sa.select(QuarantineEntry)
            .where(*where)
            .order_by(QuarantineEntry.id.desc())
            .limit(limit)
        ).scalars()
        return int(total), [
            QuarantinedRow(r.run_id, r.row_key, r.reasons, r.created_at, r.released_run_id)
            for r in rows
        ]
