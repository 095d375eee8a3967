"""Conformance rules on Arrow batches: every bad row is found, with every reason it has."""

from __future__ import annotations

import pyarrow as pa

from exchange.catalog.model import Field
from quality import evaluate, rules_for_fields


def test_a_row_breaking_two_rules_carries_both_reasons_and_good_rows_carry_none() -> None:
    fields = [
        Field("id", "bigint", nullable=False),
        Field("name", "varchar", length=3, nullable=False),
        Field("code", "char", length=2),
    ]
    batch = pa.record_batch(
        {
            "id": [1, 2, None, 4, 5],
            "name": ["甲乙丙", "甲乙丙丁", "ok", None, "x"],
            "code": ["AB", "ABC", None, "A", None],
        }
    )

    verdict = evaluate(batch, rules_for_fields(fields, ["id"]))

    assert verdict.bad.to_pylist() == [False, True, True, True, False]
    held = verdict.quarantined(batch).to_pylist()
    assert [(r["id"], r["_reasons"]) for r in held] == [
        (2, "max_length(3):name=甲乙丙丁; max_length(2):code=ABC"),
        (None, "null_key:id"),  # a key part: null_key, not required too
        (4, "required:name"),
    ]
    assert verdict.good(batch).column("id").to_pylist() == [1, 5]
    assert verdict.counts == {
        "null_key:id": 1,
        "required:name": 1,
        "max_length(3):name": 1,
        "max_length(2):code": 1,
    }


def test_length_counts_characters_not_bytes() -> None:
    batch = pa.record_batch({"name": ["中华人民共和国"]})  # 7 characters, 21 bytes
    verdict = evaluate(batch, rules_for_fields([Field("name", "varchar", length=7)], []))
    assert verdict.bad_rows == 0


def test_an_empty_batch_has_no_bad_rows() -> None:
    batch = pa.record_batch({"id": pa.array([], pa.int64())})
    verdict = evaluate(batch, rules_for_fields([Field("id", "bigint", nullable=False)], ["id"]))
    assert verdict.bad_rows == 0 and verdict.good(batch).num_rows == 0
