"""Key integrity and text every target can hold, always on (issue 13, must have 2 and 4):
rows sharing a primary key, or with a null key part, and text a target cannot hold (NUL,
bytes that are not UTF-8, lone surrogates) are quarantined at validate with their reason and
key, never delivered; the same on every target dialect."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from exchange.catalog.model import Field
from exchange.flow import run_resource
from exchange.kernel.text import INVALID_UTF8_MARK, LONE_SURROGATE_MARK, decode_marked
from exchange.quality.quarantine import list_quarantine
from exchange.workflow.grants import add_subscription
from exchange.workspace import Workspace
from quality import evaluate, rules_for_fields, rules_for_resource
from quality.key_hash import key_hashes
from quality.rules import DuplicateKey, NullKey, Required, Rule, Text
from tests.conftest import catalog_yaml
from tests.sources import table_rows
from tests.test_quality_rules import NOW, resource
from tests.test_quality_rules import RESOURCE as RULES_RESOURCE

FAR = dt.date.today() + dt.timedelta(days=300)
T0 = dt.datetime(2026, 11, 30, 9, 0, 0)
FIELDS = [
    Field("region", "char", length=6),
    Field("id", "bigint"),
    Field("name", "varchar", length=20, nullable=False),
    Field("note", "text"),
]


def _reasons(batch: pa.RecordBatch, rules: Sequence[Rule]) -> list[str | None]:
    return evaluate(batch, rules).reasons.to_pylist()


# -- the rules, on Arrow batches -------------------------------------------------------------


def test_every_row_of_a_duplicated_composite_key_is_quarantined_and_other_keys_are_not() -> None:
    batch = pa.record_batch(
        {
            "region": ["410402", "410402", "410403", "410402", "410403"],
            "id": [1, 1, 1, 2, 1],
            "name": ["甲", "乙", "丙", "丁", "戊"],
            "note": [None] * 5,
        }
    )

    reasons = _reasons(batch, rules_for_fields(FIELDS, ["region", "id"]))

    assert reasons == [
        "duplicate_key:region,id=410402|1",
        "duplicate_key:region,id=410402|1",
        "duplicate_key:region,id=410403|1",
        None,  # same id, another region: another key
        "duplicate_key:region,id=410403|1",
    ]
    verdict = evaluate(batch, rules_for_fields(FIELDS, ["region", "id"]))
    assert verdict.by_dimension == {"consistency": 4}


def test_a_null_key_part_is_null_key_once_and_never_a_duplicate() -> None:
    batch = pa.record_batch(
        {
            "region": ["410402", None, None, "410402"],
            "id": [None, 7, 7, 8],
            "name": ["甲", "乙", "丙", None],
            "note": [None] * 4,
        }
    )
    rules = rules_for_fields(FIELDS, ["region", "id"])

    reasons = _reasons(batch, rules)

    assert reasons == ["null_key:id", "null_key:region", "null_key:region", "required:name"]
    assert not any(type(r) is Required and r.field in ("region", "id") for r in rules)
    assert [r.field for r in rules if isinstance(r, NullKey)] == ["region", "id"]
    assert evaluate(batch, rules).by_dimension == {"completeness": 4}


def test_a_forced_hash_collision_never_quarantines_distinct_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every key hashes to 0: every row is a candidate, only the comparison by value decides.
    monkeypatch.setattr(
        "quality.rules.key_hashes", lambda b, keys: np.zeros(b.num_rows, dtype=np.uint64)
    )
    batches = [
        pa.record_batch({"region": ["410402", "410402"], "id": [1, 2]}),
        pa.record_batch({"region": ["410403", "410402"], "id": [1, 3]}),
    ]
    rule = DuplicateKey(field="region", keys=("region", "id")).over(lambda: batches)
    assert rule.duplicates is not None and rule.duplicates.num_rows == 0
    assert [rule.violations(b).to_pylist() for b in batches] == [[False, False], [False, False]]

    batches.append(pa.record_batch({"region": ["410403"], "id": [1]}))
    rule = DuplicateKey(field="region", keys=("region", "id")).over(lambda: batches)
    flagged = [rule.violations(b).to_pylist() for b in batches]
    assert flagged == [[False, False], [True, False], [True]]


def test_duplicates_spread_over_many_batches_are_all_found_keeping_only_hashes() -> None:
    ids = np.arange(20_000)
    ids[19_999] = 5  # the last row repeats the sixth
    ids[10_000] = 12_345  # and one in the middle repeats a later one
    table = pa.table({"id": pa.array(ids), "x": pa.array(np.zeros(20_000))})
    batches = table.to_batches(max_chunksize=999)  # 21 batches
    reads = []

    def staged() -> list[pa.RecordBatch]:
        reads.append(1)
        return [b.select(["id"]) for b in batches]

    rule = DuplicateKey(field="id").over(staged)

    assert len(reads) == 2  # hashes first, then only the suspect rows by value
    assert rule.duplicates is not None
    assert sorted(rule.duplicates.column("id").to_pylist()) == [5, 12_345]
    flagged = np.concatenate([rule.violations(b).to_numpy(zero_copy_only=False) for b in batches])
    assert sorted(np.flatnonzero(flagged).tolist()) == [5, 10_000, 12_345, 19_999]
    clean = DuplicateKey(field="id").over(lambda: [pa.record_batch({"id": [1, 2, 3]})])
    assert clean.duplicates is None and clean.hashes is not None and not len(clean.hashes)


def test_equal_keys_hash_equal_whatever_the_batch_and_the_type() -> None:
    values = {
        "s": pa.array(["410402", "", None, "中文", "410402"]),
        "d": pa.array([dt.date(2026, 1, 1), None, dt.date(2026, 1, 2), None, dt.date(2026, 1, 1)]),
        "t": pa.array([T0, None, T0, None, T0], pa.timestamp("us")),
        "m": pa.array(["1.50", None, "2", None, "1.50"]).cast(pa.decimal128(10, 2)),
        "b": pa.array([True, None, False, None, True]),
    }
    batch = pa.record_batch(values)
    keys = list(values)

    whole = key_hashes(batch, keys)

    assert whole[0] == whole[4] and len(set(whole[:4].tolist())) == 4
    assert key_hashes(batch.slice(4), keys)[0] == whole[0]  # an offset into the buffers
    assert key_hashes(batch, ["s", "d"])[0] != key_hashes(batch, ["d", "s"])[0]


def test_text_a_target_cannot_hold_is_named_without_showing_the_value() -> None:
    batch = pa.record_batch(
        {
            "region": ["410402"] * 6,
            "id": [1, 2, 3, 4, 5, 6],
            "name": [
                "甲\x00乙",
                "a" + INVALID_UTF8_MARK,
                LONE_SURROGATE_MARK,
                "𠀀𪚥",
                "\uffff\ufdd0",
                "ok",
            ],
            "note": [None, None, None, None, None, "x\x00"],
        }
    )

    reasons = _reasons(batch, rules_for_fields(FIELDS, ["region", "id"]))

    assert reasons == [
        "text:name=contains NUL",
        "text:name=invalid UTF-8",
        "text:name=lone surrogate",
        None,  # CJK extension B: utf8mb4 and every UTF-8 target hold it
        None,  # noncharacters, but every target holds them: delivered as the source has them
        "text:note=contains NUL",
    ]
    assert [r.field for r in rules_for_fields(FIELDS, ["id"]) if isinstance(r, Text)] == [
        "region",
        "name",
        "note",
    ]


def test_another_rule_s_excerpt_of_a_value_with_nul_shows_it_as_a_symbol() -> None:
    fields = [Field("id", "bigint"), Field("name", "varchar", length=3)]
    batch = pa.record_batch({"id": [1], "name": ["ab\x00cd"]})
    (reason,) = _reasons(batch, rules_for_fields(fields, ["id"]))
    assert reason == "max_length(3):name=ab␀cd; text:name=contains NUL"


def test_source_bytes_that_are_not_utf8_decode_to_marks() -> None:
    assert decode_marked(b"a\xffb") == "a" + INVALID_UTF8_MARK + "b"
    assert decode_marked(b"\xed\xa0\x80x") == LONE_SURROGATE_MARK + "x"
    assert decode_marked("中文".encode()) == "中文"


# -- live runs -------------------------------------------------------------------------------

RESOURCE = """\
- code: R
  name: 企业
  kind: table
  provider: src
  share: unconditional
  source: {table: company}
  mode: incremental
  primary_key: [region, id]
  cursor: updated_at
  batch_size: 100
  quality: {max_bad_ratio: 0.5}
  fields:
    - {name: region, type: char, length: 6}
    - {name: id, type: bigint}
    - {name: name, type: varchar, length: 20, nullable: false}
    - {name: updated_at, type: timestamp, nullable: false}
"""
GRANT = ["region", "id", "name", "updated_at"]


def sqlite_source(path: Path, rows: list[tuple[object, ...]]) -> None:
    """A provider table without a primary-key constraint: nothing stops two rows a key.
    Values given as bytes are stored as TEXT with exactly those bytes."""
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE company (region TEXT, id INTEGER, name TEXT, updated_at TEXT)")
        for region, i, name in rows:
            text = "CAST(? AS TEXT)" if isinstance(name, bytes) else "?"
            db.execute(
                f"INSERT INTO company VALUES (?, ?, {text}, ?)",  # noqa: S608
                (region, i, name, T0.isoformat(sep=" ")),
            )


@pytest.mark.postgres
@pytest.mark.mariadb
def test_two_source_rows_for_one_key_reach_no_target_and_both_targets_hold_the_same_rows(
    tmp_path: Path,
    pg_database: str,
    mariadb_database: str,
    make_workspace: Callable[[str], Workspace],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Before: PostgreSQL refused the whole delivery, MariaDB kept one of the two, arbitrarily.
    monkeypatch.setenv("PG_URL", pg_database)
    monkeypatch.setenv("MARIA_URL", mariadb_database)
    rows = [
        ("410402", 1, "甲"),
        ("410402", 2, "乙"),
        ("410402", 1, "甲（重复）"),  # a second row for key 410402|1
        ("410403", 1, "丙"),  # same id, another region: another key
        ("410403", 2, "丁"),
    ]
    sqlite_source(tmp_path / "src.db", rows)
    nodes = {
        "src": ("sqlite", "{path: src.db}"),
        "pg": ("postgresql", "{env: PG_URL}"),
        "maria": ("mysql", "{env: MARIA_URL}"),
    }
    ws = make_workspace(catalog_yaml(nodes, RESOURCE))
    add_subscription(ws, "R", "pg", GRANT, FAR, target_table="company")
    add_subscription(ws, "R", "maria", GRANT, FAR, target_table="company")

    summary = run_resource(ws, "R")

    assert summary.status == "succeeded", summary.failures
    assert (summary.extracted, summary.valid, summary.quarantined) == (5, 3, 2)
    expected = [("410402", 2, "乙"), ("410403", 1, "丙"), ("410403", 2, "丁")]
    for url in (pg_database, mariadb_database):
        got = sorted(r[:3] for r in table_rows(url, GRANT, "company"))
        assert got == sorted(expected), url
    total, held = list_quarantine(ws, "R")
    assert total == 2
    assert {(h.row_key, h.reasons) for h in held} == {
        ("410402|1", "duplicate_key:region,id=410402|1")
    }


@pytest.mark.postgres
def test_a_nul_in_source_text_is_quarantined_and_the_rest_reaches_postgresql(
    tmp_path: Path,
    pg_database: str,
    make_workspace: Callable[[str], Workspace],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Before: validation passed it, and the PostgreSQL subscriber failed on every run.
    monkeypatch.setenv("PG_URL", pg_database)
    sqlite_source(
        tmp_path / "src.db",
        [("410402", 1, "甲"), ("410402", 2, "乙\x00丙"), ("410402", 3, "丁")],
    )
    nodes = {"src": ("sqlite", "{path: src.db}"), "pg": ("postgresql", "{env: PG_URL}")}
    ws = make_workspace(catalog_yaml(nodes, RESOURCE))
    add_subscription(ws, "R", "pg", GRANT, FAR, target_table="company")

    summary = run_resource(ws, "R")

    assert summary.status == "succeeded", summary.failures
    assert (summary.valid, summary.quarantined) == (2, 1)
    got = [r[:3] for r in table_rows(pg_database, GRANT, "company")]
    assert got == [("410402", 1, "甲"), ("410402", 3, "丁")]
    (held,) = list_quarantine(ws, "R")[1]
    assert (held.row_key, held.reasons) == ("410402|2", "text:name=contains NUL")

    again = run_resource(ws, "R")  # the next run is not failed by it either
    assert again.status == "succeeded", again.failures


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EXCHANGE_HOME": str(home)}
    env.pop("EXCHANGE_DB_URL", None)
    env.pop("EXCHANGE_CRASH_AT", None)
    return subprocess.run(
        [sys.executable, "-m", "exchange", *args, "--catalog", str(home / "catalog.yaml")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=home,
    )


def test_invalid_utf8_and_a_lone_surrogate_in_a_sqlite_source_are_quarantined_not_a_traceback(
    tmp_path: Path, make_workspace: Callable[[str], Workspace]
) -> None:
    # Before: sqlite3's "Could not decode to UTF-8 column" traceback, 60 lines, exit 1.
    sqlite_source(
        tmp_path / "src.db",
        [
            ("410402", 1, "甲"),
            ("410402", 2, b"GBK:" + "乙".encode("gbk")),  # bytes that are not UTF-8
            ("410402", 3, b"\xed\xa0\x80"),  # a lone surrogate, U+D800, as three bytes
            ("410402", 4, "丁"),
        ],
    )
    nodes = {"src": ("sqlite", "{path: src.db}"), "a": ("sqlite", "{path: a.db}")}
    ws = make_workspace(catalog_yaml(nodes, RESOURCE))
    add_subscription(ws, "R", "a", GRANT, FAR, target_table="company")

    out = _cli(tmp_path, "run", "R")

    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    assert [r[:3] for r in table_rows(f"sqlite:///{tmp_path / 'a.db'}", GRANT, "company")] == [
        ("410402", 1, "甲"),
        ("410402", 4, "丁"),
    ]
    held = {h.row_key: h.reasons for h in list_quarantine(ws, "R")[1]}
    assert held == {"410402|2": "text:name=invalid UTF-8", "410402|3": "text:name=lone surrogate"}


def test_bytes_that_are_not_utf8_in_a_non_text_sqlite_column_exit_2_naming_field_and_key(
    tmp_path: Path, make_workspace: Callable[[str], Workspace]
) -> None:
    sqlite_source(tmp_path / "src.db", [("410402", 1, "甲"), ("410402", 2, "乙")])
    with sqlite3.connect(tmp_path / "src.db") as db:
        db.execute("UPDATE company SET updated_at = CAST(x'32303236ff' AS TEXT) WHERE id = 2")
    nodes = {"src": ("sqlite", "{path: src.db}"), "a": ("sqlite", "{path: a.db}")}
    ws = make_workspace(catalog_yaml(nodes, RESOURCE))
    add_subscription(ws, "R", "a", GRANT, FAR, target_table="company")

    out = _cli(tmp_path, "run", "R")

    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    message = " ".join(out.stderr.split())
    assert "resource R" in message and "field 'updated_at'" in message
    assert "row key region='410402',id=2" in message


def test_gx_flags_the_same_rows_as_the_engine_for_duplicate_keys_null_keys_and_text() -> None:
    gx = pytest.importorskip("great_expectations")
    from exchange.quality.gx import table_for_gx

    table = pa.table(
        {
            "region": ["410402", "410402", "410403", None, "410402", None, "410403"],
            "id": [1, 1, 1, 1, 2, 7, 1],
            "name": ["甲", "乙\x00", "丙", "丁", "戊", "己", "庚"],
            "note": ["x", None, "a\x00b", None, None, "y", "z"],
        }
    )
    batch = table.combine_chunks().to_batches()[0]
    rules = [r for r in rules_for_fields(FIELDS, ["region", "id"]) if r.expectation()]
    assert {type(r).__name__ for r in rules} >= {"NullKey", "Text", "DuplicateKey"}
    ctx = gx.get_context(mode="ephemeral")
    batch_def = (
        ctx.data_sources.add_pandas("pd")
        .add_dataframe_asset("df")
        .add_batch_definition_whole_dataframe("all")
    )
    suite = gx.ExpectationSuite(
        name="keys",
        expectations=[{**r.expectation(), "meta": {"rule": r.reason()}} for r in rules],  # type: ignore[dict-item]
    )
    result = batch_def.get_batch(batch_parameters={"dataframe": table_for_gx(table)}).validate(
        suite, result_format={"result_format": "COMPLETE"}
    )

    by_rule = {o.expectation_config.meta["rule"]: o for o in result.results}
    for rule in rules:
        arrow = [i for i, bad in enumerate(rule.violations(batch).to_pylist()) if bad]
        by_gx = sorted(by_rule[rule.reason()].result.get("unexpected_index_list") or [])
        assert by_gx == arrow, rule.reason()
    flagged = {r.reason() for r in rules if r.violations(batch).to_pylist().count(True)}
    assert flagged >= {"duplicate_key:region,id", "null_key:region", "text:name", "text:note"}


def test_unique_declared_on_a_one_field_key_is_not_flagged_twice(tmp_path: Path) -> None:
    text = RULES_RESOURCE.replace(
        "- {name: id, type: bigint}", "- {name: id, type: bigint, rules: {unique: true}}"
    )
    rules = rules_for_resource(resource(tmp_path, text), NOW)
    batch = pa.record_batch({"id": [1, 1]})
    on_id = [r for r in rules if r.field == "id"]
    assert [type(r).__name__ for r in on_id] == ["NullKey", "DuplicateKey"]
    assert _reasons(batch, on_id) == ["duplicate_key:id=1", "duplicate_key:id=1"]
