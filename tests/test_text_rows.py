"""The tab-separated text rows fed to PostgreSQL COPY and MySQL/MariaDB LOAD DATA."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.text_rows import encode_text_rows

_UNESCAPE = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}


def decode_field(field: str) -> str | None:
    """One field as COPY's text format reads it: ``\\N`` is NULL, backslash escapes undone."""
    if field == "\\N":
        return None
    out, chars = [], iter(field)
    for ch in chars:
        if ch == "\\":
            nxt = next(chars)
            assert nxt in _UNESCAPE, f"unexpected escape \\{nxt} in {field!r}"
            out.append(_UNESCAPE[nxt])
        else:
            assert ch not in "\t\n\r", f"raw control character in {field!r}"
            out.append(ch)
    return "".join(out)


def decode(payload: bytes) -> list[list[str | None]]:
    """A small reference decoder: rows end in an unescaped newline, fields split on tabs."""
    text = payload.decode("utf-8")
    if not text:
        return []
    assert text.endswith("\n"), "every row is newline-terminated"
    # Escaped tabs/newlines are spelled with a backslash, so raw ones are always delimiters.
    return [[decode_field(f) for f in line.split("\t")] for line in text[:-1].split("\n")]


def batch(**columns: pa.Array) -> pa.RecordBatch:
    return pa.record_batch(columns)


def text(values: list[str | None]) -> pa.Array:
    return pa.array(values, pa.string())


# -- values -----------------------------------------------------------------------------------


def test_null_is_backslash_n_in_every_type() -> None:
    rows = batch(
        s=text([None]),
        i=pa.array([None], pa.int64()),
        b=pa.array([None], pa.bool_()),
        d=pa.array([None], pa.decimal128(18, 2)),
        t=pa.array([None], pa.timestamp("us")),
    )

    assert encode_text_rows(rows) == b"\\N\t\\N\t\\N\t\\N\t\\N\n"


def test_the_text_backslash_n_is_not_null() -> None:
    assert encode_text_rows(batch(s=text(["\\N", None, ""]))) == b"\\\\N\n\\N\n\n"


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        ("a\tb", b"a\\tb"),
        ("line1\nline2", b"line1\\nline2"),
        ("dos\r\n", b"dos\\r\\n"),
        ("C:\\temp", b"C:\\\\temp"),
        ("\\t is not a tab", b"\\\\t is not a tab"),
        ("\\", b"\\\\"),
    ],
)
def test_control_characters_and_backslashes_in_text_are_escaped(value: str, encoded: bytes) -> None:
    assert encode_text_rows(batch(s=text([value]))) == encoded + b"\n"


def test_booleans_are_one_and_zero() -> None:
    assert encode_text_rows(batch(b=pa.array([True, False, None]))) == b"1\n0\n\\N\n"


def test_decimals_keep_their_scale() -> None:
    values = [Decimal("1.50"), Decimal("-0.05"), Decimal("100"), Decimal("1234567890123456.78")]
    rows = batch(d=pa.array(values, pa.decimal128(18, 2)))

    assert encode_text_rows(rows) == b"1.50\n-0.05\n100.00\n1234567890123456.78\n"


def test_timestamps_keep_microseconds_and_dates_are_iso() -> None:
    rows = batch(
        t=pa.array(
            [dt.datetime(2026, 3, 2, 9, 0, 0, 123456), dt.datetime(2026, 3, 2, 9, 0, 0)],
            pa.timestamp("us"),
        ),
        d=pa.array([dt.date(2026, 1, 1), dt.date(1949, 10, 1)], pa.date32()),
    )

    assert encode_text_rows(rows) == (
        b"2026-03-02 09:00:00.123456\t2026-01-01\n2026-03-02 09:00:00.000000\t1949-10-01\n"
    )


def test_integers_and_doubles_are_plain_numbers() -> None:
    rows = batch(
        i=pa.array([-32768, 9_007_199_254_740_993], pa.int64()),
        f=pa.array([1.5, -0.25], pa.float64()),
    )

    assert encode_text_rows(rows) == b"-32768\t1.5\n9007199254740993\t-0.25\n"


def test_chinese_text_is_utf8() -> None:
    rows = batch(name=text(["市场监督管理局", "𠀀 outside the BMP"]))

    assert encode_text_rows(rows) == "市场监督管理局\n𠀀 outside the BMP\n".encode()


# -- batches ----------------------------------------------------------------------------------


def test_columns_are_tab_separated_and_rows_newline_terminated() -> None:
    rows = batch(id=pa.array([1, 2], pa.int64()), name=text(["甲", None]))

    assert encode_text_rows(rows) == "1\t甲\n2\t\\N\n".encode()


def test_a_sliced_batch_encodes_only_its_own_rows() -> None:
    whole = batch(
        id=pa.array([1, 2, 3, 4, 5], pa.int64()),
        name=text(["one", "two\tb", None, "four", "five"]),
        ok=pa.array([True, False, None, True, False]),
    )

    assert encode_text_rows(whole.slice(1, 3)) == b"2\ttwo\\tb\t0\n3\t\\N\t\\N\n4\tfour\t1\n"
    assert encode_text_rows(whole.slice(4)) == b"5\tfive\t0\n"


def test_a_sliced_single_text_column_encodes_only_its_own_rows() -> None:
    whole = batch(name=text(["a", "bb", None, "dddd"]))

    assert encode_text_rows(whole.slice(1, 2)) == b"bb\n\\N\n"
    assert encode_text_rows(whole.slice(3)) == b"dddd\n"


def test_an_empty_batch_is_no_bytes() -> None:
    empty = batch(id=pa.array([], pa.int64()), name=text([]))

    assert encode_text_rows(empty) == b""
    assert encode_text_rows(batch(id=pa.array([1], pa.int64())).slice(1)) == b""


def test_a_large_string_column_encodes_like_a_string_column() -> None:
    values = ["a\tb", None, "张三"]

    assert encode_text_rows(batch(s=pa.array(values, pa.large_string()))) == encode_text_rows(
        batch(s=text(values))
    )


# -- round trip -------------------------------------------------------------------------------

# Any text but NUL (PostgreSQL cannot store it), weighted towards the characters that matter.
TRICKY = st.text(alphabet=st.sampled_from("\t\n\r\\N \x0b\x1f\x7f\x85\u2028a中"), max_size=12)
ANY_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30)
OPTIONAL_TEXT = st.none() | TRICKY | ANY_TEXT


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(OPTIONAL_TEXT, OPTIONAL_TEXT), max_size=20))
def test_decoding_the_text_rows_gives_back_the_values(rows: list[tuple[str | None, ...]]) -> None:
    first = [r[0] for r in rows]
    second = [r[1] for r in rows]

    payload = encode_text_rows(batch(first=text(first), second=text(second)))

    assert decode(payload) == [list(r) for r in rows]


@settings(max_examples=100, deadline=None)
@given(st.lists(OPTIONAL_TEXT, min_size=1, max_size=20), st.data())
def test_decoding_a_slice_gives_back_the_sliced_values(
    values: list[str | None], data: st.DataObject
) -> None:
    start = data.draw(st.integers(0, len(values)))
    length = data.draw(st.integers(0, len(values) - start))

    payload = encode_text_rows(batch(v=text(values)).slice(start, length))

    assert decode(payload) == [[v] for v in values[start : start + length]]
