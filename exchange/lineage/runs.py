"""The lineage of a table, file or folder run: what it reads, whom it delivers to, and the
events its plan and its record step emit.

``run_started`` is called once a run is planned or resumed, ``run_ended`` once its record step
closed it, on every path (``exchange run``, each Airflow task, the demo): both read the run's
plan and its rows in the store, so the two may run in different processes. ``run_datasets``
names the run's inputs and outputs for the Airflow provider (the DAG's tasks report them).
"""

from __future__ import annotations

import datetime as dt
import logging

import sqlalchemy as sa
from openlineage.client.event_v2 import RunEvent, RunState

from exchange.catalog.model import Field, Resource
from exchange.kernel.clock import local_now
from exchange.lineage import emit
from exchange.lineage.events import Check, EventSpec, Output, build, job_name, run_uuid
from exchange.lineage.naming import file_dataset, source_dataset, table_dataset
from exchange.lineage.refs import DatasetRef, RunDatasets
from exchange.runs.handle import RunHandle
from exchange.runs.plan import Delivery, FolderDelivery, Plan, TableDelivery
from exchange.store.models import Delivery as DeliveryRow
from exchange.store.models import Run, Subscription
from exchange.workspace import Workspace
from quality import rules_for_resource

log = logging.getLogger(__name__)


def target_dataset(ws: Workspace, d: Delivery) -> DatasetRef:
    """Where delivery ``d`` lands: the subscriber's table, or its directory."""
    if isinstance(d, FolderDelivery):
        return file_dataset(ws.catalog, d.node, d.dir)
    return table_dataset(ws.catalog, d.node, d.schema, d.table)


def _deliveries(ws: Workspace, run_id: str) -> tuple[Resource, list[Delivery]]:
    """The run's resource and planned deliveries: from its plan, or (its directory gone)
    from the subscriptions it recorded deliveries for."""
    try:
        handle = RunHandle.open(ws, run_id)
        return handle.resource, list(handle.plan.deliveries)
    except Exception:
        pass
    with ws.store.session() as s:
        run = s.get(Run, run_id)
        if run is None:
            from exchange.kernel.errors import NotFound

            raise NotFound(f"no run {run_id!r} in the metadata store") from None
        code = run.resource_code
        subs = s.execute(
            sa.select(Subscription)
            .join(DeliveryRow, DeliveryRow.subscription_id == Subscription.id)
            .where(DeliveryRow.run_id == run_id)
            .order_by(Subscription.id)
        ).scalars()
        found: list[Delivery] = [
            TableDelivery(
                sub.id, sub.subscriber_node, sub.target_table, tuple(sub.fields), sub.target_schema
            )
            for sub in subs
        ]
    resource = ws.catalog.resource(code)
    if resource.kind != "table" and not resource.delivers_table:
        found = [FolderDelivery(d.subscription_id, d.node, "") for d in found]
    return resource, found


def run_datasets(ws: Workspace, run_id: str) -> RunDatasets:
    """The datasets of run ``run_id``, named by the OpenLineage naming spec."""
    resource, deliveries = _deliveries(ws, run_id)
    targets = {d.subscription_id: target_dataset(ws, d) for d in deliveries}
    return RunDatasets(
        inputs=[source_dataset(ws.catalog, resource)],
        outputs=[targets[d.subscription_id] for d in deliveries],
        targets=targets,
    )


def _outputs(
    ws: Workspace, plan: Plan, rows: dict[int, DeliveryRow] | None
) -> tuple[list[Output], dict[DatasetRef, tuple[Field, ...]]]:
    resource = ws.catalog.resource(plan.resource)
    outputs, fields_of = [], {}
    for d in plan.deliveries:
        target = target_dataset(ws, d)
        row = rows.get(d.subscription_id) if rows is not None else None
        count = (row.rows if row is not None else 0) if rows is not None else None
        if isinstance(d, TableDelivery):
            fields = tuple(f for f in resource.fields if f.name in set(d.fields))
            fields_of[target] = fields
            columns = {f.name: f.name for f in fields}  # the engine renames no column
            outputs.append(Output(target, columns, masked_fields(resource, d), count))
        else:
            delivered = row is not None and row.status == "delivered"
            size = sum(f.size for f in plan.files_for(d.subscription_id)) if delivered else 0
            outputs.append(Output(target, rows=count, size=size if rows is not None else None))
    return outputs, fields_of


def masked_fields(resource: Resource, d: TableDelivery) -> frozenset[str]:
    """The granted fields a delivery masks: none today (every granted field is delivered as
    the provider holds it); the events mark any field named here MASKED."""
    return frozenset()


def _source_fields(resource: Resource) -> tuple[Field, ...]:
    return resource.fields if resource.kind == "table" or resource.delivers_table else ()


def start_event(ws: Workspace, run: RunHandle) -> RunEvent:
    outputs, fields_of = _outputs(ws, run.plan, None)
    return build(
        EventSpec(
            state=RunState.START,
            run_id=run_uuid(ws.installation_id, run.id),
            job=job_name(run.resource),
            source=source_dataset(ws.catalog, run.resource),
            source_fields=_source_fields(run.resource),
            outputs=tuple(outputs),
            fields_of=fields_of,
        )
    )


def checks_of(run: RunHandle, now: dt.datetime | None = None) -> tuple[Check, ...] | None:
    """The validate step's rules with the rows each quarantined (None: nothing validated)."""
    if not run.dir.is_done("validate"):
        return None
    by_rule: dict[str, int] = dict(run.dir.read_done("validate").get("by_rule", {}))
    checks, seen = [], set()
    for rule in rules_for_resource(run.resource, now or local_now()):
        reason = rule.reason()
        if reason in seen:
            continue
        seen.add(reason)
        checks.append(Check(rule.name, rule.field, int(by_rule.get(reason, 0))))
    for reason, n in sorted(by_rule.items()):  # rules bound to the run (keys across files)
        if reason not in seen:
            name, _, column = reason.partition(":")
            checks.append(Check(name, column or None, int(n)))
    return tuple(checks)


def end_event(ws: Workspace, run: RunHandle) -> RunEvent:
    with ws.store.session() as s:
        r = s.get(Run, run.id)
        status, error = (r.status, r.error) if r is not None else ("failed", "no run row")
        rows = {
            d.subscription_id: d
            for d in s.execute(sa.select(DeliveryRow).where(DeliveryRow.run_id == run.id)).scalars()
        }
        s.expunge_all()
    outputs, fields_of = _outputs(ws, run.plan, rows)
    ok = status == "succeeded"
    return build(
        EventSpec(
            state=RunState.COMPLETE if ok else RunState.FAIL,
            run_id=run_uuid(ws.installation_id, run.id),
            job=job_name(run.resource),
            source=source_dataset(ws.catalog, run.resource),
            source_fields=_source_fields(run.resource),
            outputs=tuple(outputs),
            fields_of=fields_of,
            checks=checks_of(run),
            error=None if ok else (error or status),
            closing=True,
        )
    )


def run_started(ws: Workspace, run: RunHandle) -> None:
    """START of a run just planned or resumed. Never raises."""
    if not emit.configured():
        return
    try:
        event = start_event(ws, run)
    except Exception as exc:  # the class only: a message may quote a connection URL
        log.warning("lineage: no START event for run %s (%s)", run.id, type(exc).__name__)
        return
    emit.send(ws.settings.home, [event])


def run_ended(ws: Workspace, run_id: str) -> None:
    """COMPLETE (every planned subscriber served or skipped) or FAIL of a recorded run.
    Never raises."""
    if not emit.configured():
        return
    try:
        event = end_event(ws, RunHandle.open(ws, run_id))
    except Exception as exc:
        log.warning("lineage: no closing event for run %s (%s)", run_id, type(exc).__name__)
        return
    emit.send(ws.settings.home, [event])


def run_failed(ws: Workspace, run_id: str) -> None:
    """FAIL of a run whose plan, extract or validate step raised (it stays resumable: the run
    that resumes it emits START again, under the same run id). Never raises."""
    run_ended(ws, run_id)
