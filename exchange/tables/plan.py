"""Step 1 for tables, plan: which subscriptions receive this run, and from which cursor to
extract once."""

from __future__ import annotations

import os

from exchange.catalog.model import Resource
from exchange.runs import watermark
from exchange.runs.handle import RunHandle, active_subscriptions, new_run_id, start_run, watermarks
from exchange.runs.plan import Plan, PlannedRange, TableDelivery
from exchange.workspace import Workspace, source_spec

#: Key types cut by equal widths between MIN and MAX; any other by offsets in key order.
NUMERIC_KEYS = ("smallint", "integer", "bigint", "decimal", "double")


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
    split = resource.split if deliveries and not incremental else None
    plan = Plan(
        run_id=new_run_id(),
        resource=resource.code,
        full=full,
        deliveries=tuple(deliveries),
        mode=resource.mode,
        since=extract_since,
        cursor_lag=resource.cursor_lag if resource.mode == "incremental" else 0,
        split_by=split.by if split else None,
        ranges=key_ranges(ws, resource) if split else (),
    )
    return start_run(ws, plan, {"since": extract_since})


def key_ranges(ws: Workspace, resource: Resource) -> tuple[PlannedRange, ...]:
    """The ranges a split full extract is cut into, from the source's own key values (an
    empty table or one key value: no ranges, the run is not split)."""
    assert resource.split is not None
    by = resource.field(resource.split.by)
    source = ws.database(resource.provider)
    try:
        cuts = source.key_cuts(
            source_spec(resource), by.name, resource.split.chunks, by.type in NUMERIC_KEYS
        )
    finally:
        source.close()
    if not cuts:
        return ()
    bounds = [None, *(watermark.encode(c) for c in cuts), None]
    return tuple(PlannedRange(lo, hi) for lo, hi in zip(bounds, bounds[1:], strict=False))


def split_workers(ranges: int) -> int:
    """How many key ranges of a split run one process extracts or loads at once:
    $EXCHANGE_SPLIT_WORKERS, else the ranges or the CPUs, whichever is fewer."""
    given = os.environ.get("EXCHANGE_SPLIT_WORKERS")
    return max(1, int(given) if given else min(ranges, os.cpu_count() or 1))
