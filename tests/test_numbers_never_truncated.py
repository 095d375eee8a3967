"""A driver value that does not fit an integer field is an error naming the field and the
row, never silently cut: ``pa.array([2.5], type=int32)`` gives 2, so a SQLite ``REAL`` (or any
driver handing over floats) in a field declared integer would reach every subscriber
truncated."""

from __future__ import annotations

import pyarrow as pa
import pytest

from connectors.arrow_types import ConversionFailed, rows_to_batch

SCHEMA = pa.schema([pa.field("id", pa.int64()), pa.field("count", pa.int32())])


def test_a_fraction_in_an_integer_field_is_refused_with_its_field_and_row() -> None:
    with pytest.raises(ConversionFailed) as failed:
        rows_to_batch([(1, 3), (2, 2.5), (3, 4)], SCHEMA)

    assert (failed.value.field, failed.value.index, failed.value.value) == ("count", 1, 2.5)


def test_whole_floats_and_nulls_in_an_integer_field_are_kept_exactly() -> None:
    batch = rows_to_batch([(1, 3.0), (2, None), (3, 7)], SCHEMA)

    assert batch.column("count").to_pylist() == [3, None, 7]
    assert batch.schema == SCHEMA
