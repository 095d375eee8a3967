"""Step 5, record: close the run with its outcome."""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa

from exchange import audit
from exchange.pipeline.plan import run_dir_of
from exchange.quality.record import after_deliveries
from exchange.store.models import Delivery, Run, utcnow
from exchange.workspace import Workspace


@dataclass
class RunSummary:
    """A finished run as the CLI and the DAG report it."""

    run_id: str
    resource: str
    status: str
    extracted: int
    valid: int
    quarantined: int
    failures: dict[int, str] = field(default_factory=dict)
    held: str | None = None  # why validation held the whole delivery back
    stale: str | None = None  # the data is older than its update cycle allows


def finish(ws: Workspace, run_id: str) -> RunSummary:
    """Mark the run succeeded (every planned subscriber served) or failed, and audit it."""
    run, rd = run_dir_of(ws, run_id)
    planned = [d["subscription_id"] for d in rd.plan()["deliveries"]]
    after_deliveries(ws, run_id, run.resource_code, rd)
    checked = rd.read_done("validate") if rd.is_done("validate") else {}
    with ws.store.session() as s:
        rows = {
            d.subscription_id: d
            for d in s.execute(sa.select(Delivery).where(Delivery.run_id == run_id)).scalars()
        }
        failures = {
            sid: (rows[sid].error if sid in rows else "not delivered") or "failed"
            for sid in planned
            if sid not in rows or rows[sid].status != "delivered"
        }
        r = s.get(Run, run_id)
        assert r is not None
        r.status = "held" if checked.get("held") else "failed" if failures else "succeeded"
        r.step = "record"
        r.finished_at = utcnow()
        r.error = "; ".join(f"subscription {k}: {v}" for k, v in sorted(failures.items())) or None
        if checked.get("held") and not r.error:
            r.error = f"held back: {checked['held']}"
        audit.append(
            s,
            f"run.{r.status}",
            f"run:{run_id}",
            {"resource": r.resource_code, "failed": sorted(failures)},
        )
        return RunSummary(
            run_id,
            r.resource_code,
            r.status,
            r.rows_extracted or 0,
            r.rows_valid or 0,
            r.rows_quarantined or 0,
            failures,
            checked.get("held"),
            checked.get("stale"),
        )
