"""What the record step learns for quality once a run's deliveries are done."""

from __future__ import annotations

from exchange.pipeline.staging import RunDir
from exchange.quality.error_reports import record_fix_deliveries
from exchange.quality.quarantine import release_fixed
from exchange.workspace import Workspace


def after_deliveries(ws: Workspace, run_id: str, resource_code: str, rd: RunDir) -> None:
    """Rows quarantined earlier and delivered now are released (fixed at the source), and
    open error reports note the deliveries that carried their rows. Nothing for a held run."""
    if not rd.is_done("validate") or rd.read_done("validate").get("held"):
        return
    resource = ws.catalog.resource(resource_code)
    release_fixed(ws, run_id, resource, rd)
    record_fix_deliveries(ws, run_id, resource, rd)
