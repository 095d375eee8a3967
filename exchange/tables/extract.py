"""Step 2, extract once: stream the provider's table into the run's Parquet file."""

from __future__ import annotations

from collections.abc import Callable

import pyarrow.compute as pc

from connectors.base import SinceFilter
from connectors.prefetch import prefetch
from exchange.kernel.errors import DataError
from exchange.kernel.faults import crashpoint
from exchange.runs import watermark
from exchange.runs.handle import RunHandle, set_step
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
    spec = source_spec(resource)
    cursor = resource.field(resource.cursor) if resource.cursor else None
    # From the lowest watermark, less the look-back window (rows committed late below it).
    since = (
        SinceFilter(cursor.name, watermark.below(run.plan.since, cursor, run.plan.cursor_lag))
        if cursor is not None and run.plan.since is not None
        else None
    )
    rd.reset("extract")
    rows = 0
    high = None
    source = ws.database(resource.provider)
    try:
        with rd.writer("extract", spec.arrow_schema()) as writer:
            # The driver reads the next batch while this thread writes the last one to Parquet.
            for batch in prefetch(source.read_batches(spec, since, resource.batch_size)):
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
    rd.mark_done("extract", {"rows": rows, "high": watermark.encode(high)})
    set_step(ws, run.id, "extract", rows_extracted=rows)
    crashpoint("extract:done")
    return rows
