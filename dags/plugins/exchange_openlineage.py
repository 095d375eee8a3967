"""OpenLineage under Airflow for the exchange DAGs (docs/airflow.md, Lineage).

Two things, both through the OpenLineage provider's public interface:

- ``reporting``: around a step, sets the task's ``inlets`` and ``outlets`` to the run's datasets
  as OpenLineage ``Dataset`` objects (the provider's "manually annotated lineage": its
  extractor manager takes such objects as they are), so the provider's COMPLETE and FAIL events
  of the task name the provider's dataset and the subscribers' targets instead of carrying
  empty datasets. The tasks stay plain ``@task``: no operator subclass, nothing private of the
  provider or of Airflow. The hook-level lineage collector cannot carry them: it translates
  Airflow assets to datasets with the converters of installed providers, and there is none for
  most of the catalog's nodes. Airflow itself ignores lineage objects that are not assets.
- ``point_engine_at_dag_run``: sets ``OPENLINEAGE_PARENT_ID`` (this DAG run's OpenLineage run)
  and ``OPENLINEAGE_ROOT_PARENT_ID`` (the run at the top of the hierarchy) for the engine, whose
  own run events (a delivery spans plan to record, several tasks) then carry a parent facet
  pointing at the DAG run.

Without apache-airflow-providers-openlineage installed, or with it off (not configured), or
with a provider whose modules moved, neither does anything and a task runs exactly as before.
Nothing here ever fails a task. The module lives in the plugins folder (on ``sys.path`` in
every Airflow process) and registers no plugin.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from airflow.sdk import get_current_context

if TYPE_CHECKING:
    from exchange.lineage import DatasetRef

log = logging.getLogger(__name__)

PARENT_ENV = "OPENLINEAGE_PARENT_ID"
ROOT_ENV = "OPENLINEAGE_ROOT_PARENT_ID"


def _active() -> bool:
    """Whether the provider is installed and will emit (no work for lineage otherwise)."""
    try:
        from airflow.providers.openlineage.api import is_openlineage_active

        return bool(is_openlineage_active())
    except Exception:  # absent, or moved in a later provider: lineage off, the task as before
        return False


def annotated(existing: Sequence[Any], datasets: Sequence[DatasetRef]) -> list[Any]:
    """``existing`` lineage objects (an Airflow asset stays) with ``datasets`` in place of any
    OpenLineage dataset set before (a retry in the same process reports afresh)."""
    from openlineage.client.event_v2 import Dataset

    kept = [obj for obj in existing if not isinstance(obj, Dataset)]
    return kept + [Dataset(namespace=d.namespace, name=d.name) for d in datasets]


@contextmanager
def reporting(catalog_path: str, run_id: str, *, subscription: int | None = None) -> Iterator[None]:
    """Around a step: once it is done, succeeded or failed, tell the provider what it read
    (the run's inputs) and, for the load of ``subscription``, what it wrote (that subscriber's
    target). Never raises but the step's own error."""
    try:
        yield
    finally:
        _report(catalog_path, run_id, subscription)


def _report(catalog_path: str, run_id: str, subscription: int | None) -> None:
    if not _active():
        return
    try:
        # Here, not at the top: the plugins manager imports this module in every component.
        from exchange.lineage import run_datasets
        from exchange.orchestration import open_workspace

        task = get_current_context()["task"]
        with open_workspace(catalog_path) as ws:
            datasets = run_datasets(ws, run_id)
        outputs = []
        if subscription is not None and subscription in datasets.targets:
            outputs = [datasets.targets[subscription]]  # by id: no reliance on the order
        task.inlets = annotated(task.inlets, datasets.inputs)
        task.outlets = annotated(task.outlets, outputs)
    except Exception as exc:  # lineage never fails a delivery
        log.warning(
            "OpenLineage: the datasets of run %s were not reported (%s)", run_id, type(exc).__name__
        )


def point_engine_at_dag_run() -> None:
    """Set the engine's parent run (this DAG run) and root run (the DAG run's root: an upstream
    job that triggered it with OpenLineage parent information in its conf, else the DAG run),
    in the provider's ``{namespace}/{job}/{run id}`` form; only while the provider emits (the
    DAG run's own events exist). Never raises."""
    if not _active():
        return
    try:
        from airflow.providers.openlineage.plugins.adapter import OpenLineageAdapter
        from airflow.providers.openlineage.plugins.macros import (
            lineage_job_namespace,
            lineage_root_parent_id,
        )
    except Exception:  # moved in a later provider: no parent, the task as before
        return
    try:
        context = get_current_context()
        dag_run: Any = context["dag_run"]
        # The provider's own id of the DAG run: derived as its macros and listener derive it.
        run_uuid = OpenLineageAdapter.build_dag_run_id(
            dag_id=dag_run.dag_id,
            logical_date=dag_run.logical_date or dag_run.run_after,
            clear_number=dag_run.clear_number,
        )
        os.environ[PARENT_ENV] = f"{lineage_job_namespace()}/{dag_run.dag_id}/{run_uuid}"
        os.environ[ROOT_ENV] = lineage_root_parent_id(context["ti"])
    except Exception as exc:  # lineage never fails a delivery
        log.warning("OpenLineage: the engine's parent run was not set (%s)", type(exc).__name__)
