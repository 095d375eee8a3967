"""The DAG factory: one DAG per table, file and folder resource of $EXCHANGE_CATALOG's catalog.

plan -> extract -> validate -> subscribers -> load (one mapped task per subscriber) -> record.
A resource with ``split``: plan -> extract_range (one mapped task per key range, on any
worker) -> validate (joins the ranges) -> load_range (one per subscriber and range) -> close
(one per subscriber: a snapshot's deletes once, the marker) -> record.
Each task calls one function of ``exchange.orchestration``; tasks pass run ids and paths. Under
the OpenLineage provider, tasks report their datasets and the engine's run events point at the
DAG run (``plugins/exchange_openlineage.py``).
Parsing reads only the catalog file: no database, no network, no Variable. When a worker runs
one task, ``get_parsing_context().dag_id`` names its DAG and only that one is built.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import (
    Asset,
    AsyncCallback,
    CronTriggerTimetable,
    DeadlineAlert,
    DeadlineReference,
    DeltaTriggerTimetable,
    Param,
    TriggerRule,
    dag,
    get_current_context,
    get_parsing_context,
    task,
)
from airflow.sdk.exceptions import AirflowFailException
from airflow.sdk.log import mask_secret
from exchange_openlineage import point_engine_at_dag_run, reporting

from exchange import orchestration as orch
from exchange.catalog import Resource, load_catalog
from exchange.kernel.clock import TIMEZONE
from exchange.kernel.errors import DeliveryFailed, ExchangeError, is_terminal

START = pendulum.datetime(2026, 1, 1, tz=TIMEZONE)
DEFAULT_ARGS: dict[str, Any] = {
    "owner": "exchange",
    "retries": orch.RETRY.retries,
    "retry_delay": orch.RETRY.delay,
    "retry_exponential_backoff": orch.RETRY.backoff,
    "max_retry_delay": orch.RETRY.max_delay,
}


def _final(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a step; a terminal error (bad input, a run held back by quality, access denied, a
    rejected host key) fails at once, since retrying cannot change it. ``RunBusy`` (an
    ``exchange run`` of the resource is working) is retried with backoff: it will finish."""
    try:
        return fn(*args, **kwargs)
    except ExchangeError as exc:
        if is_terminal(exc):
            raise AirflowFailException(str(exc)) from exc
        raise


def _holder(code: str) -> str:
    """The run lease's holder name for this DAG run: its tasks (the parallel loads among them)
    share the lease, and an ``exchange run`` of the same resource meanwhile is refused."""
    context = get_current_context()
    return f"airflow {orch.dag_id(code)} {context['run_id']}"


def _schedule(resource: Resource) -> Any:
    sched = orch.schedule_for(resource)
    if sched.cron is not None:
        return CronTriggerTimetable(sched.cron, timezone=TIMEZONE)
    if sched.every is not None:
        return DeltaTriggerTimetable(sched.every)
    return None


def build_resource_dag(resource: Resource, catalog_path: str) -> Any:
    """The DAG of one resource (registered on creation, like every ``@dag`` call)."""
    code = resource.code

    @dag(
        dag_id=orch.dag_id(code),
        description=f"{resource.name} ({code}): {resource.provider} -> subscribers",
        schedule=_schedule(resource),
        start_date=START,
        catchup=False,
        max_active_runs=1,  # a resource's runs never overlap: plan resumes an unfinished one
        default_args=DEFAULT_ARGS,
        tags=["exchange", resource.kind, resource.provider, resource.update_cycle],
        params={"full": Param(False, type="boolean", description="re-extract and reconcile")},
        deadline=DeadlineAlert(
            reference=DeadlineReference.DAGRUN_QUEUED_AT,
            interval=orch.run_deadline(resource),
            callback=AsyncCallback(
                orch.run_deadline_missed,
                kwargs={"resource": code, "deadline": str(orch.run_deadline(resource))},
            ),
        ),
        doc_md=f"**{resource.name}** `{code}` ({resource.kind}, {resource.update_cycle}, "
        f"provider `{resource.provider}`). Trigger with `full=true` to re-extract everything.",
    )
    def resource_dag() -> None:
        @task(task_id="plan", multiple_outputs=True, execution_timeout=orch.STEP_TIMEOUTS["plan"])
        def plan() -> dict[str, Any]:
            point_engine_at_dag_run()  # the engine's run events: parent = this DAG run
            full = bool(get_current_context()["params"].get("full", False))
            return _final(
                orch.plan_step,
                catalog_path,
                code,
                full=full,
                mask=mask_secret,
                holder=_holder(code),
            )

        @task(
            task_id="extract",
            multiple_outputs=True,
            pool=orch.pool_name(resource.provider),
            execution_timeout=orch.STEP_TIMEOUTS["extract"],
        )
        def extract(run: str) -> dict[str, Any]:
            point_engine_at_dag_run()
            with reporting(catalog_path, run):  # read: the provider's dataset
                return _final(
                    orch.extract_step, catalog_path, run, mask=mask_secret, holder=_holder(code)
                )

        @task(
            task_id="validate",
            multiple_outputs=True,
            execution_timeout=orch.STEP_TIMEOUTS["validate"],
        )
        def validate(run: str) -> dict[str, Any]:
            point_engine_at_dag_run()
            with reporting(catalog_path, run):  # checked: the rows read from the provider
                return _final(orch.validate_step, catalog_path, run, holder=_holder(code))

        @task(task_id="subscribers", execution_timeout=orch.STEP_TIMEOUTS["plan"])
        def subscribers(run: str) -> list[int]:
            point_engine_at_dag_run()
            # The mapped load expands over this task's return value (a custom XCom key of
            # plan cannot be mapped over): the subscription ids in the run's plan.json.
            return _final(orch.subscribers_step, catalog_path, run)

        @task(
            task_id="load",
            map_index_template="{{ delivery }}",
            execution_timeout=orch.STEP_TIMEOUTS["load"],
        )
        def load(run: str, subscription_id: int) -> dict[str, Any]:
            context = get_current_context()
            context["delivery"] = f"subscription {subscription_id}"  # type: ignore[typeddict-unknown-key]
            point_engine_at_dag_run()
            # DeliveryFailed propagates: this subscriber alone is retried, with backoff.
            with reporting(catalog_path, run, subscription=subscription_id):
                done = _final(
                    orch.load_step,
                    catalog_path,
                    run,
                    subscription_id,
                    mask=mask_secret,
                    holder=_holder(code),
                )
            context["delivery"] = (  # type: ignore[typeddict-unknown-key]
                f"subscription {subscription_id} -> {done['node']}.{done['table']}"
            )
            return done

        @task(
            task_id="record",
            trigger_rule=TriggerRule.ALL_DONE,  # close the run in the ledger whatever happened
            execution_timeout=orch.STEP_TIMEOUTS["record"],
            outlets=[Asset(orch.asset_uri(code), group="exchange")],
        )
        def record(run: str) -> dict[str, Any]:
            point_engine_at_dag_run()
            try:
                return _final(orch.record_step, catalog_path, run, holder=_holder(code))
            except DeliveryFailed as exc:  # each subscriber had its retries already
                raise AirflowFailException(str(exc)) from exc

        planned = plan()
        if resource.split is not None:
            _split_tasks(planned, validate, subscribers, record)
            return
        extracted = extract(planned["run_id"])
        validated = validate(extracted["run_id"])
        loaded = load.partial(run=validated["run_id"]).expand(
            subscription_id=subscribers(validated["run_id"])
        )
        loaded >> record(planned["run_id"])

    def _split_tasks(planned: Any, validate: Any, subscribers: Any, record: Any) -> None:
        """The mapped range tasks of a split resource, wired between plan and record."""

        @task(task_id="ranges", execution_timeout=orch.STEP_TIMEOUTS["plan"])
        def ranges(run: str) -> list[int]:
            return _final(orch.ranges_step, catalog_path, run)

        @task(
            task_id="extract_range",
            map_index_template="{{ key_range }}",
            pool=orch.pool_name(resource.provider),
            execution_timeout=orch.STEP_TIMEOUTS["extract"],
        )
        def extract_range(run: str, k: int) -> dict[str, Any]:
            context = get_current_context()
            context["key_range"] = "whole" if k == orch.WHOLE else f"range {k}"  # type: ignore[typeddict-unknown-key]
            point_engine_at_dag_run()
            with reporting(catalog_path, run):
                return _final(
                    orch.extract_range_step, catalog_path, run, k, mask=mask_secret,
                    holder=_holder(code),
                )  # fmt: skip

        @task(task_id="units", execution_timeout=orch.STEP_TIMEOUTS["plan"])
        def units(run: str) -> list[dict[str, int]]:
            return _final(orch.units_step, catalog_path, run)

        @task(
            task_id="load_range",
            map_index_template="{{ delivery }}",
            execution_timeout=orch.STEP_TIMEOUTS["load"],
        )
        def load_range(run: str, unit: dict[str, int]) -> dict[str, Any]:
            sid, k = unit["subscription_id"], unit["k"]
            context = get_current_context()
            context["delivery"] = f"subscription {sid} range {k}"  # type: ignore[typeddict-unknown-key]
            point_engine_at_dag_run()
            # DeliveryFailed propagates: this range alone is retried (its range marker keeps
            # it exactly once).
            with reporting(catalog_path, run, subscription=sid):
                return _final(
                    orch.load_range_step, catalog_path, run, sid, k, mask=mask_secret,
                    holder=_holder(code),
                )  # fmt: skip

        @task(
            task_id="close",
            map_index_template="{{ delivery }}",
            trigger_rule=TriggerRule.ALL_DONE,  # a range that failed is recorded failed here
            execution_timeout=orch.STEP_TIMEOUTS["load"],
        )
        def close(run: str, subscription_id: int) -> dict[str, Any]:
            context = get_current_context()
            context["delivery"] = f"subscription {subscription_id}"  # type: ignore[typeddict-unknown-key]
            point_engine_at_dag_run()
            try:
                return _final(
                    orch.close_step, catalog_path, run, subscription_id, mask=mask_secret,
                    holder=_holder(code),
                )  # fmt: skip
            except DeliveryFailed as exc:  # its ranges had their retries already
                raise AirflowFailException(str(exc)) from exc

        staged = extract_range.partial(run=planned["run_id"]).expand(k=ranges(planned["run_id"]))
        validated = validate(planned["run_id"])
        staged >> validated
        loaded = load_range.partial(run=validated["run_id"]).expand(unit=units(validated["run_id"]))
        closed = close.partial(run=validated["run_id"]).expand(
            subscription_id=subscribers(validated["run_id"])
        )
        loaded >> closed >> record(planned["run_id"])

    return resource_dag()


def build_all(catalog_path: str, only: str | None = None) -> dict[str, Any]:
    """Every resource DAG of the catalog, or only ``only`` (a dag id) when a task runs."""
    catalog = load_catalog(catalog_path)
    dags = {}
    for resource in orch.dag_resources(catalog):
        if only is not None and orch.dag_id(resource.code) != only:
            continue
        dags[orch.dag_id(resource.code)] = build_resource_dag(resource, catalog_path)
    return dags


_CATALOG = os.environ.get("EXCHANGE_CATALOG")
if _CATALOG:
    # Absolute, so the dag-processor and every worker name the same file whatever their cwd.
    DAGS = build_all(str(Path(_CATALOG).resolve()), only=get_parsing_context().dag_id)
