"""Great Expectations 1.x: the resource's rules as an ExpectationSuite, and a report with
Data Docs over the last run's staged data.

GX is the suite format, the report and the HTML, never the hot path (it took 2.2 s for 1M
rows and 5 checks where pyarrow.compute took 0.16 s). It is imported here only, lazily, inside
the functions that need it: ``exchange run`` never loads it.

The project's GX directory is ``$EXCHANGE_HOME/gx`` (a GX file context): suites in
``gx/expectations/<resource>.json``, Data Docs in ``gx/uncommitted/data_docs/local_site/``.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from exchange.catalog.model import Resource
from exchange.kernel.clock import local_now
from exchange.kernel.errors import NotFound
from exchange.runs.rundir import RunDir
from exchange.store.models import Run
from exchange.workspace import Workspace
from quality import rules_for_resource

SAMPLE_LIMIT = 200_000  # rows GX validates at most; larger runs are sampled evenly
DATASOURCE = "exchange_staged"


def suite_document(resource: Resource, now: dt.datetime | None = None) -> dict[str, Any]:
    """The resource's rules as a GX ExpectationSuite document (no GX import needed).

    Rules with no GX counterpart (check characters, birth dates, not-in-the-future) are
    listed in the suite's meta: the engine checks them, GX does not."""
    rules = rules_for_resource(resource, now or local_now())
    expectations: list[dict[str, Any]] = []
    engine_only: list[str] = []
    for rule in rules:
        e = rule.expectation()
        if e is None:
            engine_only.append(rule.reason())
            continue
        expectations.append({**e, "meta": {"rule": rule.reason(), "dimension": rule.dimension}})
    q = resource.quality
    if q.row_count_min is not None or q.row_count_max is not None:
        kwargs = {
            k: v
            for k, v in (("min_value", q.row_count_min), ("max_value", q.row_count_max))
            if v is not None
        }
        expectations.append(
            {
                "type": "expect_table_row_count_to_be_between",
                "kwargs": kwargs,
                "meta": {"rule": "row_count", "dimension": "completeness"},
            }
        )
    return {
        "name": resource.code,
        "expectations": expectations,
        "meta": {
            "resource": resource.code,
            "title": resource.name,
            "checked_by_the_engine_only": engine_only,
        },
    }


def _context(ws: Workspace) -> Any:
    """The project's GX file context under EXCHANGE_HOME (created on first use)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ws.settings.home.mkdir(parents=True, exist_ok=True)
    ctx = gx.get_context(mode="file", project_root_dir=str(ws.settings.home))
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    return ctx


def _suite(ctx: Any, resource: Resource) -> Any:
    import great_expectations as gx

    return ctx.suites.add_or_update(gx.ExpectationSuite(**suite_document(resource)))


def gx_dir(ws: Workspace) -> Path:
    return ws.settings.home / "gx"


def export_suite(ws: Workspace, resource_code: str) -> Path:
    """Write the resource's suite into the project's GX directory; return the JSON file."""
    resource = ws.catalog.resource(resource_code)
    _suite(_context(ws), resource)
    return gx_dir(ws) / "expectations" / f"{resource.code}.json"


def table_for_gx(table: pa.Table) -> Any:
    """A pandas frame GX compares like the engine: dates as datetimes, decimals as floats."""
    columns = []
    for f in table.schema:
        col = table.column(f.name)
        if pa.types.is_decimal(f.type):
            col = pc.cast(col, pa.float64())
        elif pa.types.is_date(f.type):
            col = pc.cast(col, pa.timestamp("us"))
        columns.append(col)
    return pa.table(columns, names=table.schema.names).to_pandas()


def sample(rd: RunDir, limit: int, batch_size: int = 50_000) -> tuple[pa.Table, int]:
    """The staged extract, or every k-th row of it when it has more than ``limit`` rows
    (deterministic, read a batch at a time); also the number of rows staged."""
    import pyarrow.parquet as pq

    path = rd.part("extract")
    total = pq.ParquetFile(path).metadata.num_rows
    if total <= limit:
        return pq.read_table(path), total
    step = -(-total // limit)
    parts: list[pa.Table] = []
    offset = 0
    for batch in rd.batches("extract", batch_size=batch_size):
        first = (-offset) % step
        idx = pa.array(range(first, batch.num_rows, step), pa.int64())
        parts.append(pa.Table.from_batches([batch.take(idx)]))
        offset += batch.num_rows
    return pa.concat_tables(parts), total


@dataclass(frozen=True)
class ExpectationOutcome:
    expectation: str
    column: str
    rule: str
    success: bool
    unexpected: int | None


@dataclass(frozen=True)
class Report:
    resource: str
    run_id: str
    rows_staged: int
    rows_checked: int
    success: bool
    outcomes: list[ExpectationOutcome]
    docs: Path
    suite: Path


def last_staged_run(ws: Workspace, resource_code: str) -> tuple[str, RunDir]:
    """The newest run of the resource whose extract is still staged."""
    with ws.store.session() as s:
        runs = list(
            s.execute(
                sa.select(Run)
                .where(Run.resource_code == resource_code)
                .order_by(Run.started_at.desc())
            ).scalars()
        )
    for run in runs:
        rd = RunDir(run.staging_dir)
        if rd.is_done("extract") and rd.part("extract").exists():
            return run.id, rd
    raise NotFound(f"resource {resource_code} has no run with staged data; run it first")


def run_report(ws: Workspace, resource_code: str, limit: int = SAMPLE_LIMIT) -> Report:
    """Validate the last run's staged data with GX and build Data Docs."""
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction

    resource = ws.catalog.resource(resource_code)
    run_id, rd = last_staged_run(ws, resource.code)
    table, staged = sample(rd, limit, resource.batch_size)
    ctx = _context(ws)
    suite = _suite(ctx, resource)
    source = ctx.data_sources.add_or_update_pandas(name=DATASOURCE)
    try:
        asset = source.get_asset(resource.code)
    except LookupError:
        asset = source.add_dataframe_asset(name=resource.code)
    try:
        batch_def = asset.get_batch_definition("staged")
    except KeyError:
        batch_def = asset.add_batch_definition_whole_dataframe("staged")
    definition = ctx.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=resource.code, data=batch_def, suite=suite)
    )
    checkpoint = ctx.checkpoints.add_or_update(
        gx.Checkpoint(
            name=resource.code,
            validation_definitions=[definition],
            actions=[UpdateDataDocsAction(name="data_docs")],
            result_format={"result_format": "SUMMARY"},
        )
    )
    result = checkpoint.run(batch_parameters={"dataframe": table_for_gx(table)})
    outcomes: list[ExpectationOutcome] = []
    for vr in result.run_results.values():
        for r in vr.results:
            cfg = r.expectation_config
            kwargs = cfg.kwargs
            outcomes.append(
                ExpectationOutcome(
                    expectation=cfg.type,
                    column=kwargs.get("column")
                    or ",".join(str(kwargs[k]) for k in ("column_A", "column_B") if k in kwargs),
                    rule=(cfg.meta or {}).get("rule", ""),
                    success=bool(r.success),
                    unexpected=r.result.get("unexpected_count"),
                )
            )
    docs = gx_dir(ws) / "uncommitted" / "data_docs" / "local_site" / "index.html"
    return Report(
        resource=resource.code,
        run_id=run_id,
        rows_staged=staged,
        rows_checked=table.num_rows,
        success=bool(result.success),
        outcomes=outcomes,
        docs=docs,
        suite=gx_dir(ws) / "expectations" / f"{resource.code}.json",
    )
