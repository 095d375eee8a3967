"""What every resource kind shares about a run: starting or resuming it, the subscriptions it
serves, and the handle a step works with (run id, resource, directory, typed plan).

A run is a row in the metadata store and a directory on disk. The handle is built once per
step from both; the kinds' steps take it instead of re-reading the row and ``plan.json``.

A run is unfinished until its record step closes it (``finished_at`` set): ``running``, or
``failed`` when a step raised (its error kept). An unfinished run is resumed by the next run
of the resource, unless that one abandons it (``--full``, ``--restart``, or its directory is
gone): the run is closed ``abandoned`` and its staging directory removed.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass, replace
from typing import Any

import sqlalchemy as sa

from exchange import audit
from exchange.catalog.model import Resource
from exchange.kernel.clock import today, utcnow
from exchange.kernel.errors import NotFound, RunDirGone
from exchange.runs.plan import Plan
from exchange.runs.rundir import RunDir, remove_run_dir, tighten_runs_dir
from exchange.store.models import Run, Subscription, Watermark
from exchange.workflow.engine import deliverable
from exchange.workspace import Workspace


@dataclass(frozen=True)
class RunHandle:
    """One run as a step sees it."""

    id: str
    resource: Resource
    dir: RunDir
    plan: Plan
    notes: tuple[str, ...] = ()  # what starting it did first (e.g. abandoned an earlier run)

    @classmethod
    def open(cls, ws: Workspace, run_id: str) -> RunHandle:
        """The run's handle: its row and directory, read once."""
        with ws.store.session() as s:
            run = s.get(Run, run_id)
            if run is None:
                raise NotFound(f"no run {run_id!r} in the metadata store")
            code, staging = run.resource_code, run.staging_dir
        rd = RunDir(staging)
        if not (rd.path / "plan.json").is_file():
            raise RunDirGone(run_id, code, staging)
        return cls(run_id, ws.catalog.resource(code), rd, Plan.from_json(rd.plan()))

    def noting(self, *notes: str) -> RunHandle:
        return replace(self, notes=self.notes + notes)

    @property
    def code(self) -> str:
        return self.resource.code


def active_subscriptions(
    ws: Workspace, resource_code: str, day: dt.date | None = None
) -> list[Subscription]:
    """Approved, unexpired, unsuspended subscriptions of a resource on ``day`` (default
    today in Asia/Shanghai): the only ones served."""
    with ws.store.session() as s:
        return list(
            s.execute(
                sa.select(Subscription)
                .where(Subscription.resource_code == resource_code, deliverable(day or today()))
                .order_by(Subscription.id)
            ).scalars()
        )


def watermarks(ws: Workspace, subscription_ids: list[int]) -> dict[int, str | None]:
    """Each subscription's watermark (the cursor value it has received up to)."""
    with ws.store.session() as s:
        return {
            w.subscription_id: w.value
            for w in s.execute(
                sa.select(Watermark).where(Watermark.subscription_id.in_(subscription_ids))
            ).scalars()
        }


UNFINISHED = ("running", "failed")


def unfinished_run(ws: Workspace, resource_code: str) -> str | None:
    """The id of the run of this resource that no record step has closed (still going,
    crashed, or a step failed), the latest if several were left behind."""
    with ws.store.session() as s:
        return s.execute(
            sa.select(Run.id)
            .where(
                Run.resource_code == resource_code,
                Run.status.in_(UNFINISHED),
                Run.finished_at.is_(None),
            )
            .order_by(Run.started_at.desc(), Run.id.desc())
            .limit(1)
        ).scalar()


def resume_run(ws: Workspace, run_id: str) -> None:
    """Mark an unfinished run as being worked on again (a failed step's error is in the
    audit log; the run shows ``running`` while this attempt goes). Only a step that can fail
    the run (plan, extract, validate) calls it: a load or record never wipes another step's
    error."""
    with ws.store.session() as s:
        run = s.get(Run, run_id)
        assert run is not None
        if run.finished_at is not None:
            return  # closed: nothing to resume
        if run.status != "running":
            audit.append(
                s,
                "run.resumed",
                f"run:{run_id}",
                {"resource": run.resource_code, "step": run.step, "was": run.status},
            )
        run.status, run.error = "running", None


def resource_of(ws: Workspace, run_id: str) -> str:
    """The code of the run's resource (``NotFound`` for a run the store lacks)."""
    with ws.store.session() as s:
        run = s.get(Run, run_id)
        if run is None:
            raise NotFound(f"no run {run_id!r} in the metadata store")
        return run.resource_code


def was_full(ws: Workspace, run_id: str) -> bool:
    """Whether the run was planned as a full one (False for a run the store lacks)."""
    with ws.store.session() as s:
        run = s.get(Run, run_id)
        return bool(run is not None and run.full)


def failed_step(ws: Workspace, run_id: str) -> str | None:
    """The error of the run's failed step while it is unfinished (None: it did not fail)."""
    with ws.store.session() as s:
        run = s.get(Run, run_id)
        if run is None or run.finished_at is not None or run.status != "failed":
            return None
        return run.error or "failed"


#: How a failed step's error begins: ``extract failed: …`` (``failed_at`` reads it back).
FAILED = " failed:"
FAILING = ("plan", "extract", "validate")


def failed_at(error: str | None) -> str | None:
    """The step whose failure the run's error records (``extract failed: …``), if any; an
    abandoned run's error keeps it (``extract failed: …; abandoned: --restart``)."""
    for step in FAILING:
        if error is not None and error.startswith(step + FAILED):
            return step
    return None


def fail_run(ws: Workspace, run_id: str, error: str, step: str) -> None:
    """``step`` of the run (plan, extract or validate) raised: the run is ``failed`` with the
    error, kept as ``<step> failed: <error>``, and stays resumable."""
    with ws.store.session() as s:
        run = s.get(Run, run_id)
        if run is None or run.finished_at is not None:
            return  # closed already (record ran): its outcome stands
        run.status, run.error = "failed", f"{step}{FAILED} {error}"
        audit.configure(ws.store, ws.settings)
        audit.append(
            s,
            "run.step_failed",
            f"run:{run_id}",
            {"resource": run.resource_code, "step": step, "error": error},
            checkpoint=True,  # the run ends here (for now): sealed in a checkpoint
        )


def abandon_run(ws: Workspace, run_id: str, reason: str) -> None:
    """Close an unfinished run for good: ``abandoned``, its staging directory removed, audited.
    What it delivered stays delivered (the ledger and watermarks are the subscribers' truth)."""
    with ws.store.session() as s:
        run = s.get(Run, run_id)
        assert run is not None
        run.status, run.finished_at = "abandoned", utcnow()
        # The error that left it unfinished stays: why it was given up is added to it.
        run.error = "; ".join(e for e in (run.error, f"abandoned: {reason}") if e)
        staging, code, step = run.staging_dir, run.resource_code, run.step
        audit.configure(ws.store, ws.settings)
        audit.append(
            s,
            "run.abandoned",
            f"run:{run_id}",
            {"resource": code, "step": step, "reason": reason},
            checkpoint=True,  # the end of the run is sealed in a checkpoint
        )
    # Only ever this run's own directory: ``remove_run_dir`` refuses (and logs) any other.
    remove_run_dir(staging, ws.settings.runs_dir, code, run_id)


def new_run_id() -> str:
    return utcnow().strftime("r%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)


def start_run(ws: Workspace, plan: Plan, audit_extra: dict[str, Any]) -> RunHandle:
    """Write a new run's plan.json, add its row (running) and audit it."""
    # A runs directory an earlier version made with the umask's modes is made private now,
    # not only by the next prune: this run's cleartext goes under it.
    tighten_runs_dir(ws.settings.runs_dir)
    rd = RunDir(ws.settings.runs_dir / plan.resource / plan.run_id)
    rd.write_json(rd.path / "plan.json", plan.to_json())
    with ws.store.session() as s:
        s.add(
            Run(
                id=plan.run_id,
                resource_code=plan.resource,
                status="running",
                step="plan",
                full=plan.full,
                staging_dir=str(rd.path),
            )
        )
        audit.append(
            s,
            "run.planned",
            f"run:{plan.run_id}",
            {
                "resource": plan.resource,
                "subscriptions": plan.subscription_ids,
                **audit_extra,
                "full": plan.full,
            },
        )
    return RunHandle(plan.run_id, ws.catalog.resource(plan.resource), rd, plan)


def set_step(ws: Workspace, run_id: str, step: str, **counts: Any) -> None:
    """Record in the store that ``step`` of the run is complete."""
    with ws.store.session() as s:
        run = s.get(Run, run_id)
        assert run is not None
        run.step = step
        for k, v in counts.items():
            setattr(run, k, v)
