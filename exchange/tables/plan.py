"""Step 1 for tables, plan: which subscriptions receive this run, and from which cursor to
extract once."""

from __future__ import annotations

from exchange.catalog.model import Resource
from exchange.runs import watermark
from exchange.runs.handle import RunHandle, active_subscriptions, new_run_id, start_run, watermarks
from exchange.runs.plan import Plan, TableDelivery
from exchange.workspace import Workspace


def plan_table(ws: Workspace, resource: Resource, *, full: bool = False) -> RunHandle:
    """Create a table run and its plan."""
    subs = active_subscriptions(ws, resource.code)
    marks = watermarks(ws, [x.id for x in subs])
    incremental = resource.mode == "incremental" and not full
    deliveries = [
        TableDelivery(
            subscription_id=sub.id,
            node=sub.subscriber_node,
            schema=sub.target_schema,
            table=sub.target_table,
            fields=tuple(f for f in resource.field_names if f in sub.fields),
            since=marks.get(sub.id) if incremental else None,
            delete_missing=not incremental,
        )
        for sub in subs
    ]
    # Extract once from the lowest cursor any subscriber needs; a new subscriber needs all.
    sinces = [d.since for d in deliveries]
    extract_since = None
    if incremental and sinces and None not in sinces:
        field = resource.field(resource.cursor or "")
        extract_since = min(sinces, key=lambda v: watermark.decode(v, field))
    plan = Plan(
        run_id=new_run_id(),
        resource=resource.code,
        full=full,
        deliveries=tuple(deliveries),
        mode=resource.mode,
        since=extract_since,
        cursor_lag=resource.cursor_lag if resource.mode == "incremental" else 0,
    )
    return start_run(ws, plan, {"since": extract_since})
