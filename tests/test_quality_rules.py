"""Rules declared in the catalog, compiled and run on Arrow batches: every bad row with
every reason, values excerpted and ID/phone numbers masked."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from exchange.catalog import load_catalog
from exchange.catalog.quality_spec import ResourceQuality
from exchange.demo.registry import enterprise_row
from exchange.kernel.errors import CatalogError
from quality import evaluate, rules_for_resource
from quality.resource_checks import (
    bad_ratio_hold,
    freshness_allowance,
    row_count_hold,
    staleness,
)
from quality.rules import Unique
from tests.conftest import catalog_yaml

NOW = dt.datetime(2026, 11, 24, 10, 0, 0)
RESOURCE = """\
- code: R
  name: 企业
  kind: table
  provider: src
  share: unconditional
  source: {table: t}
  update_cycle: daily
  primary_key: [id]
  cursor: updated_at
  quality:
    max_bad_ratio: 0.05
    row_count: {min: 2, max: 100}
    freshness: cycle
    compare: ["established <= updated_at"]
  fields:
    - {name: id, type: bigint}
    - {name: uscc, type: char, length: 18, rules: {validator: uscc, unique: true}}
    - {name: id_card, type: char, length: 18, rules: {validator: resident_id}}
    - {name: phone, type: varchar, length: 20, rules: {validator: phone}}
    - {name: region_code, type: char, length: 6, rules: {validator: region_code}}
    - {name: status, type: smallint, rules: {enum: [1, 2, 3, 4]}}
    - {name: capital, type: decimal, precision: 18, scale: 2, rules: {min: 0, max: 10000000}}
    - {name: industry, type: varchar, length: 10, rules: {regex: "^[A-T][0-9]{2}$"}}
    - {name: established, type: date, rules: {min: "1949-10-01", not_future: true}}
    - {name: updated_at, type: timestamp, nullable: false}
"""
NODES = {"src": ("sqlite", "{path: src.db}")}


def resource(tmp_path: Path, text: str = RESOURCE):  # type: ignore[no-untyped-def]
    p = tmp_path / "c.yaml"
    p.write_text(catalog_yaml(NODES, text), encoding="utf-8")
    return load_catalog(p).resource("R")


def row(i: int, **changes: object) -> dict[str, object]:
    r = enterprise_row(i)
    base: dict[str, object] = {
        "id": i,
        "uscc": r[1],
        "id_card": r[4],
        "phone": r[11],
        "region_code": r[9],
        "status": r[8],
        "capital": r[5],
        "industry": r[12],
        "established": r[6],
        "updated_at": r[7],
    }
    return base | changes


SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("uscc", pa.string()),
        ("id_card", pa.string()),
        ("phone", pa.string()),
        ("region_code", pa.string()),
        ("status", pa.int16()),
        ("capital", pa.decimal128(18, 2)),
        ("industry", pa.string()),
        ("established", pa.date32()),
        ("updated_at", pa.timestamp("us")),
    ]
)


def broken(code: str) -> str:
    """The code with another check character."""
    return code[:17] + ("0" if code[-1] != "0" else "1")


def batch(rows: list[dict[str, object]]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist(rows, schema=SCHEMA)


def test_each_bad_row_carries_every_reason_with_masked_excerpts(tmp_path: Path) -> None:
    good = row(1)
    bad_id = broken(str(good["id_card"]))
    rows = [
        good,
        row(2, uscc=broken(str(row(2)["uscc"])), phone="13812345"),
        row(3, id_card=bad_id, status=9, region_code="990101"),
        row(4, capital=Decimal("-1.00"), industry="Z99", phone="13812345678"),
        row(5, established=dt.date(2027, 1, 1), updated_at=dt.datetime(2026, 1, 1)),
        row(6, uscc=good["uscc"]),  # a duplicate of row 1's code
        row(7, established=dt.date(1900, 1, 1), phone=None, id_card=None),
    ]
    rules = rules_for_resource(resource(tmp_path), NOW)

    verdict = evaluate(batch(rows), rules)

    reasons = dict(zip(verdict.quarantined(batch(rows)).column("id").to_pylist(),
                       verdict.quarantined(batch(rows)).column("_reasons").to_pylist(),
                       strict=True))  # fmt: skip
    assert sorted(reasons) == [1, 2, 3, 4, 5, 6, 7]
    assert reasons[1] == f"unique:uscc={good['uscc'][:16]}…"  # type: ignore[index]
    assert reasons[2].startswith("uscc:uscc=") and "; phone:phone=****45" in reasons[2]
    assert reasons[3].split("; ") == [
        f"resident_id:id_card=410****{bad_id[-2:]}",
        "region_code:region_code=990101",
        "enum:status=9",
    ]
    assert reasons[4].split("; ") == ["range(0..10000000):capital=-1.00", "regex:industry=Z99"]
    assert reasons[5].split("; ") == [
        "not_future:established=2027-01-01",
        "compare(established<=updated_at):established=2027-01-01 vs 2026-01-01 00:00…",
    ]
    assert reasons[6] == f"unique:uscc={good['uscc'][:16]}…"  # type: ignore[index]
    assert reasons[7] == "range(1949-10-01..):established=1900-01-01"
    # No full ID or phone number anywhere in the reasons.
    text = " ".join(reasons.values())
    assert bad_id not in text and "13812345678" not in text
    assert verdict.by_dimension == {
        "consistency": 3,  # rows 1 and 6 (unique), 5 (comparison)
        "authenticity": 5,  # rows 2, 3 (check characters), 4 (capital), 5, 7 (established)
        "normativity": 3,  # rows 2 (phone), 3 (region, enum), 4 (regex)
    }


def test_unique_bound_to_the_whole_run_flags_duplicates_across_batches(tmp_path: Path) -> None:
    rule = Unique(field="uscc")
    first = batch([row(1), row(2)])
    second = batch([row(3, uscc=row(1)["uscc"]), row(4)])
    bound = rule.over(pa.chunked_array([first.column("uscc"), second.column("uscc")]))
    assert bound.violations(first).to_pylist() == [True, False]
    assert bound.violations(second).to_pylist() == [True, False]
    assert rule.violations(second).to_pylist() == [False, False]  # unbound: this batch only


def test_resource_level_findings() -> None:
    spec = ResourceQuality(
        max_bad_ratio=0.05, row_count_min=10, row_count_max=1000, freshness="cycle"
    )
    assert bad_ratio_hold(100, 5, spec) is None
    assert (
        bad_ratio_hold(100, 6, spec)
        == "6 of 100 rows bad (6.0%), more than the resource allows (5.0%)"
    )
    assert row_count_hold(5, True, spec) == "5 rows extracted, fewer than the minimum 10"
    assert row_count_hold(5, False, spec) is None  # an increment is not judged
    assert row_count_hold(1001, True, spec) == "1,001 rows extracted, more than the maximum 1,000"
    day = freshness_allowance(spec, "daily")
    assert day == dt.timedelta(days=1)
    assert staleness(NOW - dt.timedelta(hours=23), NOW, day) is None
    assert staleness(NOW - dt.timedelta(days=3), NOW, day) == (
        "stale: newest row 2026-11-21 10:00:00 is 3.0 days old (allowed 24.0 h)"
    )
    assert freshness_allowance(spec, "on_demand") is None
    assert freshness_allowance(spec, "every_15_minutes") == dt.timedelta(minutes=15)
    assert freshness_allowance(ResourceQuality(freshness="36h"), "daily") == dt.timedelta(hours=36)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("rules: {validator: uscc, unique: true}", "rules: {validator: usc}"),
         "fields[1].rules.validator: 'usc' is not one of"),
        (('"^[A-T][0-9]{2}$"', '"^[A-T"'),
         "fields[7].rules.regex: not a valid regular expression"),
        (("rules: {enum: [1, 2, 3, 4]}", "rules: {enum: [1, two]}"),
         "fields[5].rules.enum[1]: 'two' is not a number"),
        (("rules: {min: 0, max: 10000000}", "rules: {min: zero}"),
         "fields[6].rules.min: min of a decimal field must be a number"),
        (('"established <= updated_at"', '"established <= update_at"'),
         "quality.compare[0]: 'update_at' is not a field of the resource"),
        (('"established <= updated_at"', '"uscc < established"'),
         "quality.compare[0]: cannot compare char uscc with date established"),
        (("max_bad_ratio: 0.05", "max_bad_ratio: 5"),
         "quality.max_bad_ratio: 5 is greater than the maximum of 1"),
        (("row_count: {min: 2, max: 100}", "row_count: {min: 200, max: 100}"),
         "quality.row_count: min is larger than max"),
    ],
)  # fmt: skip
def test_catalog_validate_names_each_bad_rule_by_file_line_and_path(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    text = RESOURCE.replace(*change)
    assert text != RESOURCE
    with pytest.raises(CatalogError) as err:
        resource(tmp_path, text)
    problems = [p for p in err.value.problems if message in p]
    assert problems, err.value.problems
    line = int(problems[0].split(":")[1].split()[0])
    full = catalog_yaml(NODES, text).splitlines()
    key = message.split(":")[0].rsplit(".", 1)[-1].split("[")[0]
    assert key in full[line - 1], (line, full[line - 1])


def test_the_demo_catalog_declares_rules_on_its_codes() -> None:
    res = load_catalog(Path(__file__).parents[1] / "schemas/examples/demo.yaml").resource(
        "410400-SCJG-0001"
    )
    names = {r.reason() for r in rules_for_resource(res, NOW)}
    assert {"uscc:uscc", "unique:uscc", "resident_id:id_card", "region_code:region_code",
            "phone:phone", "compare(established<=updated_at):established"} <= names  # fmt: skip
    assert len(names) >= 8


def test_great_expectations_stays_off_the_run_path() -> None:
    import subprocess
    import sys

    code = (
        "import sys, exchange.cli.app, exchange.flow, exchange.quality.scores; "
        "print('great_expectations' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
