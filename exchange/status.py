"""What ``exchange status`` shows: last runs, and per subscriber its watermark and deliveries."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa

from exchange.store.models import Delivery, Run, Subscription, Watermark
from exchange.workflow.grants import file_dir
from exchange.workspace import Workspace


@dataclass(frozen=True)
class SubscriberStatus:
    subscription_id: int
    resource: str
    node: str
    table: str
    status: str
    valid_until: dt.date
    watermark: str | None
    rows_delivered: int
    last_delivery: dt.datetime | None
    last_error: str | None


def recent_runs(ws: Workspace, resource_code: str | None = None, limit: int = 10) -> list[Run]:
    if resource_code:
        ws.catalog.resource(resource_code)  # NotFound (exit 2) for a code the catalog lacks
    with ws.store.session() as s:
        q = sa.select(Run).order_by(Run.started_at.desc()).limit(limit)
        if resource_code:
            q = q.where(Run.resource_code == resource_code)
        return list(s.execute(q).scalars())


def subscriber_status(ws: Workspace, resource_code: str | None = None) -> list[SubscriberStatus]:
    out = []
    with ws.store.session() as s:
        q = sa.select(Subscription).order_by(Subscription.id)
        if resource_code:
            q = q.where(Subscription.resource_code == resource_code)
        for sub in s.execute(q).scalars():
            wm = s.get(Watermark, sub.id)
            total = s.execute(
                sa.select(sa.func.coalesce(sa.func.sum(Delivery.rows), 0)).where(
                    Delivery.subscription_id == sub.id, Delivery.status == "delivered"
                )
            ).scalar_one()
            latest = sa.select(Delivery).where(Delivery.subscription_id == sub.id)
            latest = latest.order_by(Delivery.finished_at.desc(), Delivery.id.desc()).limit(1)
            last = s.execute(latest).scalar()  # the last attempt: its error, if it failed
            ok = s.execute(latest.where(Delivery.status == "delivered")).scalar()
            out.append(
                SubscriberStatus(
                    subscription_id=sub.id,
                    resource=sub.resource_code,
                    node=sub.subscriber_node,
                    table=file_dir(s, sub) or sub.target_table,
                    status=sub.status,
                    valid_until=sub.valid_until,
                    watermark=wm.value if wm else None,
                    rows_delivered=int(total),
                    last_delivery=ok.finished_at if ok else None,  # refused ones never count
                    last_error=last.error if last is not None and last.status == "failed" else None,
                )
            )
    return out
