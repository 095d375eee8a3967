"""A tabular file's value that does not fit its field is named in the error, but an ID or phone
number is masked there as in a quarantine reason: the error is kept in the run and in its
``run.step_failed`` audit event."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest

from connectors.arrow_types import ConversionFailed
from exchange.files.tabular import _data_error
from exchange.flow import run_resource
from exchange.kernel.errors import DataError
from exchange.workflow.grants import add_subscription
from exchange.workspace import Workspace
from tests.conftest import catalog_yaml

CODE = "F9"
PHONE = "138-0013-8000"
NODES = {"gaj_files": ("local", "{path: gaj}"), "tax_fe": ("sqlite", "{path: tax.db}")}
RESOURCE = f"""\
- code: {CODE}
  name: 联系人（表格文件）
  kind: file
  provider: gaj_files
  share: unconditional
  files: {{path: out, pattern: '*.csv', format: csv, encoding: utf-8}}
  primary_key: [code]
  fields:
    - {{name: code, type: integer, nullable: false}}
    - {{name: phone, type: varchar, length: 20, rules: {{validator: mobile}}}}
    - {{name: label, type: varchar, length: 20}}
"""


def test_a_phone_number_that_does_not_fit_is_masked_in_the_error(
    make_workspace: Callable[[str], Workspace],
) -> None:
    # Text fields take any text, so this is the reader's guard for a value of a field with a
    # phone validator that a conversion refuses (the error is kept in the run and its audit).
    ws = make_workspace(catalog_yaml(NODES, RESOURCE))
    fields = ws.catalog.resource(CODE).fields
    failed = ConversionFailed("phone", 0, PHONE, "not a phone")

    error = str(_data_error(f"resource {CODE} file p.csv", 3, failed, fields))

    assert "file p.csv line 3: field 'phone' value '138****8000' does not fit" in error
    assert PHONE not in error


def test_a_value_of_a_field_without_an_id_or_phone_validator_is_shown_as_it_is(
    tmp_path: Path, make_workspace: Callable[[str], Workspace]
) -> None:
    (tmp_path / "gaj/out").mkdir(parents=True)
    ws = make_workspace(catalog_yaml(NODES, RESOURCE))
    until = dt.date.today() + dt.timedelta(days=300)
    add_subscription(ws, CODE, "tax_fe", ["code", "phone", "label"], until, target_table="t")
    (tmp_path / "gaj/out/p.csv").write_text("code,phone,label\n4x,1,ok\n", encoding="utf-8")

    with pytest.raises(DataError, match=r"file p.csv line 2: field 'code' value '4x'"):
        run_resource(ws, CODE)
