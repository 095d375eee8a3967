"""What ``exchange status`` and ``exchange runs`` show: runs as an operator must read them
(whether a live process works on each), and per subscriber its watermark and deliveries.

A run's stored status is what its last step wrote; the status shown adds the lease: a run
stored ``running`` is ``running`` while a live process holds it, ``waiting`` while an Airflow
DAG run holds it between two tasks, and ``interrupted`` when nobody does (its process was
killed or crashed). A run that a step failed shows that step (``extract (failed)``), and
counts no step wrote are shown as none, not as zero.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass

import sqlalchemy as sa

from exchange.runs.handle import failed_at
from exchange.runs.lease import LeaseInfo, leases
from exchange.store.models import Delivery, Run, Subscription, Watermark
from exchange.workflow.grants import file_dir
from exchange.workflow.service import provider_department, visible_to
from exchange.workflow.users import Principal
from exchange.workspace import Workspace


@dataclass(frozen=True)
class SubscriberStatus:
    subscription_id: int
    resource: str
    node: str
    table: str
    status: str
    valid_until: dt.date
    watermark: str | None
    rows_delivered: int
    last_delivery: dt.datetime | None
    last_error: str | None
    #: Where the resource comes from when the city proxies it (``Origin.describe``).
    origin: str | None = None


@dataclass(frozen=True)
class RunState:
    """One run as shown: its status with the lease taken into account, and who holds it."""

    id: str
    resource_code: str
    status: str  # running | waiting | interrupted | failed | succeeded | held | abandoned
    step: str
    rows_extracted: int | None
    rows_valid: int | None
    rows_quarantined: int | None
    started_at: dt.datetime
    finished_at: dt.datetime | None
    error: str | None
    holder: str | None = None  # pid@host (or the DAG run) and heartbeat age while held
    held: bool = False  # a live holder has it: nobody else may resume it now

    @property
    def resumable(self) -> bool:
        return (
            self.finished_at is None and self.status in ("interrupted", "failed") and not self.held
        )


def shown_status(run: Run, lease: LeaseInfo | None) -> str:
    """``running`` only while a live process holds the run, ``waiting`` while a DAG run holds
    it between tasks; else ``interrupted``."""
    if run.status != "running" or run.finished_at is not None:
        return run.status
    if lease is None or lease.run_id != run.id or not lease.live:
        return "interrupted"
    return "waiting" if lease.state == "waiting" else "running"


def shown_step(run: Run) -> str:
    """The last step the run finished, or the one that failed it: ``extract (failed)`` (a
    failed or abandoned run whose error records it), not the step before it."""
    failed = failed_at(run.error) if run.status in ("failed", "abandoned") else None
    return f"{failed} (failed)" if failed is not None else run.step


def run_state(run: Run, lease: LeaseInfo | None, now: dt.datetime | None = None) -> RunState:
    """``now`` defaults to the store's clock when the lease was read."""
    mine = lease if lease is not None and lease.run_id == run.id else None
    return RunState(
        run.id,
        run.resource_code,
        shown_status(run, lease),
        shown_step(run),
        run.rows_extracted,
        run.rows_valid,
        run.rows_quarantined,
        run.started_at,
        run.finished_at,
        run.error,
        mine.describe(now) if mine is not None and run.finished_at is None else None,
        mine is not None and mine.live and run.finished_at is None,
    )


def recent_runs(
    ws: Workspace,
    resource_code: str | None = None,
    limit: int = 10,
    resources: Collection[str] | None = None,
) -> list[RunState]:
    """The latest runs (of one resource, or of all), newest first; ``resources`` keeps those
    of the resources a user may see (``visible_resources``)."""
    if resource_code:
        ws.catalog.resource(resource_code)  # NotFound (exit 2) for a code the catalog lacks
    held = leases(ws)
    with ws.store.session() as s:
        q = sa.select(Run).order_by(Run.started_at.desc(), Run.id.desc()).limit(limit)
        if resource_code:
            q = q.where(Run.resource_code == resource_code)
        if resources is not None:
            q = q.where(Run.resource_code.in_(sorted(resources)))
        runs = list(s.execute(q).scalars())
    return [run_state(r, held.get(r.resource_code), None) for r in runs]


def subscriber_status(
    ws: Workspace, resource_code: str | None = None, who: Principal | None = None
) -> list[SubscriberStatus]:
    """Each subscription (of one resource, or of all; those ``who`` may see) and its
    deliveries."""
    out = []
    with ws.store.session() as s:
        q = sa.select(Subscription).order_by(Subscription.id)
        if resource_code:
            q = q.where(Subscription.resource_code == resource_code)
        if who is not None:
            q = q.where(visible_to(ws, who))
        for sub in s.execute(q).scalars():
            wm = s.get(Watermark, sub.id)
            total = s.execute(
                sa.select(sa.func.coalesce(sa.func.sum(Delivery.rows), 0)).where(
                    Delivery.subscription_id == sub.id, Delivery.status == "delivered"
                )
            ).scalar_one()
            latest = sa.select(Delivery).where(Delivery.subscription_id == sub.id)
            latest = latest.order_by(Delivery.finished_at.desc(), Delivery.id.desc()).limit(1)
            last = s.execute(latest).scalar()  # the last attempt: its error, if it failed
            ok = s.execute(latest.where(Delivery.status == "delivered")).scalar()
            out.append(
                SubscriberStatus(
                    subscription_id=sub.id,
                    resource=sub.resource_code,
                    node=sub.subscriber_node,
                    table=file_dir(s, sub) or sub.target_table,
                    status=sub.status,
                    valid_until=sub.valid_until,
                    watermark=wm.value if wm else None,
                    rows_delivered=int(total),
                    last_delivery=ok.finished_at if ok else None,  # refused ones never count
                    last_error=last.error if last is not None and last.status == "failed" else None,
                    origin=_origin(ws, sub.resource_code),
                )
            )
    return out


def _origin(ws: Workspace, code: str) -> str | None:
    resource = ws.catalog.resources.get(code)
    return resource.origin.describe() if resource is not None and resource.origin else None


def visible_resources(ws: Workspace, who: Principal) -> set[str] | None:
    """The resources whose runs ``who`` may see: all for an admin (``None``); for a provider
    its department's, for a requester those its department subscribes to."""
    if who.role == "admin":
        return None
    with ws.store.session() as s:
        codes = set(
            s.execute(
                sa.select(Subscription.resource_code).where(visible_to(ws, who)).distinct()
            ).scalars()
        )
    if who.role == "provider" and who.department:
        codes |= {
            r.code
            for r in ws.catalog.resources.values()
            if provider_department(ws, r) == who.department
        }
    return codes
