"""What one subscriber got from one run, and the ledger row that records it (every kind).

A delivery is recorded in the metadata store with its outcome, an audit event and, when it
succeeded, the subscriber's new watermark; the first successful delivery of a subscription
also completes its implementation in the workflow (same transaction).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import sqlalchemy as sa

from exchange import audit
from exchange.kernel.clock import utcnow
from exchange.runs.delivered import remember
from exchange.store.models import Delivery, Subscription, Watermark
from exchange.workflow.engine import on_delivered
from exchange.workspace import Workspace


@dataclass(frozen=True)
class DeliveryResult:
    """What one subscriber got from one run."""

    subscription_id: int
    node: str
    table: str  # the target table, or ``/dir`` for files
    status: str  # delivered | failed | held (quality held the run back) | skipped (not allowed)
    rows: int  # rows merged, or files put and deleted
    seconds: float
    watermark: str | None = None
    error: str | None = None
    notes: tuple[str, ...] = ()  # what the delivery changed besides rows: "added column x to …"


def recorded(ws: Workspace, run_id: str, subscription_id: int) -> DeliveryResult | None:
    """This run's delivery to the subscription as already recorded (a resumed run)."""
    with ws.store.session() as s:
        row = s.execute(
            sa.select(Delivery).where(
                Delivery.run_id == run_id, Delivery.subscription_id == subscription_id
            )
        ).scalar()
        if row is None:
            return None
        return DeliveryResult(
            subscription_id, "", "", row.status, row.rows, row.seconds or 0.0, row.watermark,
            row.error,
        )  # fmt: skip


def deliveries_recorded(ws: Workspace, run_id: str) -> int:
    """How many subscribers this run has recorded a delivery for (any outcome): once one has,
    the run's staged copies are what it was served from, and are not redone from the source."""
    with ws.store.session() as s:
        q = sa.select(sa.func.count()).select_from(Delivery).where(Delivery.run_id == run_id)
        return int(s.execute(q).scalar_one())


def record_delivery(
    ws: Workspace, result: DeliveryResult, run_id: str, held_rows: pa.Array | None = None
) -> None:
    """Write (or overwrite) the run's delivery row for the subscriber, audit it, and move
    the watermark and the workflow on when it was delivered; ``held_rows`` (a table
    subscription's rows in its new watermark's window) replace what it held, in the same
    transaction (``exchange.runs.delivered``)."""
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
        if result.status == "delivered" and held_rows is not None:
            remember(s, result.subscription_id, held_rows)
        # Who received what, in the tamper-evident record itself (``exchange audit who``):
        # the subscription's row may change later, its event does not.
        sub = s.get(Subscription, result.subscription_id)
        audit.append(
            s,
            f"delivery.{result.status}",
            f"subscription:{result.subscription_id}",
            {
                "run": run_id,
                **_receiver(sub),
                "node": result.node,
                "table": result.table,
                "rows": result.rows,
                "watermark": result.watermark,
                "error": result.error,
                **({"notes": list(result.notes)} if result.notes else {}),
            },
        )
        if result.status == "delivered":  # the first delivery completes implementation
            on_delivered(s, result.subscription_id, run_id, utcnow())


def _receiver(sub: Subscription | None) -> dict[str, Any]:
    """The resource, the receiving department and the fields granted at the delivery."""
    if sub is None:
        return {}
    return {
        "resource": sub.resource_code,
        "department": sub.department_code,
        "department_name": sub.department_name,
        "fields": list(sub.fields),
    }
