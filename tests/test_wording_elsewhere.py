"""The same words outside the CLI's own modules: a count in the plural only when it is one,
an article that fits its type, and a catalog without departments said so, not "(declared:
none declared)"."""

from __future__ import annotations

from pathlib import Path

import pytest

from exchange.catalog.loader import load_catalog
from exchange.cli.quality import quality_notes
from exchange.kernel.errors import BadInput, CatalogError
from exchange.quality.error_reports import check_keys
from exchange.runs.record import RunSummary
from tests.conftest import catalog_yaml

RESOURCE = """\
- code: R1
  name: 企业
  kind: table
  provider: src
  share: unconditional
  source: {table: company}
  primary_key: [id]
  fields:
    - {name: id, type: integer, nullable: false}
    - {name: name, type: varchar, length: 50}
"""
NODES = {"src": ("sqlite", "{path: src.db}")}


def test_one_quarantined_row_is_one_row() -> None:
    one = RunSummary("r1", "R1", "succeeded", extracted=3, valid=2, quarantined=1)

    assert "1 row quarantined: exchange quality quarantine R1" in quality_notes(one)


def test_a_key_part_that_is_not_an_integer_names_its_type_with_its_article(
    tmp_path: Path,
) -> None:
    (tmp_path / "c.yaml").write_text(catalog_yaml(NODES, RESOURCE), "utf-8")
    resource = load_catalog(tmp_path / "c.yaml").resource("R1")

    with pytest.raises(BadInput, match="has 'abc' for id, an integer"):
        check_keys(resource, ["abc"])


def test_a_bound_of_the_wrong_kind_names_the_field_type_with_its_article(tmp_path: Path) -> None:
    bad = RESOURCE.replace(
        "{name: id, type: integer, nullable: false}",
        "{name: id, type: integer, nullable: false, rules: {min: x}}",
    )
    (tmp_path / "c.yaml").write_text(catalog_yaml(NODES, bad), "utf-8")

    with pytest.raises(CatalogError, match="min of an integer field must be a number"):
        load_catalog(tmp_path / "c.yaml")


def test_a_node_of_an_undeclared_department_in_a_catalog_without_any_says_so(
    tmp_path: Path,
) -> None:
    text = catalog_yaml(NODES, RESOURCE).replace(
        "    kind: sqlite\n", "    department: GAJ\n    kind: sqlite\n", 1
    )
    (tmp_path / "c.yaml").write_text(text, "utf-8")

    with pytest.raises(CatalogError) as err:
        load_catalog(tmp_path / "c.yaml")
    assert "department 'GAJ' is not declared in departments (the catalog declares none)" in str(
        err.value
    )
    assert "none declared" not in str(err.value)
