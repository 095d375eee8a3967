"""Step 2, extract once: stream the provider's table into the run's Parquet file.

A split full extract (``Plan.ranges``) reads each key range into its own part
(``extract-<k>``, its own done-file), side by side in this process or one Airflow task each
on any worker; ``join_ranges`` then writes the parts, in range order, as the one extract the
validate step reads (so whole-run rules such as ``unique`` see every range).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow.compute as pc

from connectors.base import KeyRange, SinceFilter
from connectors.prefetch import prefetch
from exchange.kernel.errors import BadInput, DataError
from exchange.kernel.faults import crashpoint
from exchange.runs import watermark
from exchange.runs.handle import RunHandle, set_step
from exchange.tables.plan import split_workers
from exchange.workspace import Workspace, source_spec
from quality.mask import mask_text

Progress = Callable[[int], None]
NOTHING_READ = "no deliverable subscription: nothing read"


def extract(ws: Workspace, run: RunHandle, on_rows: Progress | None = None) -> int:
    """Extract the rows the plan asks for; return their number. Done already: skip."""
    rd, resource = run.dir, run.resource
    if rd.is_done("extract"):
        return int(rd.read_done("extract")["rows"])
    if not run.plan.deliveries:  # nobody to deliver to: the provider is not even asked
        rd.reset("extract")
        rd.mark_done("extract", {"rows": 0, "high": None, "skipped": NOTHING_READ})
        set_step(ws, run.id, "extract", rows_extracted=0)
        return 0
    if run.plan.split:
        ranges = range(len(run.plan.ranges))
        workers = min(len(ranges), split_workers(len(ranges)))
        with ThreadPoolExecutor(workers, thread_name_prefix="exchange-extract") as pool:
            list(pool.map(lambda k: extract_range(ws, run, k, on_rows), ranges))
        return join_ranges(ws, run)
    cursor = resource.field(resource.cursor) if resource.cursor else None
    # From the lowest watermark, less the look-back window (rows committed late below it).
    since = (
        SinceFilter(cursor.name, watermark.below(run.plan.since, cursor, run.plan.cursor_lag))
        if cursor is not None and run.plan.since is not None
        else None
    )
    rows, high = _stream(ws, run, "extract", since, on_rows)
    rd.mark_done("extract", {"rows": rows, "high": watermark.encode(high)})
    set_step(ws, run.id, "extract", rows_extracted=rows)
    crashpoint("extract:done")
    return rows


def part_name(k: int) -> str:
    """The staged part of key range ``k`` (and its done-file's step name)."""
    return f"extract-{k}"


def key_range(run: RunHandle, k: int) -> KeyRange:
    """Range ``k`` of the plan as the connector's bound filter (range 0 takes NULL keys)."""
    plan = run.plan
    if not 0 <= k < len(plan.ranges):
        raise BadInput(f"run {run.id} has {len(plan.ranges)} key ranges, not a range {k}")
    field = run.resource.field(plan.split_by or "")
    planned = plan.ranges[k]
    return KeyRange(
        field.name,
        None,
        watermark.decode(planned.low, field),
        watermark.decode(planned.high, field),
        nulls=k == 0,
    )


def extract_range(ws: Workspace, run: RunHandle, k: int, on_rows: Progress | None = None) -> int:
    """Extract key range ``k`` of a split run into its own part; its rows. Done: skip."""
    rd, name = run.dir, part_name(k)
    if rd.is_done("extract"):
        return 0  # joined already: the parts are gone
    if rd.is_done(name):
        return int(rd.read_done(name)["rows"])
    rows, high = _stream(ws, run, name, key_range(run, k), on_rows)
    rd.mark_done(name, {"rows": rows, "high": watermark.encode(high)})
    crashpoint("extract:range")
    return rows


def join_ranges(ws: Workspace, run: RunHandle) -> int:
    """Write every range's part, in range order, as the run's one extract; its rows. Each
    range's row groups stay together, so a range's load reads only its own."""
    rd, resource = run.dir, run.resource
    names = [part_name(k) for k in range(len(run.plan.ranges))]
    if not rd.is_done("extract"):
        missing = [str(k) for k, n in enumerate(names) if not rd.is_done(n)]
        if missing:
            raise BadInput(f"run {run.id}: key ranges {', '.join(missing)} are not extracted yet")
        rd.reset("extract")
        counts: list[int] = []
        highs: list[Any] = []
        cursor = resource.field(resource.cursor) if resource.cursor else None
        with rd.writer("extract", source_spec(resource).arrow_schema()) as writer:
            for name in names:
                counts.append(0)
                for batch in rd.batches(name, batch_size=resource.batch_size):
                    writer.write_batch(batch)
                    counts[-1] += batch.num_rows
                high = rd.read_done(name)["high"]
                if cursor is not None and high is not None:
                    highs.append(watermark.decode(high, cursor))
        top = watermark.encode(max(highs)) if highs else None
        rd.mark_done("extract", {"rows": sum(counts), "high": top, "ranges": counts})
        set_step(ws, run.id, "extract", rows_extracted=sum(counts))
        crashpoint("extract:done")
    rd.reset(*names)  # their rows are in the extract now
    for name in names:
        rd.done_file(name).unlink(missing_ok=True)
    return int(rd.read_done("extract")["rows"])


def _stream(
    ws: Workspace,
    run: RunHandle,
    name: str,
    rows_filter: SinceFilter | None,
    on_rows: Progress | None,
) -> tuple[int, Any]:
    """Stream the provider's rows (those of ``rows_filter``) into part ``name``: their number
    and the highest cursor value among them."""
    rd, resource = run.dir, run.resource
    spec = source_spec(resource)
    cursor = resource.field(resource.cursor) if resource.cursor else None
    rd.reset(name)
    rows = 0
    high = None
    source = ws.database(resource.provider)
    try:
        with rd.writer(name, spec.arrow_schema()) as writer:
            # The driver reads the next batch while this thread writes the last one to Parquet.
            for batch in prefetch(source.read_batches(spec, rows_filter, resource.batch_size)):
                writer.write_batch(batch)
                rows += batch.num_rows
                if cursor is not None and batch.num_rows:
                    top = pc.max(batch.column(cursor.name)).as_py()
                    if top is not None and (high is None or top > high):
                        high = top
                if on_rows:
                    on_rows(batch.num_rows)
                crashpoint("extract:batch")
    except DataError as exc:
        # The connector quotes the row key and the value that did not fit: shown, logged and
        # kept on the run, so an ID or mobile number in them is masked.
        raise DataError(mask_text(f"resource {resource.code}: {exc}")) from None
    finally:
        source.close()
    return rows, high
