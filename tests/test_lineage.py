"""OpenLineage events of every delivery: a table run to two subscribers with different grants,
a file run, a failed delivery, an api batch stored by the gateway's flusher; each event valid
(tests/lineage_check.py), named by the naming spec without a credential, and enough on its own
to answer which columns of which source a subscriber received in a run."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from exchange.catalog.model import ApiOperation, ConnectionRef, FrontEnd
from exchange.flow import run_resource
from exchange.gateway.spool import ADMITTED, DONE, Line, Spool, SpoolReader, flush
from exchange.lineage import emit
from exchange.lineage.events import Output, column_lineage, run_uuid
from exchange.lineage.naming import DatasetRef, api_dataset, file_dataset, table_dataset
from exchange.lineage.runs import run_datasets
from exchange.store.models import Subscription
from exchange.workflow.grants import add_subscription
from exchange.workspace import Workspace
from tests.conftest import catalog_yaml
from tests.lineage_check import assert_valid, check_event, read_events
from tests.test_exchange_sqlite import FAR, RESOURCE, T0, make_source


def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in list(os.environ):
        if k.startswith("OPENLINEAGE"):
            monkeypatch.delenv(k)


@pytest.fixture
def lineage_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """Lineage on, through the file transport: every event a line of the returned file."""
    _clean_env(monkeypatch)
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "lineage.jsonl"
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "file")
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__LOG_FILE_PATH", str(path))
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__APPEND", "true")
    yield path


def table_exchange(
    tmp_path: Path, make_workspace: Callable[[str], Workspace], b_path: str = "b.db"
) -> Workspace:
    nodes = {
        "src": ("sqlite", "{path: src.db}"),
        "a": ("sqlite", "{path: a.db}"),
        "b": ("sqlite", f"{{path: {b_path}}}"),
    }
    ws = make_workspace(catalog_yaml(nodes, RESOURCE.replace("MODE", "incremental")))
    make_source(tmp_path / "src.db", [(i, f"企业{i}", f"内部{i}", T0) for i in range(1, 121)])
    add_subscription(ws, "R1", "a", ["id", "name"], FAR)
    add_subscription(ws, "R1", "b", ["id", "name", "secret_note", "updated_at"], FAR)
    return ws


def received(events: list[dict[str, Any]], run: str, subscriber: DatasetRef) -> dict[str, Any]:
    """Which columns of which source ``subscriber`` received in OpenLineage run ``run``, and
    how many rows: from the run's COMPLETE event alone."""
    (done,) = [e for e in events if e["run"]["runId"] == run and e["eventType"] == "COMPLETE"]
    (out,) = [
        o
        for o in done["outputs"]
        if (o["namespace"], o["name"]) == (subscriber.namespace, subscriber.name)
    ]
    columns = {
        column: [(f["namespace"], f["name"], f["field"]) for f in spec["inputFields"]]
        for column, spec in out["facets"]["columnLineage"]["fields"].items()
    }
    return {"columns": columns, "rows": out["outputFacets"]["outputStatistics"]["rowCount"]}


def test_a_table_run_emits_start_and_complete_naming_each_subscribers_granted_columns(
    tmp_path: Path, make_workspace: Callable[[str], Workspace], lineage_file: Path
) -> None:
    ws = table_exchange(tmp_path, make_workspace)

    summary = run_resource(ws, "R1")

    assert summary.status == "succeeded"
    events = read_events(lineage_file)
    assert_valid(events)
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
    run = run_uuid(ws.installation_id, summary.run_id)
    assert {e["run"]["runId"] for e in events} == {run}
    assert {(e["job"]["namespace"], e["job"]["name"]) for e in events} == {("city-exchange", "R1")}
    source = (f"sqlite://{(tmp_path / 'src.db').resolve()}", "company")
    assert [(i["namespace"], i["name"]) for i in events[1]["inputs"]] == [source]
    a = DatasetRef(f"sqlite://{(tmp_path / 'a.db').resolve()}", "company")
    b = DatasetRef(f"sqlite://{(tmp_path / 'b.db').resolve()}", "company")
    assert [(o["namespace"], o["name"]) for o in events[0]["outputs"]] == [
        (a.namespace, a.name),
        (b.namespace, b.name),
    ]
    # "Which columns of which source did subscriber a receive in this run?"
    assert received(events, run, a) == {
        "columns": {"id": [(*source, "id")], "name": [(*source, "name")]},
        "rows": 120,
    }
    assert set(received(events, run, b)["columns"]) == {"id", "name", "secret_note", "updated_at"}
    schema_a = events[1]["outputs"][0]["facets"]["schema"]["fields"]
    assert [(f["name"], f["type"]) for f in schema_a] == [("id", "bigint"), ("name", "varchar(20)")]
    lineage = events[1]["outputs"][0]["facets"]["columnLineage"]["fields"]["name"]
    assert lineage["transformationType"] == "IDENTITY"
    assert lineage["inputFields"][0]["transformations"][0]["masking"] is False
    checks = events[1]["inputs"][0]["inputFacets"]["dataQualityAssertions"]["assertions"]
    assert {"assertion": "max_length", "column": "name", "success": True} in [
        {k: c[k] for k in ("assertion", "column", "success")} for c in checks
    ]
    engine = events[0]["run"]["facets"]["processing_engine"]
    assert engine["name"] == "city-exchange"
    datasets = run_datasets(ws, summary.run_id)
    assert datasets.outputs == [a, b]
    with ws.store.session() as s:  # each subscription's own target, by its id
        ids = {sub.subscriber_node: sub.id for sub in s.query(Subscription)}
    assert datasets.targets == {ids["a"]: a, ids["b"]: b}


def test_quarantined_rows_fail_their_rules_assertion(
    tmp_path: Path, make_workspace: Callable[[str], Workspace], lineage_file: Path
) -> None:
    ws = table_exchange(tmp_path, make_workspace)
    make_source(tmp_path / "src.db", [(500, "名" * 30, None, T0)])  # longer than 20

    run_resource(ws, "R1")

    events = read_events(lineage_file)
    assert_valid(events)
    checks = events[-1]["inputs"][0]["inputFacets"]["dataQualityAssertions"]["assertions"]
    (too_long,) = [c for c in checks if (c["assertion"], c["column"]) == ("max_length", "name")]
    assert too_long["success"] is False and too_long["actual"] == "1"


def test_a_failed_delivery_ends_the_run_with_a_fail_event_and_its_error(
    tmp_path: Path, make_workspace: Callable[[str], Workspace], lineage_file: Path
) -> None:
    ws = table_exchange(tmp_path, make_workspace, b_path="no/such/dir/b.db")

    summary = run_resource(ws, "R1")

    assert summary.status == "failed"
    events = read_events(lineage_file)
    assert_valid(events)
    assert [e["eventType"] for e in events] == ["START", "FAIL"]
    assert "subscription 2" in events[1]["run"]["facets"]["errorMessage"]["message"]
    rows = [o["outputFacets"]["outputStatistics"]["rowCount"] for o in events[1]["outputs"]]
    assert rows == [120, 0]  # a was served, b got nothing


def test_a_failed_extract_emits_fail_and_the_run_that_resumes_it_starts_it_again(
    tmp_path: Path, make_workspace: Callable[[str], Workspace], lineage_file: Path
) -> None:
    nodes = {n: ("sqlite", f"{{path: {n}.db}}") for n in ("src", "a", "b")}
    ws = make_workspace(catalog_yaml(nodes, RESOURCE.replace("MODE", "incremental")))
    add_subscription(ws, "R1", "a", ["id", "name"], FAR)
    sqlite3.connect(tmp_path / "src.db").close()  # no table yet: the extract fails

    with pytest.raises(Exception, match="company"):
        run_resource(ws, "R1")
    make_source(tmp_path / "src.db", [(1, "企业1", None, T0)])
    summary = run_resource(ws, "R1")

    events = read_events(lineage_file)
    assert_valid(events)
    assert [e["eventType"] for e in events] == ["START", "FAIL", "START", "COMPLETE"]
    assert {e["run"]["runId"] for e in events} == {run_uuid(ws.installation_id, summary.run_id)}
    assert "extract failed" in events[1]["run"]["facets"]["errorMessage"]["message"]


FILE_RESOURCE = """\
- code: F1
  name: 月报
  kind: folder
  provider: market
  share: unconditional
  files: {path: out}
"""


def test_a_folder_run_names_the_provider_directory_and_the_subscriber_directory(
    tmp_path: Path, make_workspace: Callable[[str], Workspace], lineage_file: Path
) -> None:
    (tmp_path / "market/out").mkdir(parents=True)
    (tmp_path / "market/out/2026-10.pdf").write_bytes(b"%PDF" + b"x" * 996)
    (tmp_path / "tax").mkdir()
    nodes = {"market": ("local", "{path: market}"), "tax": ("local", "{path: tax}")}
    ws = make_workspace(catalog_yaml(nodes, FILE_RESOURCE))
    add_subscription(ws, "F1", "tax", None, FAR, target_dir="in")

    summary = run_resource(ws, "F1")

    assert summary.status == "succeeded", summary.failures
    events = read_events(lineage_file)
    assert_valid(events)
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
    assert [(i["namespace"], i["name"]) for i in events[1]["inputs"]] == [
        ("file", str((tmp_path / "market/out").resolve()))
    ]
    (out,) = events[1]["outputs"]
    assert (out["namespace"], out["name"]) == ("file", str((tmp_path / "tax/in").resolve()))
    assert out["outputFacets"]["outputStatistics"] == {
        **out["outputFacets"]["outputStatistics"],
        "rowCount": 1,
        "size": 1000,
    }


API_CATALOG = """\
version: 1
departments: {CITY: 市大数据局, TAX: 市税务局}
nodes:
  - {name: prov_gw, kind: http, department: CITY, base_url: "https://prov.example:8443/api",
     auth: {scheme: none}}
resources:
  - code: API1
    name: 企业基本信息查询
    kind: api
    provider: prov_gw
    share: conditional
    operations: [{name: by_uscc, method: GET, path: "/ent/{uscc}",
                  params: [{name: uscc, in: path}]}]
    fields: [{name: uscc, type: varchar, path: data.uscc},
             {name: name, type: varchar, path: data.name},
             {name: phone, type: varchar, path: data.phone}]
"""


def test_api_calls_stored_by_the_flusher_are_one_run_per_resource_with_each_callers_grant(
    tmp_path: Path,
    make_workspace: Callable[[str], Workspace],
    lineage_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ws = make_workspace(API_CATALOG)
    monkeypatch.setenv("EXCHANGE_CATALOG", ws.catalog.path)
    monkeypatch.setenv("EXCHANGE_HOME", str(tmp_path))
    with ws.store.session() as s:
        sub = Subscription(
            resource_code="API1", subscriber_node="", target_table="", fields=["uscc", "name"],
            status="implementation", valid_until=FAR, department_code="TAX",
        )  # fmt: skip
        s.add(sub)
        s.flush()
        sid = sub.id
    spool = Spool(tmp_path / "spool")
    for n, (outcome, size) in enumerate([("ok", 300), ("ok", 200), ("quota", 0), ("upstream", 0)]):
        spool.write(Line(ADMITTED, f"c{n}", time.time(), "API1", "by_uscc", code=1, sub=sid))
        spool.write(
            Line(DONE, f"c{n}", time.time(), "API1", "by_uscc", code=1, sub=sid, dept="TAX",
                 st=200 if outcome == "ok" else 502, out=outcome, b=size)
        )  # fmt: skip

    flush(ws.store, SpoolReader(spool.path))

    events = read_events(lineage_file)
    assert_valid(events)
    assert [e["eventType"] for e in events] == ["START", "FAIL"]  # one call failed upstream
    assert events[1]["job"]["name"] == "api:API1"
    assert [(i["namespace"], i["name"]) for i in events[1]["inputs"]] == [
        ("https://prov.example:8443", "/api/ent/{uscc}")
    ]
    (out,) = events[1]["outputs"]
    assert out["name"] == f"api/API1/subscription/{sid}"
    assert set(out["facets"]["columnLineage"]["fields"]) == {"uscc", "name"}
    assert out["outputFacets"]["outputStatistics"]["rowCount"] == 2
    assert out["outputFacets"]["outputStatistics"]["size"] == 500
    assert "1 of 3" in events[1]["run"]["facets"]["errorMessage"]["message"]


def test_calls_re_read_after_a_crash_are_not_sent_again_only_the_new_ones(
    tmp_path: Path,
    make_workspace: Callable[[str], Workspace],
    lineage_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A flusher that dies before its offset is saved leaves the next one to re-read calls
    already stored: their lineage went out once and is not sent again."""
    ws = make_workspace(API_CATALOG)
    monkeypatch.setenv("EXCHANGE_CATALOG", ws.catalog.path)
    monkeypatch.setenv("EXCHANGE_HOME", str(tmp_path))
    with ws.store.session() as s:
        sub = Subscription(
            resource_code="API1", subscriber_node="", target_table="", fields=["uscc"],
            status="implementation", valid_until=FAR, department_code="TAX",
        )  # fmt: skip
        s.add(sub)
        s.flush()
        sid = sub.id
    spool = Spool(tmp_path / "spool")

    def call(n: int) -> None:
        spool.write(Line(ADMITTED, f"c{n}", time.time(), "API1", "by_uscc", code=1, sub=sid))
        spool.write(
            Line(DONE, f"c{n}", time.time(), "API1", "by_uscc", code=1, sub=sid, dept="TAX",
                 st=200, out="ok", b=100)
        )  # fmt: skip

    call(0)
    call(1)
    flush(ws.store, SpoolReader(spool.path))
    call(2)
    flush(ws.store, SpoolReader(spool.path))  # from the file's start: c0 and c1 re-read

    events = read_events(lineage_file)
    assert_valid(events)
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"] * 2
    counts = [e["outputs"][0]["outputFacets"]["outputStatistics"]["rowCount"] for e in events[1::2]]
    assert counts == [2, 1]  # the second batch is c2 alone
    assert len({e["run"]["runId"] for e in events}) == 2


def test_lineage_is_off_unless_configured_and_never_prints_events(
    tmp_path: Path,
    make_workspace: Callable[[str], Workspace],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _clean_env(monkeypatch)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    ws = table_exchange(tmp_path, make_workspace)

    assert not emit.configured()
    assert run_resource(ws, "R1").status == "succeeded"

    assert "eventType" not in capsys.readouterr().out
    assert not (tmp_path / "lineage-spool").exists()


def test_openlineage_disabled_turns_a_configured_transport_off(
    tmp_path: Path,
    make_workspace: Callable[[str], Workspace],
    lineage_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENLINEAGE_DISABLED", "true")
    ws = table_exchange(tmp_path, make_workspace)

    run_resource(ws, "R1")

    assert not lineage_file.exists()


def test_a_run_under_airflow_names_its_parent_and_root_runs(
    tmp_path: Path,
    make_workspace: Callable[[str], Workspace],
    lineage_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parent, root = uuid.uuid4(), uuid.uuid4()
    monkeypatch.setenv("OPENLINEAGE_PARENT_ID", f"airflow/exchange_R1.load/{parent}")
    monkeypatch.setenv("OPENLINEAGE_ROOT_PARENT_ID", f"airflow/exchange_R1/{root}")
    ws = table_exchange(tmp_path, make_workspace)

    run_resource(ws, "R1")

    events = read_events(lineage_file)
    assert_valid(events)
    facet = events[0]["run"]["facets"]["parent"]
    assert (facet["job"]["namespace"], facet["job"]["name"]) == ("airflow", "exchange_R1.load")
    assert facet["run"]["runId"] == str(parent)
    assert facet["root"]["job"]["name"] == "exchange_R1"
    assert facet["root"]["run"]["runId"] == str(root)


def test_the_run_id_is_the_same_in_every_process_and_differs_between_installations() -> None:
    assert run_uuid("inst-1", "r1") == run_uuid("inst-1", "r1")
    assert run_uuid("inst-1", "r1") != run_uuid("inst-2", "r1")
    uuid.UUID(run_uuid("inst-1", "r1"))


def node(kind: str, env: str) -> FrontEnd:
    return FrontEnd(name=f"n_{kind}", kind=kind, connection=ConnectionRef(env=env))


@pytest.mark.parametrize(
    ("kind", "url", "schema", "expected"),
    [
        ("postgresql", "postgresql://etl:s3cret@db.city:6432/front?sslmode=require", "biz",
         ("postgres://db.city:6432", "front.biz.company")),
        ("postgresql", "postgresql+psycopg://etl:s3cret@db.city/front", None,
         ("postgres://db.city:5432", "front.public.company")),
        ("mysql", "mysql+pymysql://root:pw@10.0.0.5/front", None,
         ("mysql://10.0.0.5:3306", "front.company")),
        ("oracle", "oracle+oracledb://scott:tiger@ora.city:1521/?service_name=ORCLPDB1", "HR",
         ("oracle://ora.city:1521", "ORCLPDB1.HR.company")),
    ],
)  # fmt: skip
def test_database_datasets_follow_the_naming_spec_without_credentials(
    kind: str,
    url: str,
    schema: str | None,
    expected: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from exchange.catalog.model import Catalog

    monkeypatch.setenv("NODE_URL", url)
    n = node(kind, "NODE_URL")
    ref = table_dataset(Catalog(nodes={n.name: n}), n.name, schema, "company")
    assert (ref.namespace, ref.name) == expected
    assert "s3cret" not in json.dumps(ref.__dict__) and "tiger" not in json.dumps(ref.__dict__)


def test_file_and_api_datasets_follow_the_naming_spec_without_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from exchange.catalog.model import Catalog

    monkeypatch.setenv("SFTP_URL", "sftp://etl:pw@files.city:2222/srv/base?key_file=/k")
    n = node("sftp", "SFTP_URL")
    ref = file_dataset(Catalog(nodes={n.name: n}), n.name, "out/monthly")
    assert (ref.namespace, ref.name) == ("sftp://files.city:2222", "/srv/base/out/monthly")
    gw = FrontEnd(name="gw", kind="http", base_url="https://prov.example/api")
    op = ApiOperation(name="by_uscc", method="GET", path="/ent/{uscc}")
    assert api_dataset(gw, op) == DatasetRef("https://prov.example", "/api/ent/{uscc}")


def test_an_unresolvable_connection_is_named_by_its_node(monkeypatch: pytest.MonkeyPatch) -> None:
    from exchange.catalog.model import Catalog

    monkeypatch.delenv("UNSET_URL", raising=False)
    n = node("postgresql", "UNSET_URL")
    ref = table_dataset(Catalog(nodes={n.name: n}), n.name, "biz", "company")
    assert ref == DatasetRef("postgresql://n_postgresql", "biz.company")


def test_a_masked_column_is_marked_masked_in_its_lineage() -> None:
    source = DatasetRef("postgres://db:5432", "front.public.person")
    out = Output(DatasetRef("file", "/x"), {"id": "id", "phone": "phone"}, frozenset({"phone"}))
    facet = column_lineage(source, out)
    assert facet.fields["phone"].transformationType == "MASKED"
    assert facet.fields["phone"].inputFields[0].transformations[0].masking is True  # type: ignore[index]
    assert facet.fields["id"].transformationType == "IDENTITY"


def test_the_checker_refuses_an_unknown_key_a_wrong_schema_url_and_a_fail_without_error(
    tmp_path: Path, make_workspace: Callable[[str], Workspace], lineage_file: Path
) -> None:
    ws = table_exchange(tmp_path, make_workspace)
    run_resource(ws, "R1")
    good = read_events(lineage_file)[1]
    assert check_event(good) == []

    extra = json.loads(json.dumps(good))
    extra["outputs"][0]["facets"]["schema"]["colour"] = "red"
    assert any("colour" in p for p in check_event(extra))
    wrong = json.loads(json.dumps(good))
    wrong["outputs"][0]["facets"]["schema"]["_schemaURL"] = "https://example.com/Schema.json"
    assert check_event(wrong)
    failed = json.loads(json.dumps(good))
    failed["eventType"] = "FAIL"
    assert any("errorMessage" in p for p in check_event(failed))


def test_every_event_of_the_demo_validates(
    tmp_path: Path, lineage_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from exchange.demo.run import run_demo

    monkeypatch.setenv("EXCHANGE_HOME", str(tmp_path / "home"))
    run_demo(tmp_path / "demo", rows=500, say=lambda _: None)

    events = read_events(lineage_file)
    assert events
    assert_valid(events)
    assert {e["eventType"] for e in events} <= {"START", "COMPLETE"}


def test_with_a_spec_directory_events_are_validated_against_its_schemas_too(
    tmp_path: Path,
    make_workspace: Callable[[str], Workspace],
    lineage_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stand-in for the spec's schemas (the real ones cannot be fetched here): the core
    schema allows only START and COMPLETE, each facet schema takes any object."""
    ws = table_exchange(tmp_path, make_workspace)
    run_resource(ws, "R1")
    events = read_events(lineage_file)
    spec = tmp_path / "spec"
    (spec / "facets").mkdir(parents=True)
    core = "https://openlineage.io/spec/2-0-2/OpenLineage.json"
    (spec / "OpenLineage.json").write_text(
        json.dumps({"$id": core, "properties": {"eventType": {"enum": ["START", "COMPLETE"]}}})
    )
    urls = {
        f["_schemaURL"]
        for e in events
        for side in (e["run"], e["job"], *e["inputs"], *e["outputs"])
        for key in ("facets", "inputFacets", "outputFacets")
        for f in side.get(key, {}).values()
    }
    for n, url in enumerate(sorted(urls)):
        base, _, fragment = url.partition("#")
        name = fragment.rsplit("/", 1)[-1]
        doc = {"$id": base, "$defs": {name: {"type": "object"}}}
        (spec / "facets" / f"{n}.json").write_text(json.dumps(doc))
    monkeypatch.setenv("OPENLINEAGE_SPEC_DIR", str(spec))

    assert_valid(events)
    failed = json.loads(json.dumps(events[1]))
    failed["eventType"] = "FAIL"
    assert any(p.startswith("spec: $.eventType") for p in check_event(failed))


def test_the_airflow_steps_emit_start_at_the_plan_and_complete_at_the_record(
    tmp_path: Path,
    make_workspace: Callable[[str], Workspace],
    lineage_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each step opens its own workspace, as each task does in its own process: the plan's
    START and the record's COMPLETE still name one run."""
    from exchange import orchestration as orch

    ws = table_exchange(tmp_path, make_workspace)
    monkeypatch.setenv("EXCHANGE_HOME", str(ws.settings.home))
    monkeypatch.setenv("EXCHANGE_DB_URL", ws.settings.db_url)
    cat = ws.catalog.path

    run = orch.plan_step(cat, "R1")["run_id"]
    assert [e["eventType"] for e in read_events(lineage_file)] == ["START"]
    orch.extract_step(cat, run)
    orch.validate_step(cat, run)
    for sub in orch.subscribers_step(cat, run):
        orch.load_step(cat, run, sub)
    orch.record_step(cat, run)

    events = read_events(lineage_file)
    assert_valid(events)
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
    assert {e["run"]["runId"] for e in events} == {run_uuid(ws.installation_id, run)}


@pytest.mark.postgres
def test_a_postgresql_subscriber_is_named_by_host_port_database_schema_and_table(
    tmp_path: Path,
    make_workspace: Callable[[str], Workspace],
    lineage_file: Path,
    pg_database: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A password in the URL (trust auth ignores it) must never reach an event.
    url = pg_database.replace("postgres@", "postgres:pw-SECRET@")
    monkeypatch.setenv("PG_TARGET_URL", url)
    nodes = {"src": ("sqlite", "{path: src.db}"), "pg": ("postgresql", "{env: PG_TARGET_URL}")}
    ws = make_workspace(catalog_yaml(nodes, RESOURCE.replace("MODE", "incremental")))
    make_source(tmp_path / "src.db", [(i, f"企业{i}", None, T0) for i in range(1, 11)])
    add_subscription(ws, "R1", "pg", ["id", "name"], FAR)

    assert run_resource(ws, "R1").status == "succeeded"

    events = read_events(lineage_file)
    assert_valid(events)
    (out,) = events[1]["outputs"]
    database = pg_database.rsplit("/", 1)[1]
    assert (out["namespace"], out["name"]) == (
        "postgres://127.0.0.1:5432",
        f"{database}.public.company",
    )
    assert "pw-SECRET" not in lineage_file.read_text()


def test_with_lineage_off_no_run_imports_the_openlineage_client() -> None:
    """The client costs a second of start-up: a run, a task or the gateway that emits
    nothing must not pay it."""
    code = (
        "import sys, exchange.flow, exchange.orchestration, exchange.gateway.spool;"
        "print(sorted(m for m in sys.modules if m.startswith('openlineage')))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENLINEAGE")}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
