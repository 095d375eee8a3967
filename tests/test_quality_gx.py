"""Great Expectations 1.x: the suite export, the report with Data Docs, and the same rows
flagged by GX and by the Arrow evaluator for every rule that has a GX counterpart."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from exchange.flow import run_resource
from exchange.quality.gx import export_suite, run_report, suite_document, table_for_gx
from exchange.workflow.grants import add_subscription
from exchange.workspace import Workspace
from quality import rules_for_resource
from quality.rules import Unique
from tests.conftest import catalog_yaml
from tests.sources import create_source, registry
from tests.test_quality_flow import GRANT_A, SQLITE_NODES, damage, resource_yaml
from tests.test_quality_rules import NOW, SCHEMA, broken, resource, row

gx = pytest.importorskip("great_expectations")


def test_gx_and_the_arrow_evaluator_flag_the_same_rows_for_every_rule(tmp_path: Path) -> None:
    res = resource(tmp_path)
    rows = [row(i) for i in range(1, 41)]
    # Break something in most rows, several rules at once in some.
    for i, r in enumerate(rows):
        if i % 3 == 0:
            r["phone"] = ["12345", "0375-266", None, "1381234567x"][i % 4]
        if i % 4 == 1:
            r["region_code"] = ["000000", "99010", "410402x"][i % 3]
        if i % 5 == 2:
            r["status"] = 9
        if i % 6 == 3:
            r["capital"] = Decimal("-5.00")
        if i % 7 == 4:
            r["industry"] = ["z01", "A1", "AB12"][i % 3]
        if i % 8 == 5:
            r["established"] = dt.date(2026, 12, 1)
            r["updated_at"] = dt.datetime(2026, 6, 1)
        if i % 9 == 6:
            r["uscc"] = rows[0]["uscc"]
        if i % 10 == 7:
            r["id"] = None
        if i % 11 == 8:
            r["industry"] = "A" + "1" * 10  # longer than 10
        if i % 13 == 9:
            r["uscc"] = broken(str(r["uscc"]))  # no GX counterpart: must not matter
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    rules = [
        r.over(table.column(r.field)) if isinstance(r, Unique) else r
        for r in rules_for_resource(res, NOW)
    ]
    batch = table.combine_chunks().to_batches()[0]
    with_gx = [r for r in rules if r.expectation() is not None]
    assert {type(r).__name__ for r in with_gx} >= {
        "Required", "MaxLength", "Pattern", "InSet", "Between", "Validator", "Unique", "Compare",
    }  # fmt: skip

    ctx = gx.get_context(mode="ephemeral")
    batch_def = (
        ctx.data_sources.add_pandas("pd")
        .add_dataframe_asset("df")
        .add_batch_definition_whole_dataframe("all")
    )
    expectations = [{**r.expectation(), "meta": {"rule": r.reason()}} for r in with_gx]  # type: ignore[dict-item]
    suite = gx.ExpectationSuite(name="parity", expectations=expectations)
    result = batch_def.get_batch(batch_parameters={"dataframe": table_for_gx(table)}).validate(
        suite, result_format={"result_format": "COMPLETE"}
    )

    by_rule = {o.expectation_config.meta["rule"]: o for o in result.results}  # GX reorders
    assert sorted(by_rule) == sorted(r.reason() for r in with_gx)
    flagged = 0
    for rule in with_gx:
        arrow = [i for i, bad in enumerate(rule.violations(batch).to_pylist()) if bad]
        by_gx = sorted(by_rule[rule.reason()].result.get("unexpected_index_list") or [])
        assert by_gx == arrow, rule.reason()
        flagged += bool(arrow)
    assert flagged >= 8  # most rules found something to flag


def test_export_writes_a_suite_gx_loads_and_the_report_builds_data_docs(
    tmp_path: Path, make_workspace: Callable[[str], Workspace]
) -> None:
    rows, why = damage(registry(range(1, 301)))
    create_source(f"sqlite:///{tmp_path / 'src.db'}", rows)
    ws = make_workspace(catalog_yaml(SQLITE_NODES, resource_yaml()))
    add_subscription(ws, "ENT", "a", GRANT_A, dt.date.today() + dt.timedelta(days=30))
    run_resource(ws, "ENT")

    path = export_suite(ws, "ENT")

    doc = json.loads(path.read_text(encoding="utf-8"))
    assert path == tmp_path / "gx" / "expectations" / "ENT.json"
    assert gx.ExpectationSuite(**doc).name == "ENT"
    types = {e["type"] for e in doc["expectations"]}
    assert "expect_column_values_to_match_regex" in types  # phone, region code
    assert "uscc:uscc" in doc["meta"]["checked_by_the_engine_only"]
    assert suite_document(ws.catalog.resource("ENT"))["name"] == "ENT"

    report = run_report(ws, "ENT", limit=100)

    assert (report.rows_staged, report.rows_checked) == (300, 100)
    assert report.docs.exists() and report.docs.name == "index.html"
    assert "ENT" in report.docs.read_text(encoding="utf-8")
    failing = {o.rule for o in report.outcomes if not o.success}
    assert failing <= {"phone:phone", "region_code:region_code", "enum:status"}
    assert all(o.unexpected is not None for o in report.outcomes if o.column)
