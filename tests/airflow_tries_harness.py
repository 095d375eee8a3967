"""``dag.test()`` of resource DAGs in a child process, reporting every task's tries.

Like ``tests/airflow_harness.py`` (which reports states only), but for the retry policy: per
task instance its final state, ``try_number``, ``max_tries``, the states of the earlier tries
Airflow archived in ``task_instance_history`` (a retried task leaves one row per earlier try;
Airflow stores a try that went ``up_for_retry`` there as ``failed``), and each task's
configured ``retries``.

The DAG keeps its 3 retries; only the delay between them is made 0 (``orch.RETRY`` is read
when the DAG file is imported, in this process), so a task that *is* retried shows it within
seconds instead of ``dag.test()`` idling through minutes of backoff.

    python -m tests.airflow_tries_harness DAG_ID [DAG_ID ...]

Several DAGs run one after the other in the one process: Airflow's start-up (the in-process
execution API, the DAG bag) is paid once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sys
import time
from typing import Any


def run_all(dag_ids: list[str]) -> dict[str, Any]:
    from exchange import orchestration as orch

    orch.RETRY = dataclasses.replace(orch.RETRY, delay=dt.timedelta(0))

    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag()
    missing = [d for d in dag_ids if d not in bag.dags]
    if missing:
        return {"error": f"no DAG {', '.join(missing)}", "import_errors": bag.import_errors}
    return {"dags": {d: run(bag.dags[d]) for d in dag_ids}}


def run(dag: Any) -> dict[str, Any]:
    import sqlalchemy as sa
    from airflow.models.taskinstancehistory import TaskInstanceHistory
    from airflow.settings import Session

    dag_id = dag.dag_id
    dag.deadline = None  # as in tests/airflow_harness.py: dag.test() of 3.3.2 trips on it
    started = time.perf_counter()
    dr = dag.test()
    seconds = time.perf_counter() - started
    session = Session()
    history: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for h in session.execute(
        sa.select(TaskInstanceHistory)
        .where(TaskInstanceHistory.dag_id == dag_id, TaskInstanceHistory.run_id == dr.run_id)
        .order_by(TaskInstanceHistory.try_number)
    ).scalars():
        history.setdefault((h.task_id, h.map_index), []).append(
            {"try_number": h.try_number, "state": str(h.state)}
        )
    tasks = {}
    for ti in dr.get_task_instances(session=session):
        key = f"{ti.task_id}[{ti.map_index}]" if ti.map_index >= 0 else ti.task_id
        tasks[key] = {
            "state": str(ti.state),
            "try_number": ti.try_number,
            "max_tries": ti.max_tries,
            "earlier_tries": history.get((ti.task_id, ti.map_index), []),
        }
    session.close()
    return {
        "state": str(dr.state),
        "tasks": tasks,
        "retries": {t.task_id: t.retries for t in dag.tasks},
        "seconds": seconds,
    }


def main(argv: list[str]) -> None:
    doc = run_all(argv)
    print("HARNESS-RESULT " + json.dumps(doc, default=str))


if __name__ == "__main__":
    main(sys.argv[1:])
