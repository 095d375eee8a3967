"""What every resource kind shares about a run: starting or resuming it, the subscriptions it
serves, and the handle a step works with (run id, resource, directory, typed plan).

A run is a row in the metadata store and a directory on disk. The handle is built once per
step from both; the kinds' steps take it instead of re-reading the row and ``plan.json``.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from exchange import audit
from exchange.catalog.model import Resource
from exchange.kernel.clock import today, utcnow
from exchange.kernel.errors import NotFound
from exchange.runs.plan import Plan
from exchange.runs.rundir import RunDir
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

    @classmethod
    def open(cls, ws: Workspace, run_id: str) -> RunHandle:
        """The run's handle: its row and directory, read once."""
        with ws.store.session() as s:
            run = s.get(Run, run_id)
            if run is None:
                raise NotFound(f"no run {run_id!r} in the metadata store")
            code, staging = run.resource_code, run.staging_dir
        rd = RunDir(staging)
        return cls(run_id, ws.catalog.resource(code), rd, Plan.from_json(rd.plan()))

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


def unfinished_run(ws: Workspace, resource_code: str) -> str | None:
    """The id of a run of this resource that has not finished (crashed or still going)."""
    with ws.store.session() as s:
        return s.execute(
            sa.select(Run.id).where(Run.resource_code == resource_code, Run.status == "running")
        ).scalar()


def new_run_id() -> str:
    return utcnow().strftime("r%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)


def start_run(ws: Workspace, plan: Plan, audit_extra: dict[str, Any]) -> RunHandle:
    """Write a new run's plan.json, add its row (running) and audit it."""
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
