"""Step 4 for tables, load many: deliver the valid rows to one subscriber, exactly once.

Exactly once rests on the delivery marker that ``merge`` writes in the subscriber's own
database, in the same transaction as the rows. If the process dies before that commit,
nothing changed there and the load is redone; if it dies after, the marker names this run
and the load only records what was already delivered.

A split run (``Plan.ranges``) loads each key range on its own (``load_range``): its rows and
a range marker of the run in one transaction, so a re-run after a crash in range k loads only
the ranges without one. Once every range is in, ``close_split`` reconciles a snapshot's
deletes once, by the keys of all ranges, and writes the subscription's marker; only then is the
delivery recorded in the store.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlalchemy as sa

from connectors.base import DatabaseConnector, DeliveryMarker, KeyRange, TableSpec
from connectors.schema_check import refusal
from connectors.secrets import redact
from exchange.catalog.model import Resource
from exchange.kernel.errors import ExchangeError, Retriable, TargetMismatch
from exchange.kernel.faults import crashpoint
from exchange.runs.delivered import RowMemory
from exchange.runs.handle import RunHandle
from exchange.runs.plan import TableDelivery
from exchange.runs.results import DeliveryResult, record_delivery, recorded
from exchange.runs.rundir import RunDir
from exchange.tables import window
from exchange.tables.check import refusals
from exchange.tables.extract import key_range
from exchange.workspace import Workspace
from quality.mask import mask_text


def _projected(
    rd: RunDir,
    d: TableDelivery,
    resource: Resource,
    start: Any = None,
    held: RowMemory | None = None,
) -> Iterator[pa.RecordBatch]:
    """The subscriber's granted fields of the valid rows at or past ``start`` (its watermark
    less the look-back window; None: every row), less those it holds unchanged (``held``,
    which also remembers the rows of its new window)."""
    fields = list(d.fields)
    cursor = resource.field(resource.cursor) if resource.cursor else None
    columns = list(fields)
    filtered = start is not None or held is not None
    if cursor is not None and filtered and cursor.name not in columns:
        columns.append(cursor.name)
    for batch in rd.batches("valid", columns=columns, batch_size=resource.batch_size):
        if start is not None and cursor is not None:
            col = batch.column(cursor.name)
            bound = pa.scalar(start, type=col.type)
            batch = batch.filter(pc.fill_null(pc.greater_equal(col, bound), False))
        if held is not None:
            batch = held.sift(batch)
        yield batch.select(fields)


def _quarantined_keys(rd: RunDir, resource: Resource) -> pa.Table | None:
    """Keys of this run's quarantined rows: the source still has them, so a snapshot or
    ``--full`` delivery must not delete them at the subscriber (it keeps their last good
    version until the provider fixes the row)."""
    if not rd.part("quarantine").exists():
        return None
    return pq.read_table(rd.part("quarantine"), columns=list(resource.primary_key))


def _db_message(node: str, exc: Exception) -> str:
    detail = str(getattr(exc, "orig", None) or exc).strip()
    first = detail.splitlines()[0] if detail else type(exc).__name__
    return f"node {node!r}: {redact(first)}"


def _target_spec(resource: Resource, d: TableDelivery) -> TableSpec:
    return TableSpec(
        name=d.table,
        fields=tuple(resource.field(f) for f in d.fields),
        primary_key=resource.primary_key,
        schema=d.schema,
    )


def _prepared(
    target: DatabaseConnector,
    spec: TableSpec,
    resource: Resource,
    d: TableDelivery,
    *,
    parts: bool = False,
) -> tuple[str, ...]:
    """Refuse a target that cannot hold what the catalog declares (exchange.tables.check),
    before a row moves, else create or evolve it (``parts``: with the split runs' range
    markers); the notes on the columns it added."""
    refused = refusals(target.check_target(spec), spec, resource)
    if refused:
        raise TargetMismatch(refusal(d.node, spec.qualified, refused))
    try:
        added = target.ensure_table(spec, parts=parts)
    except sa.exc.SQLAlchemyError:
        if not parts:
            raise
        # Ranges load side by side: another one may have created the table meanwhile; a
        # second look finds it (a real failure fails again, and is the range's).
        added = target.ensure_table(spec, parts=True)
    return tuple(f"added column {c} to {d.node}.{spec.qualified}" for c in added)


def _delivered(
    ws: Workspace,
    run: RunHandle,
    d: TableDelivery,
    rows: int,
    started: float,
    new_mark: str | None,
    notes: tuple[str, ...],
    held: RowMemory | None,
) -> DeliveryResult:
    """Record and return ``d``'s delivery, with what the subscriber now holds near its
    watermark."""
    crashpoint("load:committed")
    result = DeliveryResult(
        d.subscription_id, d.node, d.table, "delivered", rows, time.perf_counter() - started,
        new_mark, notes=notes,
    )  # fmt: skip
    record_delivery(ws, result, run.id, held.after() if held is not None else None)
    return result


def _in_range(batch: pa.RecordBatch, rng: KeyRange) -> pa.RecordBatch:
    col = batch.column(rng.column)
    inside = pc.is_valid(col)  # a NULL key is in no bounded range: only where ``nulls``
    if rng.low is not None:
        inside = pc.and_(inside, pc.greater_equal(col, pa.scalar(rng.low, type=col.type)))
    if rng.high is not None:
        inside = pc.and_(inside, pc.less(col, pa.scalar(rng.high, type=col.type)))
    mask = pc.or_(pc.fill_null(inside, False), pc.is_null(col)) if rng.nulls else inside
    return batch.filter(pc.fill_null(mask, False))


def _overlaps(stats: Any, rng: KeyRange) -> bool:
    """Whether a row group whose key column has ``stats`` may hold rows of ``rng``."""
    if stats is None or not stats.has_min_max:
        return True
    if rng.nulls and stats.null_count:
        return True
    low_ok = rng.high is None or stats.min < rng.high
    return low_ok and (rng.low is None or stats.max >= rng.low)


def _range_rows(
    rd: RunDir, d: TableDelivery, rng: KeyRange, batch_size: int
) -> Iterator[pa.RecordBatch]:
    """The subscriber's granted fields of the valid rows in ``rng``: only the row groups whose
    key statistics overlap it are read (the extract keeps each range's row groups together)."""
    path = rd.part("valid")
    if not path.exists():
        return
    fields = list(d.fields)
    columns = fields if rng.column in fields else [*fields, rng.column]
    with pq.ParquetFile(path, pre_buffer=False) as pf:
        at = pf.schema_arrow.get_field_index(rng.column)
        groups = [
            i
            for i in range(pf.metadata.num_row_groups)
            if _overlaps(pf.metadata.row_group(i).column(at).statistics, rng)
        ]
        if not groups:
            return
        for batch in pf.iter_batches(
            batch_size=batch_size, row_groups=groups, columns=columns, use_threads=False
        ):
            yield _in_range(batch, rng).select(fields)


def _delivered_before(ws: Workspace, run: RunHandle, d: TableDelivery) -> DeliveryResult | None:
    """The store's record of this run's delivery to ``d``, when it was delivered already."""
    done = recorded(ws, run.id, d.subscription_id)
    if done is None or done.status != "delivered":
        return None
    return DeliveryResult(
        d.subscription_id, d.node, d.table, "delivered", done.rows, done.seconds, done.watermark
    )


def _failed(
    ws: Workspace, run: RunHandle, d: TableDelivery, exc: Exception, started: float
) -> DeliveryResult:
    """Record and return ``d``'s failed delivery, its message masked (it may quote the row
    key or the value: an ID number)."""
    message = str(exc) if isinstance(exc, ExchangeError) else _db_message(d.node, exc)
    result = DeliveryResult(
        d.subscription_id, d.node, d.table, "failed", 0, time.perf_counter() - started,
        d.since, mask_text(message),
    )  # fmt: skip
    record_delivery(ws, result, run.id)
    return result


def _deleted_note(target: DatabaseConnector, d: TableDelivery, spec: TableSpec) -> tuple[str, ...]:
    if not target.deleted:
        return ()
    return (
        f"deleted {target.deleted:,} rows the source no longer has from {d.node}.{spec.qualified}",
    )


def _added_notes_file(run: RunHandle, d: TableDelivery, k: int) -> Path:
    return run.dir.part(f"added-{d.subscription_id}-{k}.json")


def _added_notes(run: RunHandle, d: TableDelivery) -> tuple[str, ...]:
    """What the range loads of a split run said they added to ``d``'s table, each once."""
    notes: dict[str, None] = {}
    for k in range(len(run.plan.ranges)):
        path = _added_notes_file(run, d, k)
        if path.exists():
            notes.update(dict.fromkeys(json.loads(path.read_text(encoding="utf-8"))["notes"]))
    return tuple(notes)


def load_range(
    ws: Workspace,
    run: RunHandle,
    d: TableDelivery,
    k: int,
    on_rows: Callable[[int], None] | None = None,
) -> int:
    """Merge key range ``k`` of a split run into one subscriber's table with its range marker,
    exactly once; the rows it merged. Raises on failure (the caller records the delivery)."""
    done = recorded(ws, run.id, d.subscription_id)
    if done is not None and done.status == "delivered":
        return 0  # closed already: every range is in
    resource, rd = run.resource, run.dir
    spec = _target_spec(resource, d)
    rng = key_range(run, k)
    target = ws.database(d.node)
    try:
        parts = target.read_parts(spec, d.subscription_id, run.id)
        if k in parts:
            return parts[k]  # the crash came after this range's commit
        committed = target.read_marker(spec, d.subscription_id)
        if committed is not None and committed.run_id == run.id:
            return 0  # closed in the target, not recorded yet: close_split records it
        added = _prepared(target, spec, resource, d, parts=True)
        if added:  # said by the close, which records the delivery
            rd.write_json(_added_notes_file(run, d, k), {"notes": list(added)})
        rows = target.merge(
            spec,
            _range_rows(rd, d, rng, resource.batch_size),
            delete_missing=False,
            marker=DeliveryMarker(d.subscription_id, run.id, None, 0),
            on_rows=on_rows,
            part=k,
        )
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        raise Retriable(mask_text(f"key range {k}: {_db_message(d.node, exc)}")) from None
    finally:
        target.close()
    crashpoint("load:range", d.node)
    return rows


def close_split(
    ws: Workspace, run: RunHandle, d: TableDelivery, failed: dict[int, str]
) -> DeliveryResult:
    """Close a split run's delivery to one subscriber once every range is in: a snapshot's
    deletes by the keys of all ranges, the subscription's marker, then the store's record. A
    range still missing (``failed``: why, by range; or one never loaded) fails the delivery,
    recorded; the next run of it loads only the missing ranges."""
    before = _delivered_before(ws, run, d)
    if before is not None:
        return before
    resource, rd = run.resource, run.dir
    spec = _target_spec(resource, d)
    high = rd.read_done("extract")["high"] if resource.cursor else None
    new_mark = window.new_mark(run, d, high)
    held = window.memory(ws, run, d, new_mark)
    started = time.perf_counter()
    notes = _added_notes(run, d)
    try:
        target = ws.database(d.node)
        try:
            committed = target.read_marker(spec, d.subscription_id)
            if committed is not None and committed.run_id == run.id:
                rows = committed.rows  # the crash came after the close's commit
            else:
                parts = target.read_parts(spec, d.subscription_id, run.id)
                missing = [k for k in range(len(run.plan.ranges)) if k not in parts]
                if missing:
                    why = "; ".join(f"range {k}: {failed[k]}" for k in missing if k in failed)
                    shown = ", ".join(str(k) for k in missing)
                    raise Retriable(f"key ranges {shown} not loaded" + (f" ({why})" if why else ""))
                keys = (
                    rd.batches(
                        "valid", columns=list(resource.primary_key), batch_size=resource.batch_size
                    )
                    if d.delete_missing
                    else None
                )
                rows = target.close_split(
                    spec,
                    marker=DeliveryMarker(d.subscription_id, run.id, new_mark, 0),
                    keys=keys,
                    keep=_quarantined_keys(rd, resource) if d.delete_missing else None,
                )
                notes += _deleted_note(target, d, spec)
            if held is not None:  # what it holds now, as an unsplit merge would have seen it
                deque(_projected(rd, d, resource, window.start(run, d), held), maxlen=0)
        finally:
            target.close()
    except (ExchangeError, sa.exc.SQLAlchemyError, OSError) as exc:
        return _failed(ws, run, d, exc, started)
    return _delivered(ws, run, d, rows, started, new_mark, notes, held)


def load_subscriber(
    ws: Workspace,
    run: RunHandle,
    d: TableDelivery,
    on_rows: Callable[[int], None] | None = None,
) -> DeliveryResult:
    """Deliver this run to one table subscription; failures are recorded and returned, not
    raised (the others go on)."""
    before = _delivered_before(ws, run, d)
    if before is not None:
        return before
    resource, rd = run.resource, run.dir
    spec = _target_spec(resource, d)
    high = rd.read_done("extract")["high"] if resource.cursor else None
    new_mark = window.new_mark(run, d, high)
    held = window.memory(ws, run, d, new_mark)  # rows it holds near its watermark
    started = time.perf_counter()
    notes: tuple[str, ...] = ()
    try:
        target = ws.database(d.node)
        try:
            committed = target.read_marker(spec, d.subscription_id)
            if committed is not None and committed.run_id == run.id:
                rows = committed.rows  # the crash came after the target's commit
                if held is not None:  # what it holds now, as the merge would have seen it
                    deque(_projected(rd, d, resource, window.start(run, d), held), maxlen=0)
            else:
                notes = _prepared(target, spec, resource, d)  # a missing column added, told
                rows = target.merge(
                    spec,
                    _projected(rd, d, resource, window.start(run, d), held),
                    delete_missing=d.delete_missing,
                    marker=DeliveryMarker(d.subscription_id, run.id, new_mark, 0),
                    on_rows=on_rows,
                    keep=_quarantined_keys(rd, resource) if d.delete_missing else None,
                )
                notes += _deleted_note(target, d, spec)
        finally:
            target.close()
    except (ExchangeError, sa.exc.SQLAlchemyError, OSError) as exc:
        return _failed(ws, run, d, exc, started)
    return _delivered(ws, run, d, rows, started, new_mark, notes, held)
