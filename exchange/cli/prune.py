"""``exchange prune [--dry-run]``: remove finished runs' staging directories past the
retention period (``EXCHANGE_RETENTION``) and reduce reviewed quarantine files to their
masked reasons (``exchange.quality.retention``)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

from exchange.cli.options import DEFAULT_CATALOG, CatalogOpt, workspace
from exchange.cli.render import console

DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Only print what would be removed; change nothing.")
]


def size(n: int) -> str:
    """Bytes as an operator reads them: 0 B, 12.3 KiB, 4.0 MiB, ..."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def period(retention: dt.timedelta) -> str:
    """A retention period as ``EXCHANGE_RETENTION`` writes it: whole days as ``7d``, anything
    else (``0h`` among them) in hours."""
    hours = retention.total_seconds() / 3600
    return f"{hours / 24:g}d" if hours and hours % 24 == 0 else f"{hours:g}h"


def prune(catalog: CatalogOpt = DEFAULT_CATALOG, dry_run: DryRunOpt = False) -> None:
    """Remove the staging directories of runs finished longer ago than $EXCHANGE_RETENTION
    (default 7d); keep only the masked reasons of quarantined rows whose tickets are closed."""
    from exchange.quality.retention import prune as run_prune

    with workspace(catalog) as ws:
        report = run_prune(ws, dry_run=dry_run)
    pruned = report.pruned
    assert pruned is not None
    verb = "would remove" if dry_run else "removed"
    for r in pruned.runs:
        line = f"{verb} run {r.run_id} ({r.resource}, {r.status}): {r.path}, "
        console.print(line + f"{r.files} files, {size(r.bytes)}", markup=False, highlight=False)
    removed = {r.run_id for r in pruned.runs}
    # A run removed whole had its quarantine file reduced first: its removal says it all.
    for run_id in (r for r in report.scrubbed if r not in removed):
        console.print(
            f"{'would reduce' if dry_run else 'reduced'} run {run_id}'s quarantine file to the "
            "masked reasons (no open ticket lists it)",
            markup=False,
            highlight=False,
        )
    for run_id, why in pruned.skipped.items():
        console.print(f"left run {run_id}: {why}", markup=False, highlight=False)
    n = len(pruned.runs)
    console.print(
        f"prune (retention {period(pruned.retention)}): {verb} {n} run{'' if n == 1 else 's'}, "
        f"{size(pruned.bytes)}",
        markup=False,
        highlight=False,
    )


def register(root: typer.Typer) -> None:
    """The top-level command of this module: ``exchange prune``."""
    root.command("prune")(prune)
