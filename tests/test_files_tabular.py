"""Tabular files (CSV in GBK/GB18030/UTF-8 with BOM, XLSX) delivered as tables into
subscribers' front-end DBs through the table pipeline's validate and load steps."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from exchange.files.tabular import detect_encoding
from exchange.flow import run_resource
from exchange.kernel.errors import DataError
from exchange.workflow.grants import add_subscription
from exchange.workspace import Workspace
from tests.conftest import catalog_yaml

CODE = "410400-SCJG-0009"
UNTIL = dt.date.today() + dt.timedelta(days=365)
ROWS = [
    ("91410400MA44ABCD1X", "平顶山市鹰城煤业有限公司", "2019-03-01", "500.00"),
    ("91410400MA44ABCD2Y", "河南省宝丰县酒业（集团）股份公司", "2020-11-30", "1200.50"),
    ("91410400MA44ABCD3Z", "郏县䶮记食品店", "", "3.25"),  # 䶮: outside GBK, in GB18030
]
HEADER = "统一社会信用代码,企业名称,成立日期,注册资本（万元）"


def resource(files: str) -> str:
    return f"""\
- code: "{CODE}"
  name: 企业名录（表格文件）
  kind: file
  provider: market_files
  share: unconditional
  files: {files}
  primary_key: [uscc]
  fields:
    - {{name: uscc, type: char, length: 18, nullable: false, title: 统一社会信用代码}}
    - {{name: name, type: varchar, length: 100, nullable: false, title: 企业名称}}
    - {{name: established, type: date, title: 成立日期}}
    - {{name: capital, type: decimal, precision: 18, scale: 2, title: 注册资本（万元）}}
"""


def csv_text(rows: list[tuple[str, ...]] = ROWS) -> str:
    return HEADER + "\r\n" + "".join(",".join(r) + "\r\n" for r in rows)


def workspace(
    tmp_path: Path,
    make_workspace: Callable[[str], Workspace],
    files: str,
    target: tuple[str, str] = ("sqlite", "{path: tax.db}"),
) -> Workspace:
    (tmp_path / "market/out").mkdir(parents=True, exist_ok=True)
    nodes = {"market_files": ("local", "{path: market}"), "tax_fe": target}
    ws = make_workspace(catalog_yaml(nodes, resource(files)))
    add_subscription(ws, CODE, "tax_fe", ["uscc", "name", "established", "capital"], UNTIL,
                     target_table="enterprise")  # fmt: skip
    return ws


def sqlite_rows(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(
            "SELECT uscc, name, established, capital FROM enterprise ORDER BY uscc"
        ).fetchall()


@pytest.mark.parametrize("declared", ["auto", "gb18030"])
def test_a_gb18030_csv_with_chinese_headers_arrives_as_correct_text_in_sqlite(
    declared: str, tmp_path: Path, make_workspace: Callable[[str], Workspace]
) -> None:
    ws = workspace(
        tmp_path,
        make_workspace,
        f"{{path: out, pattern: '*.csv', format: csv, encoding: {declared}}}",
    )
    (tmp_path / "market/out/2026-10.csv").write_bytes(csv_text().encode("gb18030"))

    summary = run_resource(ws, CODE)

    assert summary.status == "succeeded", summary.failures
    got = sqlite_rows(tmp_path / "tax.db")
    assert [(u, n) for u, n, _, _ in got] == [(r[0], r[1]) for r in ROWS]
    assert got[2][2] is None  # empty cell: NULL


def test_a_gbk_csv_is_detected_and_only_new_files_are_loaded_again(
    tmp_path: Path, make_workspace: Callable[[str], Workspace]
) -> None:
    ws = workspace(tmp_path, make_workspace, "{path: out, pattern: '*.csv', format: csv}")
    gbk_rows = ROWS[:2]
    (tmp_path / "market/out/a.csv").write_bytes(csv_text(gbk_rows).encode("gbk"))
    assert detect_encoding(tmp_path / "market/out/a.csv") == "gb18030"
    run_resource(ws, CODE)
    assert [r[1] for r in sqlite_rows(tmp_path / "tax.db")] == [r[1] for r in gbk_rows]

    (tmp_path / "market/out/b.csv").write_bytes(
        ("\ufeff" + csv_text([("91410400MA44ABCD9Q", "新华区便民超市", "2021-01-01", "8")])).encode(
            "utf-8"
        )  # UTF-8 with a BOM before the first header
    )
    second = run_resource(ws, CODE)
    assert second.extracted == 1  # only b.csv's row: a.csv is unchanged and held already
    assert len(sqlite_rows(tmp_path / "tax.db")) == 3


@pytest.mark.postgres
def test_a_gbk_csv_arrives_as_correct_text_in_postgresql(
    tmp_path: Path, make_workspace: Callable[[str], Workspace], pg_database: str
) -> None:
    import os

    os.environ["T_TAX_PG"] = pg_database
    try:
        ws = workspace(
            tmp_path,
            make_workspace,
            "{path: out, pattern: '*.csv', format: csv, encoding: gbk}",
            ("postgresql", "{env: T_TAX_PG}"),
        )
        (tmp_path / "market/out/x.csv").write_bytes(csv_text(ROWS[:2]).encode("gbk"))
        summary = run_resource(ws, CODE)
    finally:
        del os.environ["T_TAX_PG"]
    assert summary.status == "succeeded", summary.failures
    engine = sa.create_engine(pg_database)
    with engine.connect() as conn:
        got = conn.execute(
            sa.text("SELECT uscc, name, established, capital FROM enterprise ORDER BY uscc")
        ).all()
    engine.dispose()
    assert [tuple(r) for r in got] == [
        (ROWS[0][0], ROWS[0][1], dt.date(2019, 3, 1), Decimal("500.00")),
        (ROWS[1][0], ROWS[1][1], dt.date(2020, 11, 30), Decimal("1200.50")),
    ]


def test_an_xlsx_sheet_is_delivered_as_a_table(
    tmp_path: Path, make_workspace: Callable[[str], Workspace]
) -> None:
    openpyxl = pytest.importorskip("openpyxl")
    ws = workspace(tmp_path, make_workspace, "{path: out/list.xlsx, format: xlsx}")
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["备注", *HEADER.split(",")])  # an extra column the catalog does not know
    sheet.append(["x", ROWS[0][0], ROWS[0][1], dt.datetime(2019, 3, 1), 500])
    sheet.append([None, ROWS[1][0], ROWS[1][1], dt.datetime(2020, 11, 30), 1200.5])
    book.save(tmp_path / "market/out/list.xlsx")

    summary = run_resource(ws, CODE)

    assert summary.status == "succeeded", summary.failures
    got = sqlite_rows(tmp_path / "tax.db")
    assert [(r[0], r[1], r[2]) for r in got] == [
        (ROWS[0][0], ROWS[0][1], "2019-03-01"),
        (ROWS[1][0], ROWS[1][1], "2020-11-30"),
    ]


def test_a_value_that_does_not_fit_names_the_file_line_and_field(
    tmp_path: Path, make_workspace: Callable[[str], Workspace]
) -> None:
    ws = workspace(tmp_path, make_workspace, "{path: out, format: csv, encoding: utf-8}")
    bad = [*ROWS[:2], ("91410400MA44ABCD4W", "某公司", "2021-02-30", "1")]
    (tmp_path / "market/out/bad.csv").write_text(csv_text(bad), encoding="utf-8")

    with pytest.raises(DataError, match=r"file bad.csv line 4: field 'established'"):
        run_resource(ws, CODE)


def test_a_missing_column_is_named_with_its_title(
    tmp_path: Path, make_workspace: Callable[[str], Workspace]
) -> None:
    from exchange.kernel.errors import BadInput

    ws = workspace(tmp_path, make_workspace, "{path: out, format: csv}")
    (tmp_path / "market/out/short.csv").write_text("统一社会信用代码,企业名称\n1,2\n", "utf-8")
    with pytest.raises(BadInput, match=r"no column for field 'established' \(成立日期\)"):
        run_resource(ws, CODE)
