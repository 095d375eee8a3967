"""Rich output for the CLI: progress bars and tables. No logic lives here."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table
from rich.text import Text

from exchange.kernel.clock import shown

if TYPE_CHECKING:  # only annotations: importing the CLI must not load the engine
    from exchange.catalog.model import Catalog
    from exchange.runs.record import RunSummary
    from exchange.runs.results import DeliveryResult
    from exchange.status import RunState, SubscriberStatus
    from exchange.tables.check import CheckReport

# Off a terminal (Airflow task logs, CI, pipes) rich would wrap at 80 columns and split names.
_WIDTH = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", "200"))
console = Console(width=_WIDTH)
errors = Console(stderr=True, width=_WIDTH)


def target(node: str, table: str) -> str:
    """Where a subscription lands: ``node.table``, ``node:/dir`` for file subscriptions, and
    ``— (api)`` for an API subscription, which lands nowhere: it is called through the
    gateway."""
    if not node:
        return "— (api)"
    return f"{node}:{table}" if table.startswith("/") else f"{node}.{table}"


local = shown  # a stored UTC time as shown to people: Asia/Shanghai


class ProgressReporter:
    """Progress bars for extracts and loads; transient, so the summary stays readable. Off a
    terminal there are none: rich would draw nothing there but an empty line when it stops,
    printed before every result and error."""

    def __init__(self) -> None:
        # here: only the commands that move data draw bars (rich.progress is 10 ms of a start)
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not console.is_interactive,
        )
        self.results: list[DeliveryResult] = []

    def __enter__(self) -> ProgressReporter:
        self.progress.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.progress.stop()

    def task(self, label: str, total: int | None) -> Callable[[int], None]:
        tid = self.progress.add_task(label, total=total)
        return lambda n: self.progress.advance(tid, n)

    def delivered(self, result: DeliveryResult) -> None:
        self.results.append(result)


_DELIVERY = {"delivered": "[green]delivered", "held": "[yellow]held", "skipped": "[yellow]skipped"}


def run_table(summary: RunSummary, results: list[DeliveryResult], title: str = "") -> Table:
    t = Table(title=title or f"run {summary.run_id} of {summary.resource}: {summary.status}")
    notes = any(r.notes for r in results)  # e.g. "added column x to node.table"
    for col in ("subscription", "node.table", "status", "rows", "watermark", "seconds", "error"):
        t.add_column(col, overflow="fold")
    if notes:
        t.add_column("notes", overflow="fold")
    for r in results:
        t.add_row(
            str(r.subscription_id),
            target(r.node, r.table),
            _DELIVERY.get(r.status, "[red]failed"),
            f"{r.rows:,}",
            r.watermark or "-",
            f"{r.seconds:.2f}",
            r.error or "",
            *(["; ".join(r.notes)] if notes else []),
        )
    return t


_LEVEL = {
    "refused": "[red]refused",
    "unreachable": "[red]unreachable",
    "warning": "[yellow]warning",
    "note": "[cyan]note",
    "ok": "[green]ok",
}


def check_table(report: CheckReport) -> Table:
    """``exchange catalog check``: the provider's table and each subscriber's, line by line."""
    verdict = "a run would be refused" if report.refused else "no refusal"
    t = Table(title=f"catalog check of {report.resource}: {verdict}")
    for col in ("who", "node.table", "column", "verdict", "detail"):
        t.add_column(col, overflow="fold")
    for f in report.findings:
        t.add_row(
            f.role, target(f.node, f.table), f.column or "-", _LEVEL.get(f.level, f.level), f.detail
        )
    return t


def demo_table(
    label: str,
    summary: RunSummary,
    results: list[DeliveryResult],
    fields: dict[int, list[str]],
    seconds: float,
) -> Table:
    t = Table(
        title=f"{label} run {summary.run_id}: extracted {summary.extracted:,}, "
        f"valid {summary.valid:,}, quarantined {summary.quarantined:,}, {seconds:.1f} s"
    )
    for col in ("subscriber", "rows delivered", "fields", "watermark", "seconds"):
        t.add_column(col, overflow="fold")
    for r in results:
        t.add_row(
            target(r.node, r.table),
            f"{r.rows:,}",
            ", ".join(fields.get(r.subscription_id, [])),
            r.watermark or "-",
            f"{r.seconds:.2f}",
        )
    return t


def folder_demo_table(
    label: str, summary: RunSummary, results: list[DeliveryResult], seconds: float
) -> Table:
    """A folder run in the demo: files pulled once, then per subscriber what it received."""
    t = Table(
        title=f"{label} folder run {summary.run_id} of {summary.resource}: "
        f"pulled {summary.valid:,} of {summary.extracted:,} changed files once, {seconds:.1f} s"
    )
    for col in ("subscriber", "status", "files delivered or deleted", "seconds"):
        t.add_column(col, overflow="fold")
    for r in results:
        t.add_row(target(r.node, r.table), r.status, f"{r.rows:,}", f"{r.seconds:.2f}")
    return t


def count(n: int | None) -> str:
    """A run's count as shown: ``-`` when no step wrote it (nothing was parsed), not 0."""
    return "-" if n is None else f"{n:,}"


def runs_table(runs: list[RunState]) -> Table:
    t = Table(title="recent runs")
    for col in (
        "run",
        "resource",
        "status",
        "step",
        "extracted",
        "valid",
        "quarantined",
        "started (Asia/Shanghai)",
        "finished",
        "error",
    ):
        t.add_column(col, overflow="fold")
    for r in runs:
        t.add_row(
            r.id,
            r.resource_code,
            r.status,
            r.step,
            count(r.rows_extracted),
            count(r.rows_valid),
            count(r.rows_quarantined),
            local(r.started_at),
            local(r.finished_at),
            Text(r.error or ""),
        )
    return t


def lifecycle_table(code: str, runs: list[RunState]) -> Table:
    """``exchange runs R``: each run's state, last step, who holds it now, and its error."""
    t = Table(title=f"runs of {code}")
    for col in ("run", "state", "step", "lease holder", "started (Asia/Shanghai)", "finished"):
        t.add_column(col, overflow="fold")
    t.add_column("error", overflow="fold")
    for r in runs:
        state = f"{r.status} (resumable)" if r.resumable else r.status
        t.add_row(
            r.id,
            state,
            r.step,
            Text(r.holder or "-"),
            local(r.started_at),
            local(r.finished_at),
            Text(r.error or ""),
        )
    return t


def subscribers_table(rows: list[SubscriberStatus]) -> Table:
    t = Table(title="subscribers")
    for col in (
        "id",
        "resource",
        "origin",
        "node.table",
        "status",
        "valid until",
        "watermark",
        "rows delivered",
        "last delivery",
        "last error",
    ):
        t.add_column(col, overflow="fold")
    for s in rows:
        t.add_row(
            str(s.subscription_id),
            s.resource,
            Text(s.origin or "city"),
            target(s.node, s.table),
            s.status,
            str(s.valid_until),
            s.watermark or "-",
            f"{s.rows_delivered:,}",
            local(s.last_delivery),
            Text(s.last_error or ""),
        )
    return t


def catalog_table(catalog: Catalog) -> Table:
    """``exchange catalog list``: every resource, its kind, provider, share and origin (the
    city's own, or the national or provincial platform it is proxied from)."""
    t = Table(title=f"resources of {catalog.path}")
    for col in ("code", "name", "kind", "provider", "share", "origin"):
        t.add_column(col, overflow="fold")
    for r in sorted(catalog.resources.values(), key=lambda r: r.code):
        node = catalog.nodes.get(r.provider)
        dept = catalog.describe_department(node.department) if node and node.department else ""
        t.add_row(
            r.code,
            Text(r.name),
            r.kind,
            Text(f"{r.provider} ({dept})" if dept else r.provider),
            r.share,
            Text(r.origin.describe() if r.origin else "city"),
        )
    return t
