"""Lineage under Airflow: a resource's DAG run through ``dag.test()`` with the OpenLineage
provider writing its events to one file and the engine writing its own to another.

The provider's events of the tasks name the provider's table and the subscribers' targets (the
tasks report them through the provider's interface, so the Airflow integration does not emit
empty datasets), and the engine's events of the delivery carry a parent facet naming the DAG
run as the provider names it. Airflow runs in a child process (``tests/airflow_harness.py``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import pytest

from exchange.kernel.settings import Settings
from exchange.workflow.grants import add_subscription
from exchange.workspace import Workspace
from tests.conftest import catalog_yaml, migrated_airflow, run_harness
from tests.sources import RESOURCE_YAML, create_source, registry

pytestmark = pytest.mark.airflow

FAR = dt.date.today() + dt.timedelta(days=300)
NAMESPACE = "city-airflow"  # the provider's ([openlineage] namespace), not the engine's


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a migrated Airflow (SQLite metadata DB) without lineage settings."""
    home = tmp_path_factory.mktemp("airflow_lineage_home")
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "EXCHANGE_", "OPENLINEAGE"))
    }
    return migrated_airflow(home, base)


def _events(path: Path) -> list[dict[str, Any]]:
    assert path.exists(), f"no OpenLineage event was written to {path}"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _datasets(events: list[dict[str, Any]], key: str) -> set[tuple[str, str]]:
    return {(d["namespace"], d["name"]) for e in events for d in e.get(key) or []}


def _parent(event: dict[str, Any]) -> dict[str, Any]:
    return dict(event["run"]["facets"]["parent"])


def _job(ref: dict[str, Any]) -> tuple[str, str]:
    return ref["job"]["namespace"], ref["job"]["name"]


def _city(tmp_path: Path, airflow_env: dict[str, str]) -> dict[str, str]:
    """A sqlite provider table of 20 rows, two sqlite subscribers, and the environment of an
    Airflow that runs its DAG with the engine writing its events to engine-events.jsonl."""
    nodes = {
        "src": ("sqlite", "{path: src.db}"),
        "tax_fe": ("sqlite", "{path: tax.db}"),
        "hrss_fe": ("sqlite", "{path: hrss.db}"),
    }
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(catalog_yaml(nodes, RESOURCE_YAML), encoding="utf-8")
    create_source(f"sqlite:///{tmp_path / 'src.db'}", registry(range(1, 21)))
    settings = Settings(home=tmp_path / "home", db_url=f"sqlite:///{tmp_path / 'exchange.db'}")
    ws = Workspace.open(catalog, settings)
    try:
        add_subscription(ws, "ENT", "tax_fe", ["id", "uscc", "name"], FAR, target_table="ent_tax")
        add_subscription(ws, "ENT", "hrss_fe", ["id", "name"], FAR, target_table="ent_hr")
    finally:
        ws.close()
    return {
        **airflow_env,
        "EXCHANGE_CATALOG": str(catalog),
        "EXCHANGE_HOME": str(settings.home),
        "EXCHANGE_DB_URL": settings.db_url,
        # The engine: the standard OpenLineage environment of the workers.
        "OPENLINEAGE__TRANSPORT__TYPE": "file",
        "OPENLINEAGE__TRANSPORT__LOG_FILE_PATH": str(tmp_path / "engine-events.jsonl"),
        "OPENLINEAGE__TRANSPORT__APPEND": "true",
    }


def test_a_dag_run_reports_its_datasets_and_parents_the_engines_events(
    airflow_env: dict[str, str], tmp_path: Path
) -> None:
    airflow_file, engine_file = tmp_path / "airflow-events.jsonl", tmp_path / "engine-events.jsonl"
    env = {
        **_city(tmp_path, airflow_env),
        # The provider: its [openlineage] section.
        "AIRFLOW__OPENLINEAGE__NAMESPACE": NAMESPACE,
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(airflow_file), "append": True}
        ),
    }

    got = run_harness("tests.airflow_harness", ["test", "exchange_ENT"], env, 240)

    assert got["state"] == "success", got
    provider = [e for e in _events(airflow_file) if e["job"]["namespace"] == NAMESPACE]
    engine = [e for e in _events(engine_file) if e["job"]["namespace"] != NAMESPACE]
    source = (f"sqlite://{(tmp_path / 'src.db').resolve()}", "enterprise")
    targets = {
        (f"sqlite://{(tmp_path / 'tax.db').resolve()}", "ent_tax"),
        (f"sqlite://{(tmp_path / 'hrss.db').resolve()}", "ent_hr"),
    }

    def done(task: str) -> list[dict[str, Any]]:
        return [
            e
            for e in provider
            if e["job"]["name"] == f"exchange_ENT.{task}" and e["eventType"] == "COMPLETE"
        ]

    # The provider's COMPLETE events: extract read the provider's table; each of the two loads
    # read it and wrote its own subscriber's target.
    assert _datasets(done("extract"), "inputs") == {source}
    assert _datasets(done("validate"), "inputs") == {source}
    loads = done("load")
    assert len(loads) == 2
    assert all(_datasets([e], "inputs") == {source} for e in loads)
    assert [len(e["outputs"]) for e in loads] == [1, 1]
    assert _datasets(loads, "outputs") == targets

    # Every task's event names the DAG run as its parent: the provider's id of the DAG run.
    dag_runs = {_parent(e)["run"]["runId"] for e in provider if "parent" in e["run"]["facets"]}
    assert len(dag_runs) == 1
    dag_run = dag_runs.pop()
    assert {e["run"]["runId"] for e in provider if e["job"]["name"] == "exchange_ENT"} == {dag_run}

    # The engine's START (plan) and COMPLETE (record) of the delivery point at that DAG run.
    assert [e["eventType"] for e in engine] == ["START", "COMPLETE"]
    for event in engine:
        parent = _parent(event)
        assert _job(parent) == (NAMESPACE, "exchange_ENT")
        assert parent["run"]["runId"] == dag_run
        assert _job(parent["root"]) == (NAMESPACE, "exchange_ENT")  # no job above the DAG run
        assert parent["root"]["run"]["runId"] == dag_run
    assert _datasets(engine, "inputs") == {source}
    assert _datasets(engine, "outputs") == targets


def test_with_the_provider_off_the_dag_runs_as_before_and_the_engine_names_no_parent(
    airflow_env: dict[str, str], tmp_path: Path
) -> None:
    # The provider would follow the engine's OPENLINEAGE__TRANSPORT__*: it is turned off alone.
    env = {**_city(tmp_path, airflow_env), "AIRFLOW__OPENLINEAGE__DISABLED": "true"}

    got = run_harness("tests.airflow_harness", ["test", "exchange_ENT"], env, 240)

    assert got["state"] == "success", got
    engine = _events(tmp_path / "engine-events.jsonl")
    assert [e["job"]["name"] for e in engine] == ["ENT", "ENT"]  # no Airflow job among them
    assert [e["eventType"] for e in engine] == ["START", "COMPLETE"]
    assert all("parent" not in e["run"]["facets"] for e in engine)


PLUGIN_CHECKS = """
import json, os, sys, types
from contextlib import contextmanager
sys.path.insert(0, "dags/plugins")
import exchange_openlineage as plugin
from exchange.lineage import DatasetRef, RunDatasets
import exchange.lineage, exchange.orchestration

class Task:
    inlets, outlets = [], ["an airflow asset"]

task = Task()
plugin.get_current_context = lambda: {"task": task}
src, t1, t2 = DatasetRef("s", "src"), DatasetRef("a", "one"), DatasetRef("b", "two")
# outputs in an order that does not follow the subscriptions: the load must not care
exchange.lineage.run_datasets = lambda ws, run: RunDatasets([src], [t2, t1], {1: t1, 2: t2})
exchange.orchestration.open_workspace = contextmanager(lambda path: (yield None))
out = {}

def names(objs):
    return [o if isinstance(o, str) else [o.namespace, o.name] for o in objs]

for case in ("absent", "moved", "raising", "present"):
    api = types.ModuleType("airflow.providers.openlineage.api")
    if case == "raising":
        api.is_openlineage_active = lambda: 1 / 0
    if case == "present":
        api.is_openlineage_active = lambda: True
    sys.modules["airflow.providers.openlineage.api"] = None if case == "absent" else api
    task.inlets, task.outlets = [], ["an airflow asset"]
    os.environ.pop(plugin.PARENT_ENV, None)
    with plugin.reporting("catalog.yaml", "run-1", subscription=1):
        pass
    with plugin.reporting("catalog.yaml", "run-1", subscription=1):  # a retry: not twice
        pass
    plugin.point_engine_at_dag_run()
    out[case] = {"inlets": names(task.inlets), "outlets": names(task.outlets),
                 "parent": os.environ.get(plugin.PARENT_ENV)}
print(json.dumps(out))
"""


def test_the_plugin_reports_each_load_by_its_subscription_and_is_inert_without_the_provider(
    airflow_env: dict[str, str],
) -> None:
    """Without the provider, with a provider whose interface moved or fails, the tasks report
    nothing, set no parent and raise nothing; with it, a load reports its own subscription's
    target (by id, whatever the order of the run's outputs) once, Airflow's assets kept."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", PLUGIN_CHECKS],
        cwd=root, env={**airflow_env, "PYTHONPATH": str(root)},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    untouched = {"inlets": [], "outlets": ["an airflow asset"], "parent": None}
    assert got["absent"] == got["moved"] == got["raising"] == untouched
    assert got["present"]["inlets"] == [["s", "src"]]
    assert got["present"]["outlets"] == ["an airflow asset", ["a", "one"]]
