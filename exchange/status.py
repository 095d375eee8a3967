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
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from exchange.runs.handle import failed_at
from exchange.runs.lease import LeaseInfo, leases
from exchange.store.models import Delivery, FileTarget, Run, Subscription, Watermark
from exchange.workflow.grants import file_dir
from exchange.workflow.notices import Notice, list_notices
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
    deliveries: six queries however many subscriptions there are."""
    q = sa.select(Subscription).order_by(Subscription.id)
    if resource_code:
        q = q.where(Subscription.resource_code == resource_code)
    if who is not None and who.role != "admin":  # an admin sees every subscription
        from exchange.workflow.service import visible_to  # its forms' models: not for admins

        q = q.where(visible_to(ws, who))
    ids = q.with_only_columns(Subscription.id).order_by(None).scalar_subquery()
    out = []
    with ws.store.session() as s:
        subs = list(s.execute(q).scalars())
        marks = {w.subscription_id: w.value for w in s.scalars(_of(Watermark, ids))}
        # Loaded into the session, so that file_dir finds each without a query of its own.
        with_dir = {t.subscription_id for t in s.scalars(_of(FileTarget, ids))}
        delivered = Delivery.status == "delivered"
        totals = dict(
            s.execute(
                sa.select(Delivery.subscription_id, sa.func.sum(Delivery.rows))
                .where(Delivery.subscription_id.in_(ids), delivered)
                .group_by(Delivery.subscription_id)
            ).all()
        )
        last = _latest(s, ids)  # the last attempt: its error, if it failed
        ok = _latest(s, ids, delivered)  # refused ones never count as a delivery
        for sub in subs:
            tried, done = last.get(sub.id), ok.get(sub.id)
            failed = tried.error if tried is not None and tried.status == "failed" else None
            out.append(
                SubscriberStatus(
                    subscription_id=sub.id,
                    resource=sub.resource_code,
                    node=sub.subscriber_node,
                    table=(file_dir(s, sub) if sub.id in with_dir else None) or sub.target_table,
                    status=sub.status,
                    valid_until=sub.valid_until,
                    watermark=marks.get(sub.id),
                    rows_delivered=int(totals.get(sub.id) or 0),
                    last_delivery=done.finished_at if done else None,
                    last_error=failed,
                    origin=_origin(ws, sub.resource_code),
                )
            )
    return out


def _of(model: type[Watermark] | type[FileTarget], ids: sa.ScalarSelect[int]) -> sa.Select[Any]:
    """The rows of ``model`` (keyed by subscription id) of the subscriptions ``ids``."""
    return sa.select(model).where(model.subscription_id.in_(ids))


def _latest(
    s: Session, ids: sa.ScalarSelect[int], *where: sa.ColumnElement[bool]
) -> dict[int, Delivery]:
    """Each subscription's latest delivery (the latest finished, then the highest id) among
    those matching ``where``, in one query."""
    rank = sa.func.row_number().over(
        partition_by=Delivery.subscription_id,
        order_by=(Delivery.finished_at.desc(), Delivery.id.desc()),
    )
    ranked = (
        sa.select(Delivery.id, rank.label("rank"))
        .where(Delivery.subscription_id.in_(ids), *where)
        .subquery()
    )
    latest = sa.select(Delivery).join(ranked, Delivery.id == ranked.c.id).where(ranked.c.rank == 1)
    return {d.subscription_id: d for d in s.scalars(latest)}


def _origin(ws: Workspace, code: str) -> str | None:
    resource = ws.catalog.resources.get(code)
    return resource.origin.describe() if resource is not None and resource.origin else None


def resource_notices(
    ws: Workspace, resource_code: str | None = None, resources: Collection[str] | None = None
) -> list[Notice]:
    """The change and offline notices (of one resource, or of all; of ``resources`` when
    given): what ``exchange status`` shows below the subscribers."""
    shown = list_notices(ws, resource_code)
    return shown if resources is None else [n for n in shown if n.resource in resources]


def visible_resources(ws: Workspace, who: Principal) -> set[str] | None:
    """The resources whose runs ``who`` may see: all for an admin (``None``); for a provider
    its department's, for a requester those its department subscribes to."""
    if who.role == "admin":
        return None
    from exchange.workflow.service import provider_department, visible_to

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
