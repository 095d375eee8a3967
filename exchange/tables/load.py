"""Step 4 for tables, load many: deliver the valid rows to one subscriber, exactly once.

Exactly once rests on the delivery marker that ``merge`` writes in the subscriber's own
database, in the same transaction as the rows. If the process dies before that commit,
nothing changed there and the load is redone; if it dies after, the marker names this run
and the load only records what was already delivered.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from connectors.base import DeliveryMarker, TableSpec
from connectors.secrets import redact
from exchange.catalog.model import Resource
from exchange.kernel.errors import ExchangeError
from exchange.kernel.faults import crashpoint
from exchange.runs import watermark
from exchange.runs.handle import RunHandle
from exchange.runs.plan import TableDelivery
from exchange.runs.results import DeliveryResult, record_delivery, recorded
from exchange.runs.rundir import RunDir
from exchange.workspace import Workspace


def _projected(rd: RunDir, d: TableDelivery, resource: Resource) -> Iterator[pa.RecordBatch]:
    """The subscriber's granted fields of the valid rows at or past its own watermark."""
    fields = list(d.fields)
    cursor = resource.field(resource.cursor) if resource.cursor else None
    columns = list(fields)
    if d.since is not None and cursor is not None and cursor.name not in columns:
        columns.append(cursor.name)
    for batch in rd.batches("valid", columns=columns, batch_size=resource.batch_size):
        if d.since is not None and cursor is not None:
            col = batch.column(cursor.name)
            bound = pa.scalar(watermark.decode(d.since, cursor), type=col.type)
            batch = batch.filter(pc.fill_null(pc.greater_equal(col, bound), False))
        yield batch.select(fields)


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
    new_mark = high if high is not None else d.since
    started = time.perf_counter()
    try:
        target = ws.database(d.node)
        try:
            committed = target.read_marker(spec, d.subscription_id)
            if committed is not None and committed.run_id == run.id:
                rows = committed.rows  # the crash came after the target's commit
            else:
                target.ensure_table(spec)
                rows = target.merge(
                    spec,
                    _projected(rd, d, resource),
                    delete_missing=d.delete_missing,
                    marker=DeliveryMarker(d.subscription_id, run.id, new_mark, 0),
                    on_rows=on_rows,
                )
        finally:
            target.close()
    except (ExchangeError, sa.exc.SQLAlchemyError, OSError) as exc:
        message = str(exc) if isinstance(exc, ExchangeError) else _db_message(d.node, exc)
        result = DeliveryResult(
            d.subscription_id, d.node, d.table, "failed", 0, time.perf_counter() - started,
            d.since, message,
        )  # fmt: skip
        record_delivery(ws, result, run.id)
        return result
    crashpoint("load:committed")
    result = DeliveryResult(
        d.subscription_id, d.node, d.table, "delivered", rows, time.perf_counter() - started,
        new_mark,
    )  # fmt: skip
    record_delivery(ws, result, run.id)
    return result
