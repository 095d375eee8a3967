"""Step 4 for tables, load many: deliver the valid rows to one subscriber, exactly once.

Exactly once rests on the delivery marker that ``merge`` writes in the subscriber's own
database, in the same transaction as the rows. If the process dies before that commit,
nothing changed there and the load is redone; if it dies after, the marker names this run
and the load only records what was already delivered.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlalchemy as sa

from connectors.base import DeliveryMarker, TableSpec
from connectors.schema_check import refusal
from connectors.secrets import redact
from exchange.catalog.model import Resource
from exchange.kernel.errors import ExchangeError, TargetMismatch
from exchange.kernel.faults import crashpoint
from exchange.runs.delivered import RowMemory
from exchange.runs.handle import RunHandle
from exchange.runs.plan import TableDelivery
from exchange.runs.results import DeliveryResult, record_delivery, recorded
from exchange.runs.rundir import RunDir
from exchange.tables import window
from exchange.tables.check import refusals
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


def load_subscriber(
    ws: Workspace,
    run: RunHandle,
    d: TableDelivery,
    on_rows: Callable[[int], None] | None = None,
) -> DeliveryResult:
    """Deliver this run to one table subscription; failures are recorded and returned, not
    raised (the others go on)."""
    done = recorded(ws, run.id, d.subscription_id)
    if done is not None and done.status == "delivered":
        return DeliveryResult(
            d.subscription_id, d.node, d.table, "delivered", done.rows, done.seconds,
            done.watermark,
        )  # fmt: skip
    resource, rd = run.resource, run.dir
    spec = TableSpec(
        name=d.table,
        fields=tuple(resource.field(f) for f in d.fields),
        primary_key=resource.primary_key,
        schema=d.schema,
    )
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
                # An existing table must hold what the catalog declares: refused here, before
                # a row moves (exchange.tables.check); a column it lacks is added and told.
                refused = refusals(target.check_target(spec), spec, resource)
                if refused:
                    raise TargetMismatch(refusal(d.node, spec.qualified, refused))
                added = target.ensure_table(spec)
                notes = tuple(f"added column {c} to {d.node}.{spec.qualified}" for c in added)
                rows = target.merge(
                    spec,
                    _projected(rd, d, resource, window.start(run, d), held),
                    delete_missing=d.delete_missing,
                    marker=DeliveryMarker(d.subscription_id, run.id, new_mark, 0),
                    on_rows=on_rows,
                    keep=_quarantined_keys(rd, resource) if d.delete_missing else None,
                )
                if target.deleted:
                    notes += (
                        f"deleted {target.deleted:,} rows the source no longer has from "
                        f"{d.node}.{spec.qualified}",
                    )
        finally:
            target.close()
    except (ExchangeError, sa.exc.SQLAlchemyError, OSError) as exc:
        message = str(exc) if isinstance(exc, ExchangeError) else _db_message(d.node, exc)
        message = mask_text(message)  # it may quote the row key or the value (an ID number)
        result = DeliveryResult(
            d.subscription_id, d.node, d.table, "failed", 0, time.perf_counter() - started,
            d.since, message,
        )  # fmt: skip
        record_delivery(ws, result, run.id)
        return result
    crashpoint("load:committed")
    result = DeliveryResult(
        d.subscription_id, d.node, d.table, "delivered", rows, time.perf_counter() - started,
        new_mark, notes=notes,
    )  # fmt: skip
    record_delivery(ws, result, run.id, held.after() if held is not None else None)
    return result
