"""The housekeeping DAG: the workflow clock every 15 minutes, pruning of finished runs'
staging directories past ``EXCHANGE_RETENTION`` (``exchange prune``), and the daily run report.

``tick(now)`` advances every deadline that passed (review timeouts, reminders, automatic
sign-off and evaluation, expiry, suspension, ticket deadlines); it is idempotent, so a retried
or overlapping tick changes nothing twice. ``now`` is the wall clock, or the ``now`` of the
run's conf (an ISO timestamp) to replay a moment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import CronTriggerTimetable, Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException

from exchange import orchestration as orch
from exchange.kernel.clock import TIMEZONE

_CATALOG = os.environ.get("EXCHANGE_CATALOG")


def _now() -> Any:
    return orch.parse_now(get_current_context()["params"].get("now"))


def build_housekeeping_dag(catalog_path: str) -> Any:
    @dag(
        dag_id=orch.HOUSEKEEPING_DAG_ID,
        description="workflow deadlines, reminders, sign-off, expiry; pruning; daily run report",
        schedule=CronTriggerTimetable("*/15 * * * *", timezone=TIMEZONE),
        start_date=pendulum.datetime(2026, 1, 1, tz=TIMEZONE),
        catchup=False,
        max_active_runs=1,
        default_args={
            "owner": "exchange",
            "retries": orch.RETRY.retries,
            "retry_delay": orch.RETRY.delay,
            "retry_exponential_backoff": orch.RETRY.backoff,
            "max_retry_delay": orch.RETRY.max_delay,
        },
        tags=["exchange", "housekeeping"],
        params={"now": Param(None, type=["null", "string"], description="ISO timestamp")},
    )
    def housekeeping() -> None:
        @task(task_id="tick", execution_timeout=pendulum.duration(minutes=10))
        def tick() -> dict[str, Any]:
            return orch.housekeeping_step(catalog_path, _now())

        @task(task_id="daily_run_report", execution_timeout=pendulum.duration(minutes=10))
        def daily_run_report() -> str:
            path = orch.daily_report_step(catalog_path, _now())
            if path is None:
                raise AirflowSkipException("yesterday's report is written already")
            return path

        @task(task_id="prune", execution_timeout=pendulum.duration(minutes=30))
        def prune() -> dict[str, Any]:
            # Imported here: it loads SQLAlchemy, which parsing the DAG file never needs.
            from exchange.quality.retention import prune_step

            return prune_step(catalog_path, _now())

        tick()
        prune()
        daily_run_report()

    return housekeeping()


if _CATALOG:
    HOUSEKEEPING = build_housekeeping_dag(str(Path(_CATALOG).resolve()))
