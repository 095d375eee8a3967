"""The incremental window of one table delivery: from where its rows are taken (its watermark
less the resource's ``cursor_lag``), where its watermark moves (never backwards), and the
memory of the rows it already holds there (``exchange.runs.delivered``)."""

from __future__ import annotations

from typing import Any

from exchange.runs import watermark
from exchange.runs.delivered import RowMemory, held_rows
from exchange.runs.handle import RunHandle
from exchange.runs.plan import TableDelivery
from exchange.workspace import Workspace


def start(run: RunHandle, d: TableDelivery) -> Any:
    """The lowest cursor value ``d`` takes: its watermark less the look-back window (None:
    every row)."""
    resource = run.resource
    if d.since is None or resource.cursor is None:
        return None
    return watermark.below(d.since, resource.field(resource.cursor), run.plan.cursor_lag)


def new_mark(run: RunHandle, d: TableDelivery, high: str | None) -> str | None:
    """The watermark after ``d``: the extract's highest cursor value, or the old watermark if
    that is higher (a look-back window can bring only rows below it)."""
    resource = run.resource
    if high is None or d.since is None or resource.cursor is None:
        return high if high is not None else d.since
    cursor = resource.field(resource.cursor)
    if watermark.decode(high, cursor) < watermark.decode(d.since, cursor):
        return d.since
    return high


def memory(ws: Workspace, run: RunHandle, d: TableDelivery, mark: str | None) -> RowMemory | None:
    """What ``d`` holds in its window, for an incremental resource (None: a snapshot)."""
    resource = run.resource
    if resource.mode != "incremental" or resource.cursor is None:
        return None
    cursor = resource.field(resource.cursor)
    held = held_rows(ws, d.subscription_id)
    return RowMemory(
        d.subscription_id,
        list(d.fields),
        cursor.name,
        held,
        old_mark=watermark.decode(d.since, cursor),
        floor=watermark.below(mark, cursor, run.plan.cursor_lag),
        drop=not d.delete_missing,
    )
