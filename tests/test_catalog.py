"""Catalog validation: every problem is reported at once, as ``file:line key.path: message``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.dag_parse import catalog_text
from exchange.catalog import load_catalog, loader
from exchange.kernel.errors import CatalogError
from schemas import load_schema

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "schemas" / "examples" / "demo.yaml"
EXCHANGE = Path(sys.executable).with_name("exchange")
FIELD_TYPES = load_schema()["$defs"]["field"]["properties"]["type"]["enum"]
IDENTIFIER = load_schema()["$defs"]["identifier"]["pattern"]

# A valid catalog; the line numbers quoted in the tests below refer to this text.
VALID = """\
version: 1
nodes:
  - name: market_fe
    kind: postgresql
    connection: {env: EXCHANGE_CONN_MARKET}
resources:
  - code: "410400-SCJG-0001"
    name: 企业登记信息
    kind: table
    provider: market_fe
    share: unconditional
    source: {table: enterprise}
    mode: incremental
    primary_key: [id]
    cursor: updated_at
    fields:
      - {name: id, type: bigint, nullable: false}
      - {name: uscc, type: char, length: 18}
      - {name: name, type: varchar, length: 100}
      - {name: reg_capital, type: decimal, precision: 18, scale: 2}
      - {name: established, type: date}
      - {name: legal_person, type: varchar, length: 50}
      - {name: updated_at, type: timestamp, nullable: false}
"""

SECOND_RESOURCE = """\
  - code: "410400-SCJG-0001"
    name: 企业年报
    kind: table
    provider: market_fe
    share: conditional
    source: {table: annual_report}
    primary_key: [id]
    fields:
      - {name: id, type: bigint, nullable: false}
"""


def edit(text: str, old: str, new: str) -> str:
    """Replace ``old`` (which must occur exactly once) by ``new``."""
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
    return text.replace(old, new)


def line_of(text: str, needle: str) -> int:
    """The 1-based line of the only line containing ``needle`` (to check the constants below)."""
    hits = [i for i, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(hits) == 1, f"{needle!r} is on lines {hits}"
    return hits[0]


def problems_in(tmp_path: Path, text: str, name: str = "catalog.yaml") -> list[str]:
    """Write ``text`` as a catalog and return the problems loading it reports."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


def locations(problems: list[str]) -> list[str]:
    """``catalog.yaml:14 resources[0].cursor`` for each problem (the part before the message)."""
    return [p.split(": ", 1)[0] for p in problems]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    return subprocess.run(
        [str(EXCHANGE), *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        cwd=REPO,
        timeout=120,
        check=False,
    )


# -- valid catalogs ---------------------------------------------------------------------------


def test_the_demo_catalog_loads() -> None:
    catalog = load_catalog(DEMO)

    assert set(catalog.nodes) == {
        "market_fe", "tax_fe", "hrss_fe", "market_files", "tax_files", "hrss_files"
    }  # fmt: skip
    assert catalog.node("tax_files").kind == "local"
    folder = catalog.resource("410400-SCJG-0002")
    assert folder.kind == "folder" and folder.files is not None and folder.files.mirror
    assert catalog.node("market_fe").kind == "sqlite"
    assert catalog.node("market_fe").max_concurrent_extracts == 2
    enterprise = catalog.resource("410400-SCJG-0001")
    assert enterprise.name == "企业登记信息"
    assert enterprise.source_table == "enterprise"
    assert enterprise.mode == "incremental"
    assert enterprise.primary_key == ("id",)
    assert enterprise.cursor == "updated_at"
    assert len(enterprise.fields) == 16
    assert enterprise.field("reg_capital").precision == 18
    assert enterprise.field("reg_capital").scale == 2


def test_the_catalog_the_other_tests_break_is_itself_valid(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(VALID, encoding="utf-8")

    catalog = load_catalog(path)

    assert catalog.resource("410400-SCJG-0001").field_names == (
        "id",
        "uscc",
        "name",
        "reg_capital",
        "established",
        "legal_person",
        "updated_at",
    )


# -- schema problems --------------------------------------------------------------------------


def test_a_misspelt_field_type_names_file_line_and_key_path(tmp_path: Path) -> None:
    text = edit(VALID, "{name: legal_person, type: varchar", "{name: legal_person, type: varchr")
    assert line_of(text, "varchr") == 22

    problems = problems_in(tmp_path, text)

    assert problems == [
        f"catalog.yaml:22 resources[0].fields[5].type: 'varchr' is not one of {FIELD_TYPES!r}"
    ]


def test_every_schema_problem_in_a_file_is_reported_sorted_by_line(tmp_path: Path) -> None:
    text = VALID
    # Broken from the bottom up, so that reporting in the order found would not be sorted.
    text = edit(text, "type: timestamp", "type: datetime")  # line 23
    text = edit(text, "{name: uscc, type: char, length: 18}", "{name: uscc, type: char, length: 0}")
    text = edit(text, "share: unconditional", "share: everyone")  # line 11
    text = edit(text, "kind: postgresql", "kind: mssql")  # line 4

    problems = problems_in(tmp_path, text)

    assert locations(problems) == [
        "catalog.yaml:4 nodes[0].kind",
        "catalog.yaml:11 resources[0].share",
        "catalog.yaml:18 resources[0].fields[1].length",
        "catalog.yaml:23 resources[0].fields[6].type",
    ]
    assert "'mssql' is not one of" in problems[0]
    assert "'everyone' is not one of" in problems[1]
    assert "0 is less than the minimum of 1" in problems[2]
    assert "'datetime' is not one of" in problems[3]


def test_sql_in_a_source_table_name_is_a_validation_error(tmp_path: Path) -> None:
    text = edit(VALID, "source: {table: enterprise}", 'source: {table: "x; DROP TABLE y"}')

    problems = problems_in(tmp_path, text)

    assert problems == [
        "catalog.yaml:12 resources[0].source.table: "
        f"'x; DROP TABLE y' does not match {IDENTIFIER!r}"
    ]


def test_a_field_name_with_a_space_is_a_validation_error(tmp_path: Path) -> None:
    text = edit(VALID, "{name: legal_person,", "{name: legal person,")

    problems = problems_in(tmp_path, text)

    assert problems == [
        f"catalog.yaml:22 resources[0].fields[5].name: 'legal person' does not match {IDENTIFIER!r}"
    ]


def test_incremental_mode_without_a_cursor_is_reported_at_the_resource(tmp_path: Path) -> None:
    text = edit(VALID, "    cursor: updated_at\n", "")

    problems = problems_in(tmp_path, text)

    assert problems == ["catalog.yaml:7 resources[0]: 'cursor' is a required property"]


def test_a_table_name_with_a_trailing_newline_is_a_validation_error(tmp_path: Path) -> None:
    text = edit(VALID, "source: {table: enterprise}", 'source: {table: "enterprise\\n"}')

    assert locations(problems_in(tmp_path, text)) == ["catalog.yaml:12 resources[0].source.table"]


# -- cross-reference problems -----------------------------------------------------------------

CROSS_REFERENCES = {
    "unknown provider node": (
        ("provider: market_fe", "provider: tax_fe"),
        "catalog.yaml:10 resources[0].provider: unknown node 'tax_fe'",
    ),
    "primary key not among the fields": (
        ("primary_key: [id]", "primary_key: [uid]"),
        "catalog.yaml:14 resources[0].primary_key[0]: 'uid' is not a field of the resource",
    ),
    "cursor not among the fields": (
        ("cursor: updated_at", "cursor: modified_at"),
        "catalog.yaml:15 resources[0].cursor: 'modified_at' is not a field of the resource",
    ),
    "varchar without a length": (
        ("{name: name, type: varchar, length: 100}", "{name: name, type: varchar}"),
        "catalog.yaml:19 resources[0].fields[2]: field 'name' of type varchar needs a length",
    ),
    "decimal without a precision": (
        ("type: decimal, precision: 18, scale: 2}", "type: decimal}"),
        "catalog.yaml:20 resources[0].fields[3]: field 'reg_capital' of type decimal "
        "needs a precision",
    ),
    "field named twice (case-insensitively)": (
        ("{name: established,", "{name: NAME,"),
        "catalog.yaml:21 resources[0].fields[4].name: duplicate field 'NAME'",
    ),
    "postgresql node with a file path": (
        ("connection: {env: EXCHANGE_CONN_MARKET}", "connection: {path: market.db}"),
        "catalog.yaml:5 nodes[0].connection.path: "
        "a postgresql node needs 'env' or 'airflow_conn_id', not a path",
    ),
    "table resource on a file-transfer node": (
        ("kind: postgresql", "kind: sftp"),
        "catalog.yaml:10 resources[0].provider: "
        "a table resource needs a database node, 'market_fe' is sftp",
    ),
}


@pytest.mark.parametrize(
    ("replacement", "expected"), CROSS_REFERENCES.values(), ids=CROSS_REFERENCES.keys()
)
def test_a_cross_reference_problem_is_reported_with_its_path(
    tmp_path: Path, replacement: tuple[str, str], expected: str
) -> None:
    assert problems_in(tmp_path, edit(VALID, *replacement)) == [expected]


def test_a_duplicate_resource_code_is_reported_at_the_second_resource(tmp_path: Path) -> None:
    text = VALID + SECOND_RESOURCE
    assert line_of(text, "企业年报") == 25  # so its code is on line 24

    problems = problems_in(tmp_path, text)

    assert problems == [
        "catalog.yaml:24 resources[1].code: duplicate resource code '410400-SCJG-0001'"
    ]


def test_several_cross_reference_problems_are_all_reported_sorted_by_line(tmp_path: Path) -> None:
    text = VALID + SECOND_RESOURCE
    text = edit(text, "cursor: updated_at", "cursor: modified_at")
    text = edit(
        text,
        "provider: market_fe\n    share: unconditional",
        "provider: nowhere\n    share: unconditional",
    )
    text = edit(text, "connection: {env: EXCHANGE_CONN_MARKET}", "connection: {path: market.db}")

    problems = problems_in(tmp_path, text)

    assert locations(problems) == [
        "catalog.yaml:5 nodes[0].connection.path",
        "catalog.yaml:10 resources[0].provider",
        "catalog.yaml:15 resources[0].cursor",
        "catalog.yaml:24 resources[1].code",
    ]


def test_schema_and_cross_reference_problems_are_reported_together(tmp_path: Path) -> None:
    text = edit(VALID, "{name: legal_person, type: varchar", "{name: legal_person, type: varchr")
    text = edit(text, "provider: market_fe", "provider: tax_fe")

    assert locations(problems_in(tmp_path, text)) == [
        "catalog.yaml:10 resources[0].provider",
        "catalog.yaml:22 resources[0].fields[5].type",
    ]


# -- reading the file -------------------------------------------------------------------------


def test_invalid_yaml_is_reported_with_its_line(tmp_path: Path) -> None:
    text = edit(VALID, "    share: unconditional\n", "    share: [unconditional\n")

    problems = problems_in(tmp_path, text)

    assert len(problems) == 1
    assert problems[0].startswith("catalog.yaml:")
    assert "not valid YAML" in problems[0]


def test_a_missing_file_is_a_catalog_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read catalog"):
        load_catalog(tmp_path / "nowhere.yaml")


def test_a_valid_catalog_is_parsed_once_with_libyaml_and_composes_no_node_tree(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every DAG parse and every Airflow task start loads the catalog: the node tree is only
    # what places a problem on its line, so a valid catalog never builds one.
    loaders: list[Any] = []
    real_load = yaml.load

    def load(stream: Any, **kwargs: Any) -> Any:
        loaders.append(kwargs["Loader"])
        return real_load(stream, **kwargs)

    def compose(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a valid catalog composed its node tree")

    monkeypatch.setattr(yaml, "load", load)
    monkeypatch.setattr(yaml, "compose", compose)

    load_catalog(DEMO)

    assert yaml.__with_libyaml__, "PyYAML of this environment is built without libyaml"
    assert loaders == [yaml.CSafeLoader]


@pytest.mark.parametrize("example", ["demo.yaml", "upstream.yaml", "200 resources"])
def test_libyaml_and_pyyaml_read_a_catalog_alike(
    example: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = DEMO.with_name(example)
    if example == "200 resources":  # the catalog bench/dag_parse.py times
        path = tmp_path / "catalog.yaml"
        path.write_text(catalog_text(200), encoding="utf-8")
    with_libyaml = load_catalog(path)
    monkeypatch.setattr(loader, "_FAST_LOADER", yaml.SafeLoader)

    assert load_catalog(path) == with_libyaml


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("    share: unconditional\n", "    share: [unconditional\n"),  # not YAML
        ("type: date", "type: datum"),  # a schema problem
        ("cursor: updated_at", "cursor: updatedat"),  # a cross-reference problem
    ],
    ids=["syntax", "schema", "cross-reference"],
)
def test_a_problem_reads_the_same_with_libyaml_as_with_pyyaml(
    old: str, new: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = edit(VALID, old, new)
    with_libyaml = problems_in(tmp_path, text)
    monkeypatch.setattr(loader, "_FAST_LOADER", yaml.SafeLoader)

    assert problems_in(tmp_path, text) == with_libyaml
    assert with_libyaml[0].startswith("catalog.yaml:")


# -- the command line -------------------------------------------------------------------------


def test_cli_validate_exits_2_and_lists_every_problem_on_stderr(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    text = edit(VALID, "kind: postgresql", "kind: mssql")
    path.write_text(edit(text, "type: timestamp", "type: datetime"), encoding="utf-8")

    result = run_cli("catalog", "validate", str(path))

    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert locations(result.stderr.splitlines()) == [
        "catalog.yaml:4 nodes[0].kind",
        "catalog.yaml:23 resources[0].fields[6].type",
    ]


def test_cli_validate_accepts_the_demo_catalog() -> None:
    result = run_cli("catalog", "validate", str(DEMO))

    assert result.returncode == 0, result.stderr
    assert "valid (6 nodes, 2 resources)" in result.stdout
    assert result.stderr == ""


def test_cli_prints_each_problem_on_one_line_however_long(tmp_path: Path) -> None:
    path = tmp_path / "market_supervision_bureau_front_end_catalog.yaml"
    path.write_text(edit(VALID, "type: timestamp", "type: datetime"), encoding="utf-8")

    result = run_cli("catalog", "validate", str(path))

    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{path.name}:23 resources[0].fields[6].type: 'datetime' is not one of {FIELD_TYPES!r}"
    ]
