"""What the record step learns for quality once a run's deliveries are done."""

from __future__ import annotations

from exchange.quality.error_reports import record_fix_deliveries
from exchange.quality.quarantine import release_fixed
from exchange.runs.handle import RunHandle
from exchange.workspace import Workspace


def after_deliveries(ws: Workspace, run: RunHandle) -> None:
    """Rows quarantined earlier and delivered now are released (fixed at the source), and
    open error reports note the deliveries that carried their rows. Nothing for a held run."""
    rd = run.dir
    if not rd.is_done("validate") or rd.read_done("validate").get("held"):
        return
    release_fixed(ws, run.id, run.resource, rd)
    record_fix_deliveries(ws, run.id, run.resource, rd)
