"""Step 4, load many: deliver the valid rows to one subscriber, exactly once.

Exactly once rests on the delivery marker that ``merge`` writes in the subscriber's own
database, in the same transaction as the rows. If the process dies before that commit,
nothing changed there and the load is redone; if it dies after, the marker names this run
and the load only records what was already delivered.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from connectors.base import DeliveryMarker, TableSpec
from connectors.secrets import redact
from exchange import audit
from exchange.catalog.model import Resource
from exchange.kernel.errors import ExchangeError
from exchange.kernel.faults import crashpoint
from exchange.pipeline import watermark
from exchange.pipeline.plan import run_dir_of
from exchange.pipeline.staging import RunDir
from exchange.store.models import Delivery, Watermark, utcnow
from exchange.workflow.engine import on_delivered
from exchange.workspace import Workspace


@dataclass(frozen=True)
class DeliveryResult:
    """What one subscriber got from one run."""

    subscription_id: int
    node: str
    table: str
    status: str  # delivered | failed | held (validation held the run's delivery back)
    rows: int
    seconds: float
    watermark: str | None = None
    error: str | None = None


def planned_delivery(rd: RunDir, subscription_id: int) -> dict[str, Any]:
    for d in rd.plan()["deliveries"]:
        if d["subscription_id"] == subscription_id:
            return d
    raise KeyError(f"subscription {subscription_id} is not in run {rd.path.name}'s plan")


def _projected(
    rd: RunDir, delivery: dict[str, Any], resource: Resource
) -> Iterator[pa.RecordBatch]:
    """The subscriber's granted fields of the valid rows at or past its own watermark."""
    fields = delivery["fields"]
    cursor = resource.field(resource.cursor) if resource.cursor else None
    since = delivery["since"]
    columns = list(fields)
    if since is not None and cursor is not None and cursor.name not in columns:
        columns.append(cursor.name)
    for batch in rd.batches("valid", columns=columns, batch_size=resource.batch_size):
        if since is not None and cursor is not None:
            col = batch.column(cursor.name)
            bound = pa.scalar(watermark.decode(since, cursor), type=col.type)
            batch = batch.filter(pc.fill_null(pc.greater_equal(col, bound), False))
        yield batch.select(fields)


def _recorded(ws: Workspace, run_id: str, subscription_id: int) -> Delivery | None:
    with ws.store.session() as s:
        return s.execute(
            sa.select(Delivery).where(
                Delivery.run_id == run_id, Delivery.subscription_id == subscription_id
            )
        ).scalar()


def _record(ws: Workspace, result: DeliveryResult, run_id: str) -> None:
    with ws.store.session() as s:
        row = s.execute(
            sa.select(Delivery).where(
                Delivery.run_id == run_id, Delivery.subscription_id == result.subscription_id
            )
        ).scalar()
        if row is None:
            row = Delivery(run_id=run_id, subscription_id=result.subscription_id)
            s.add(row)
        row.status, row.rows, row.seconds = result.status, result.rows, result.seconds
        row.watermark, row.error, row.finished_at = result.watermark, result.error, utcnow()
        if result.status == "delivered" and result.watermark is not None:
            wm = s.get(Watermark, result.subscription_id)
            if wm is None:
                s.add(
                    Watermark(
                        subscription_id=result.subscription_id,
                        value=result.watermark,
                        run_id=run_id,
                    )
                )
            else:
                wm.value, wm.run_id = result.watermark, run_id
        audit.append(
            s,
            f"delivery.{result.status}",
            f"subscription:{result.subscription_id}",
            {
                "run": run_id,
                "node": result.node,
                "table": result.table,
                "rows": result.rows,
                "watermark": result.watermark,
                "error": result.error,
            },
        )
        if result.status == "delivered":  # the first delivery completes implementation
            on_delivered(s, result.subscription_id, run_id, utcnow())


def _db_message(node: str, exc: Exception) -> str:
    detail = str(getattr(exc, "orig", None) or exc).strip()
    first = detail.splitlines()[0] if detail else type(exc).__name__
    return f"node {node!r}: {redact(first)}"


def load_subscriber(
    ws: Workspace, run_id: str, subscription_id: int, on_rows: Callable[[int], None] | None = None
) -> DeliveryResult:
    """Deliver this run to one subscription; failures are recorded and returned, not raised."""
    run, rd = run_dir_of(ws, run_id)
    d = planned_delivery(rd, subscription_id)
    done = _recorded(ws, run_id, subscription_id)
    if done is not None and done.status == "delivered":
        return DeliveryResult(
            subscription_id,
            d["node"],
            d["table"],
            "delivered",
            done.rows,
            done.seconds or 0.0,
            done.watermark,
        )
    held = rd.read_done("validate").get("held")
    if held:  # too many bad rows: nobody gets this run, watermarks stay where they were
        result = DeliveryResult(
            subscription_id, d["node"], d["table"], "held", 0, 0.0, d["since"], f"held back: {held}"
        )
        _record(ws, result, run_id)
        return result
    resource = ws.catalog.resource(run.resource_code)
    spec = TableSpec(
        name=d["table"],
        fields=tuple(resource.field(f) for f in d["fields"]),
        primary_key=resource.primary_key,
        schema=d["schema"],
    )
    high = rd.read_done("extract")["high"] if resource.cursor else None
    new_mark = high if high is not None else d["since"]
    started = time.perf_counter()
    try:
        target = ws.database(d["node"])
        try:
            committed = target.read_marker(spec, subscription_id)
            if committed is not None and committed.run_id == run_id:
                rows = committed.rows  # the crash came after the target's commit
            else:
                target.ensure_table(spec)
                rows = target.merge(
                    spec,
                    _projected(rd, d, resource),
                    delete_missing=d["delete_missing"],
                    marker=DeliveryMarker(subscription_id, run_id, new_mark, 0),
                    on_rows=on_rows,
                )
        finally:
            target.close()
    except (ExchangeError, sa.exc.SQLAlchemyError, OSError) as exc:
        message = str(exc) if isinstance(exc, ExchangeError) else _db_message(d["node"], exc)
        result = DeliveryResult(
            subscription_id,
            d["node"],
            d["table"],
            "failed",
            0,
            time.perf_counter() - started,
            d["since"],
            message,
        )
        _record(ws, result, run_id)
        return result
    crashpoint("load:committed")
    result = DeliveryResult(
        subscription_id,
        d["node"],
        d["table"],
        "delivered",
        rows,
        time.perf_counter() - started,
        new_mark,
    )
    _record(ws, result, run_id)
    return result
