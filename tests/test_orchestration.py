"""What the DAGs get from the engine, tested without Airflow: schedules, deadlines, pools, and
the step functions that tasks call (a failed subscriber must raise, so Airflow retries it)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from exchange import orchestration as orch
from exchange.catalog.model import Resource
from exchange.kernel.errors import BadInput, DeliveryFailed
from exchange.workflow.grants import add_subscription
from exchange.workspace import Workspace
from tests.conftest import catalog_yaml
from tests.sources import RESOURCE_YAML, create_source, projection, registry, table_rows

FAR = dt.date.today() + dt.timedelta(days=300)


def _resource(cycle: str, code: str = "R1") -> Resource:
    return Resource(code, "r", "table", "fe", "unconditional", update_cycle=cycle)


@pytest.mark.parametrize(
    ("cycle", "cron", "every"),
    [
        ("every_5_minutes", "*/5 * * * *", None),
        ("every_15_minutes", "*/15 * * * *", None),
        ("every_120_minutes", "{m} */2 * * *", None),
        ("every_45_minutes", None, dt.timedelta(minutes=45)),
        ("every_90_minutes", None, dt.timedelta(minutes=90)),
        ("hourly", "{m} * * * *", None),
        ("daily", "{m} 2 * * *", None),
        ("weekly", "{m} 2 * * 1", None),
        ("monthly", "{m} 2 1 * *", None),
        ("quarterly", "{m} 2 1 1,4,7,10 *", None),
        ("yearly", "{m} 2 1 1 *", None),
        ("on_demand", None, None),
    ],
)
def test_update_cycles_map_to_schedules(
    cycle: str, cron: str | None, every: dt.timedelta | None
) -> None:
    r = _resource(cycle)
    minute = orch._offset(r.code)

    got = orch.schedule_for(r)

    assert got.cron == (cron.format(m=minute) if cron else None)
    assert got.every == every
    assert got.manual == (cycle == "on_demand")


def test_daily_resources_start_at_different_minutes_but_each_always_at_the_same() -> None:
    minutes = {orch.schedule_for(_resource("daily", f"R{i}")).cron for i in range(200)}

    assert len(minutes) > 40  # spread over the hour, not 200 extracts at 02:00
    assert orch.schedule_for(_resource("daily", "R7")) == orch.schedule_for(
        _resource("daily", "R7")
    )


def test_run_deadline_is_the_cycle_bounded_to_10_minutes_and_6_hours() -> None:
    assert orch.run_deadline(_resource("every_5_minutes")) == dt.timedelta(minutes=10)
    assert orch.run_deadline(_resource("every_30_minutes")) == dt.timedelta(minutes=30)
    assert orch.run_deadline(_resource("hourly")) == dt.timedelta(hours=1)
    assert orch.run_deadline(_resource("daily")) == dt.timedelta(hours=6)
    assert orch.run_deadline(_resource("monthly")) == dt.timedelta(hours=6)


def test_unknown_update_cycle_is_bad_input_naming_the_resource() -> None:
    with pytest.raises(BadInput, match="R1: unknown update_cycle 'fortnightly'"):
        orch.schedule_for(_resource("fortnightly"))


POOLS_CATALOG = """\
version: 1
nodes:
  - {name: market_fe, title: 市场监管局前置库, kind: postgresql, connection: {env: M},
     max_concurrent_extracts: 3}
  - {name: tax_fe, kind: mysql, connection: {env: T}}
  - {name: idle_fe, kind: postgresql, connection: {env: I}}
  - {name: prov_gw, kind: http, base_url: https://prov.example/api, auth: {scheme: none}}
resources:
  - {code: A, name: a, kind: table, provider: market_fe, share: unconditional,
     source: {table: a}, primary_key: [id], fields: [{name: id, type: bigint}]}
  - {code: B, name: b, kind: table, provider: market_fe, share: unconditional,
     source: {table: b}, primary_key: [id], fields: [{name: id, type: bigint}]}
  - {code: C, name: c, kind: table, provider: tax_fe, share: unconditional,
     source: {table: c}, primary_key: [id], fields: [{name: id, type: bigint}]}
  - {code: D, name: d, kind: api, provider: prov_gw, share: unconditional,
     operations: [{name: q, method: GET, path: /d}], fields: [{name: id, type: bigint, path: id}]}
"""


def test_one_pool_per_providing_node_sized_from_the_catalog(
    make_workspace: Callable[[str], Workspace],
) -> None:
    ws = make_workspace(POOLS_CATALOG)

    pools = orch.pools_for(ws.catalog)

    assert [(p.name, p.slots) for p in pools] == [
        ("exchange_fe_market_fe", 3),
        ("exchange_fe_tax_fe", 2),
    ]
    assert "市场监管局前置库" in pools[0].description
    doc = orch.pools_import_document(pools)
    assert doc["exchange_fe_tax_fe"] == {
        "slots": 2,
        "description": pools[1].description,
        "include_deferred": False,
    }
    assert [r.code for r in orch.dag_resources(ws.catalog)] == ["A", "B", "C"]


def test_the_kinds_that_get_a_dag_are_the_kinds_the_engine_has_steps_for() -> None:
    from exchange import flow

    assert set(orch.RUN_KINDS) == set(flow.STEPS)


def test_what_a_dag_parse_imports_of_the_engine_holds_no_database_or_arrow_module() -> None:
    # Every DAG parse and task start imports this module to build DAGs from the catalog; the
    # engine's modules (and their SQLAlchemy, pyarrow, pandas) wait for the step that runs.
    heavy = ("exchange.flow", "exchange.workspace", "sqlalchemy", "pyarrow", "pandas", "adbc")
    code = (
        "import sys, exchange.orchestration; "
        f"print(sorted(m for m in sys.modules if m.startswith({heavy!r})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )

    assert done.stdout.strip() == "[]"


def test_parsing_the_housekeeping_dag_file_imports_none_of_its_steps() -> None:
    """Every parse of the DAG folder reads the file; the prune step's store and run-directory
    code is for the task that runs it."""
    dags = Path(__file__).resolve().parents[1] / "dags"
    code = (
        f"import sys; sys.path.insert(0, {str(dags)!r}); import housekeeping; "
        "steps = ('exchange.quality', 'exchange.store'); "
        "print(sorted(m for m in sys.modules if m.startswith(steps)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )

    assert done.stdout.strip() == "[]"


def test_pools_command_prints_and_writes_the_airflow_import_file(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(POOLS_CATALOG, encoding="utf-8")
    out = tmp_path / "pools.json"

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "exchange",
            "airflow",
            "pools",
            "-c",
            str(catalog),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )

    assert done.returncode == 0, done.stderr
    assert "exchange_fe_market_fe: 3 slots" in done.stdout
    assert json.loads(out.read_text(encoding="utf-8"))["exchange_fe_market_fe"]["slots"] == 3


def test_node_secrets_gives_the_url_and_password_of_env_and_airflow_connection_nodes(
    make_workspace: Callable[[str], Workspace], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SRC_URL", "postgresql://reader:pa55word@10.0.0.1/fe")
    monkeypatch.setenv(
        "AIRFLOW_CONN_TGT_FE",
        json.dumps({"conn_type": "mysql", "login": "w", "password": "t0ps3cret", "host": "h"}),
    )
    ws = make_workspace(
        catalog_yaml(
            {
                "src": ("postgresql", "{env: SRC_URL}"),
                "tgt": ("mysql", "{airflow_conn_id: tgt_fe}"),
                "gone": ("mysql", "{env: NOT_SET_ANYWHERE}"),
                "file": ("sqlite", "{path: x.db}"),
            },
            RESOURCE_YAML,
        )
    )
    masked: list[str] = []

    orch._mask_nodes(ws, ["src", "tgt", "gone", "file"], masked.append)

    assert "pa55word" in masked and "t0ps3cret" in masked
    assert "postgresql://reader:pa55word@10.0.0.1/fe" in masked
    assert not any("x.db" in m for m in masked)  # a file path holds no secret


def _sqlite_exchange(tmp_path: Path, make_workspace: Callable[[str], Workspace]) -> Workspace:
    src = f"sqlite:///{tmp_path / 'src.db'}"
    create_source(src, registry(range(1, 301)))
    ws = make_workspace(
        catalog_yaml(
            {
                "src": ("sqlite", "{path: src.db}"),
                "tgt": ("sqlite", "{path: tgt.db}"),
                "bad": ("postgresql", "{env: BAD_URL}"),
            },
            RESOURCE_YAML,
        )
    )
    add_subscription(ws, "ENT", "tgt", ["id", "name", "updated_at"], FAR, target_table="ent")
    return ws


def test_steps_pass_ids_and_paths_and_deliver_like_the_cli(
    tmp_path: Path, make_workspace: Callable[[str], Workspace], monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = _sqlite_exchange(tmp_path, make_workspace)
    monkeypatch.setenv("EXCHANGE_HOME", str(ws.settings.home))
    monkeypatch.setenv("EXCHANGE_DB_URL", ws.settings.db_url)
    cat = ws.catalog.path

    planned = orch.plan_step(cat, "ENT")
    extracted = orch.extract_step(cat, planned["run_id"])
    validated = orch.validate_step(cat, planned["run_id"])
    subs = orch.subscribers_step(cat, planned["run_id"])
    loaded = [orch.load_step(cat, planned["run_id"], s) for s in subs]
    recorded = orch.record_step(cat, planned["run_id"])

    assert planned["subscriptions"] == subs == [1]
    assert Path(planned["run_dir"]).is_dir() and Path(extracted["path"]).is_file()
    assert (extracted["rows"], validated["valid"], validated["quarantined"]) == (300, 300, 0)
    assert loaded[0]["rows"] == 300 and loaded[0]["node"] == "tgt"
    assert recorded["status"] == "succeeded"
    json.dumps([planned, extracted, validated, loaded, recorded])  # all of it fits in XCom
    rows = table_rows(f"sqlite:///{tmp_path / 'tgt.db'}", ["id", "name", "updated_at"], "ent")
    assert rows == projection(registry(range(1, 301)), ["id", "name", "updated_at"])


def test_a_failed_subscriber_raises_so_airflow_retries_it_and_the_run_ends_failed(
    tmp_path: Path, make_workspace: Callable[[str], Workspace], monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = _sqlite_exchange(tmp_path, make_workspace)
    add_subscription(ws, "ENT", "bad", ["id", "name"], FAR, target_table="ent")
    monkeypatch.setenv("EXCHANGE_HOME", str(ws.settings.home))
    monkeypatch.setenv("EXCHANGE_DB_URL", ws.settings.db_url)
    monkeypatch.setenv("BAD_URL", "postgresql://x:hunter2@127.0.0.1:1/none")
    cat = ws.catalog.path
    run = orch.plan_step(cat, "ENT")["run_id"]
    orch.extract_step(cat, run)
    orch.validate_step(cat, run)

    good = orch.load_step(cat, run, 1)
    with pytest.raises(DeliveryFailed) as failed:
        orch.load_step(cat, run, 2)
    with pytest.raises(DeliveryFailed) as closed:
        orch.record_step(cat, run)

    assert good["rows"] == 300
    assert list(failed.value.failures) == [2] and "node 'bad'" in str(failed.value)
    assert "hunter2" not in str(failed.value) and "hunter2" not in str(closed.value)
    assert list(closed.value.failures) == [2]


def test_daily_report_counts_yesterdays_runs_once(
    tmp_path: Path, make_workspace: Callable[[str], Workspace], monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = _sqlite_exchange(tmp_path, make_workspace)
    monkeypatch.setenv("EXCHANGE_HOME", str(ws.settings.home))
    monkeypatch.setenv("EXCHANGE_DB_URL", ws.settings.db_url)
    cat = ws.catalog.path
    run = orch.plan_step(cat, "ENT")["run_id"]
    for step in (orch.extract_step, orch.validate_step):
        step(cat, run)
    orch.load_step(cat, run, 1)
    orch.record_step(cat, run)
    tomorrow = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)

    first = orch.daily_report_step(cat, tomorrow)
    again = orch.daily_report_step(cat, tomorrow)

    assert first is not None and again is None
    doc = json.loads(Path(first).read_text(encoding="utf-8"))
    assert doc["resources"]["ENT"]["runs"] == {"succeeded": 1}
    assert doc["resources"]["ENT"]["rows_delivered"] == 300


def test_parse_now_reads_iso_timestamps_and_rejects_others() -> None:
    assert orch.parse_now("2026-10-10T08:00:00+08:00") == dt.datetime(
        2026, 10, 10, 0, 0, tzinfo=dt.UTC
    )
    assert orch.parse_now("2026-10-10T08:00:00").tzinfo == dt.UTC
    with pytest.raises(BadInput, match="not an ISO 8601"):
        orch.parse_now("next tuesday")


def test_a_folder_resource_runs_through_the_same_steps_pull_once_push_to_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from exchange.demo.folder import FOLDER_RESOURCE, SOURCE, TARGET_DIR, TARGETS
    from exchange.kernel.settings import Settings

    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(Path("schemas/examples/demo.yaml").read_text(encoding="utf-8"), "utf-8")
    for i in range(3):
        (tmp_path / SOURCE / "2025").mkdir(parents=True, exist_ok=True)
        (tmp_path / SOURCE / "2025" / f"report_{i}.pdf").write_bytes(bytes([i]) * 5000)
    monkeypatch.setenv("EXCHANGE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("EXCHANGE_DB_URL", f"sqlite:///{tmp_path / 'exchange.db'}")
    ws = Workspace.open(catalog, Settings.from_env())
    try:
        for node, root in TARGETS.items():
            (tmp_path / root).mkdir(parents=True)
            add_subscription(
                ws, FOLDER_RESOURCE, node, [], FAR, target_dir=TARGET_DIR,
                department=ws.catalog.node(node).department,
            )  # fmt: skip
    finally:
        ws.close()

    run = orch.plan_step(catalog, FOLDER_RESOURCE)["run_id"]
    pulled = orch.extract_step(catalog, run)
    checked = orch.validate_step(catalog, run)
    pushed = [orch.load_step(catalog, run, s) for s in orch.subscribers_step(catalog, run)]
    recorded = orch.record_step(catalog, run)

    assert pulled["files"] == 3 and checked["path"] is None  # no tabular subscriber
    assert [p["node"] for p in pushed] == list(TARGETS)
    assert recorded["status"] == "succeeded"
    for root in TARGETS.values():
        got = sorted(p.name for p in (tmp_path / root / TARGET_DIR).rglob("*.pdf"))
        assert got == ["report_0.pdf", "report_1.pdf", "report_2.pdf"]
