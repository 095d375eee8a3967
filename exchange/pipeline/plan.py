"""Step 1, plan: which subscriptions receive this run, and from which cursor to extract."""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

import sqlalchemy as sa

from exchange import audit
from exchange.kernel.clock import today
from exchange.kernel.errors import BadInput
from exchange.pipeline.staging import RunDir
from exchange.store.models import Run, Subscription, Watermark, utcnow
from exchange.workflow.engine import deliverable
from exchange.workspace import Workspace


def active_subscriptions(ws: Workspace, resource_code: str, today: dt.date) -> list[Subscription]:
    """Approved, unexpired, unsuspended subscriptions of a resource: the only ones served."""
    with ws.store.session() as s:
        return list(
            s.execute(
                sa.select(Subscription)
                .where(Subscription.resource_code == resource_code, deliverable(today))
                .order_by(Subscription.id)
            ).scalars()
        )


def unfinished_run(ws: Workspace, resource_code: str) -> Run | None:
    """A run of this resource that has not finished (crashed or still going): resume it."""
    with ws.store.session() as s:
        return s.execute(
            sa.select(Run).where(Run.resource_code == resource_code, Run.status == "running")
        ).scalar()


def plan(ws: Workspace, resource_code: str, *, full: bool = False) -> str:
    """Create a run and its plan; return the run id. An unfinished run is resumed instead."""
    resource = ws.catalog.resource(resource_code)
    if resource.files is not None:  # file and folder resources have their own planner
        from exchange.files.plan import plan_files

        return plan_files(ws, resource_code, full=full)
    if resource.kind != "table":
        raise BadInput(f"resource {resource_code}: kind {resource.kind} is not a table")
    previous = unfinished_run(ws, resource_code)
    if previous is not None:
        return previous.id

    subs = active_subscriptions(ws, resource_code, today())
    with ws.store.session() as s:
        marks = {
            w.subscription_id: w.value
            for w in s.execute(
                sa.select(Watermark).where(Watermark.subscription_id.in_([x.id for x in subs]))
            ).scalars()
        }
    incremental = resource.mode == "incremental" and not full
    deliveries: list[dict[str, Any]] = []
    for sub in subs:
        deliveries.append(
            {
                "subscription_id": sub.id,
                "node": sub.subscriber_node,
                "schema": sub.target_schema,
                "table": sub.target_table,
                "fields": [f for f in resource.field_names if f in sub.fields],
                "since": marks.get(sub.id) if incremental else None,
                "delete_missing": not incremental,
            }
        )
    # Extract once from the lowest cursor any subscriber needs; a new subscriber needs all.
    sinces = [d["since"] for d in deliveries]
    extract_since = None
    if incremental and sinces and None not in sinces:
        field = resource.field(resource.cursor or "")
        from exchange.pipeline.watermark import decode

        extract_since = min(sinces, key=lambda v: decode(v, field))

    return start_run(
        ws,
        resource_code,
        full,
        {"mode": resource.mode, "since": extract_since, "deliveries": deliveries},
        {"since": extract_since},
    )


def start_run(
    ws: Workspace,
    resource_code: str,
    full: bool,
    plan_doc: dict[str, Any],
    audit_extra: dict[str, Any],
) -> str:
    """Write a new run's plan.json, add its row (running) and audit it; return its id."""
    deliveries = plan_doc["deliveries"]
    run_id = utcnow().strftime("r%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
    run_dir = RunDir(ws.settings.runs_dir / resource_code / run_id)
    run_dir.write_json(
        run_dir.path / "plan.json",
        {"run_id": run_id, "resource": resource_code, "full": full, **plan_doc},
    )
    with ws.store.session() as s:
        s.add(
            Run(
                id=run_id,
                resource_code=resource_code,
                status="running",
                step="plan",
                full=full,
                staging_dir=str(run_dir.path),
            )
        )
        audit.append(
            s,
            "run.planned",
            f"run:{run_id}",
            {
                "resource": resource_code,
                "subscriptions": [d["subscription_id"] for d in deliveries],
                **audit_extra,
                "full": full,
            },
        )
    return run_id


def run_dir_of(ws: Workspace, run_id: str) -> tuple[Run, RunDir]:
    """The run's row and its staging directory."""
    with ws.store.session() as s:
        run = s.get(Run, run_id)
    if run is None:
        raise BadInput(f"no run {run_id!r} in the metadata store")
    return run, RunDir(run.staging_dir)


def set_step(ws: Workspace, run_id: str, step: str, **counts: Any) -> None:
    """Record in the store that ``step`` of the run is complete."""
    with ws.store.session() as s:
        run = s.get(Run, run_id)
        assert run is not None
        run.step = step
        for k, v in counts.items():
            setattr(run, k, v)
