"""The last step of every run, record: close the run with its outcome."""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa

from exchange import audit
from exchange.kernel.clock import utcnow
from exchange.runs.handle import RunHandle
from exchange.store.models import Delivery, Run
from exchange.workspace import Workspace


@dataclass
class RunSummary:
    """A finished run as the CLI and the DAG report it."""

    run_id: str
    resource: str
    status: str  # succeeded | failed | held
    extracted: int
    valid: int
    quarantined: int
    failures: dict[int, str] = field(default_factory=dict)
    held: str | None = None  # why validation held the whole delivery back
    stale: str | None = None  # the data is older than its update cycle allows
    note: str | None = None  # e.g. why nothing was read (no deliverable subscription)
    notes: tuple[str, ...] = ()  # what starting the run did (an earlier run abandoned), and
    # what its extract decided (a key in two files: the later file's row)


def finish(ws: Workspace, run: RunHandle) -> RunSummary:
    """Mark the run succeeded (every planned subscriber served, or skipped: no longer allowed
    to receive it), held (quality held it back: nobody was served) or failed, and audit it."""
    checked = run.dir.read_done("validate") if run.dir.is_done("validate") else {}
    held = checked.get("held")
    extracted = run.dir.read_done("extract") if run.dir.is_done("extract") else {}
    notes = run.notes + tuple(extracted.get("notes", ()))  # the extract's: keys in two files
    with ws.store.session() as s:
        rows = {
            d.subscription_id: d
            for d in s.execute(sa.select(Delivery).where(Delivery.run_id == run.id)).scalars()
        }
        failures = {
            sid: (rows[sid].error if sid in rows else "not delivered") or "failed"
            for sid in run.plan.subscription_ids
            if sid not in rows or rows[sid].status not in ("delivered", "skipped")
        }
        r = s.get(Run, run.id)
        assert r is not None
        r.status = "held" if held else "failed" if failures else "succeeded"
        r.step = "record"
        r.finished_at = utcnow()
        r.error = "; ".join(f"subscription {k}: {v}" for k, v in sorted(failures.items())) or None
        if held and not r.error:
            r.error = f"held back: {held}"
        audit.configure(ws.store, ws.settings)  # its key and witness are this home's
        audit.append(
            s,
            f"run.{r.status}",
            f"run:{run.id}",
            {
                "resource": r.resource_code,
                "failed": sorted(failures),
                **({"notes": list(notes)} if notes else {}),
            },
            checkpoint=True,  # the end of every run is sealed in a checkpoint
        )
        return RunSummary(
            run.id,
            r.resource_code,
            r.status,
            r.rows_extracted or 0,
            r.rows_valid or 0,
            r.rows_quarantined or 0,
            failures,
            held,
            checked.get("stale"),
            extracted.get("skipped"),
            notes,
        )
