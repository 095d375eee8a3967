"""The vectorised check-character validators agree with python-stdnum, value for value."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st
from stdnum.cn import ric, uscc

from quality.validators import (
    invalid_mobile,
    invalid_phone,
    invalid_region_code,
    invalid_resident_id,
    invalid_uscc,
)
from quality.validators.checkdigits import USCC_ALPHABET

DIGITS = "0123456789"
uscc_prefix = st.tuples(
    st.sampled_from("123456789"),
    st.sampled_from("123456789"),
    st.text(DIGITS, min_size=6, max_size=6),
    st.text(USCC_ALPHABET, min_size=9, max_size=9),
).map("".join)
TODAY = dt.date(2026, 11, 24)


def flags(fn, values: list[str | None]) -> list[bool]:  # type: ignore[no-untyped-def]
    return fn(pa.array(values, pa.string())).to_pylist()


@settings(max_examples=300, deadline=None)
@given(st.lists(uscc_prefix, min_size=1, max_size=40), st.data())
def test_uscc_valid_codes_pass_and_any_other_check_character_fails(
    prefixes: list[str], data: st.DataObject
) -> None:
    valid = [p + uscc.calc_check_digit(p) for p in prefixes]
    wrong = [
        p + data.draw(st.sampled_from([c for c in USCC_ALPHABET if c != v[-1]]))
        for p, v in zip(prefixes, valid, strict=True)
    ]
    assert all(uscc.is_valid(v) for v in valid)
    assert not any(uscc.is_valid(w) for w in wrong)
    assert flags(invalid_uscc, valid + wrong) == [False] * len(valid) + [True] * len(wrong)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text("12345" + USCC_ALPHABET + "IOZ-a ", min_size=16, max_size=19), max_size=30))
def test_uscc_verdict_equals_stdnum_on_arbitrary_text(values: list[str]) -> None:
    # stdnum also accepts a leading "0"; in GB 32100 position 1 and 2 are never 0, so such
    # codes are left out of the comparison (ours rejects them).
    values = [v for v in values if not (v[:1] == "0" or v[1:2] == "0")]
    expected = [not uscc.is_valid(v) for v in values]
    assert flags(invalid_uscc, values) == expected


birth = st.dates(min_value=dt.date(1890, 1, 1), max_value=TODAY)
ric_body = st.tuples(
    st.sampled_from("123456789"),
    st.text(DIGITS, min_size=5, max_size=5),
    birth.map(lambda d: f"{d:%Y%m%d}"),
    st.text(DIGITS, min_size=3, max_size=3),
).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.lists(ric_body, min_size=1, max_size=40), st.data())
def test_resident_id_check_digit_matches_stdnum(bodies: list[str], data: st.DataObject) -> None:
    valid = [b + ric.calc_check_digit(b + "0") for b in bodies]
    wrong = [
        b + data.draw(st.sampled_from([c for c in DIGITS + "X" if c != v[-1]]))
        for b, v in zip(bodies, valid, strict=True)
    ]
    got = invalid_resident_id(pa.array(valid + wrong), TODAY).to_pylist()
    assert got == [False] * len(valid) + [True] * len(wrong)


def test_resident_id_needs_a_birth_date_that_exists_and_is_not_in_the_future() -> None:
    def with_check(body: str) -> str:
        return body + ric.calc_check_digit(body + "0")

    cases = {
        with_check("41040220000229123"): False,  # 29 Feb of a leap year
        with_check("41040219000229123"): True,  # 1900 was no leap year
        with_check("41040219990230123"): True,  # 30 Feb
        with_check("41040219991301123"): True,  # month 13
        with_check("41040218891231123"): True,  # before 1890
        with_check("41040220261125123"): True,  # tomorrow
        with_check("41040220261124123"): False,  # today
        "41040219900101123": True,  # 17 characters
        "4104021990010112x": True,  # lower-case x is not the check character
    }
    for value in cases:
        if len(value) == 18 and value[-1] != "x":
            assert ric.calc_check_digit(value) == value[-1]
    got = invalid_resident_id(pa.array(list(cases)), TODAY).to_pylist()
    assert dict(zip(cases, got, strict=True)) == cases


def test_nulls_are_never_invalid_and_sliced_arrays_keep_their_rows() -> None:
    code = "91410402" + "MA1234567"
    good = code + uscc.calc_check_digit(code)
    arr = pa.array(["junk", good, None, good[:-1] + "Z", good])
    assert invalid_uscc(arr.slice(1)).to_pylist() == [False, False, True, False]
    assert invalid_resident_id(pa.array([None, None], pa.string())).to_pylist() == [False, False]
    assert invalid_uscc(pa.array([], pa.string())).to_pylist() == []


def test_region_codes_need_a_real_province_prefix() -> None:
    values = ["410402", "110101", "820000", "000000", "990101", "41040", "4104021", None]
    assert flags(invalid_region_code, values) == [
        False, False, False, True, True, True, True, False,
    ]  # fmt: skip


def test_mobile_and_landline_numbers() -> None:
    values = ["13812345678", "+8613812345678", "12812345678", "0375-2661234", "0375266",
              "010-88886666-123", "2661234", "1381234567", None]  # fmt: skip
    assert flags(invalid_mobile, values) == [
        False, False, True, True, True, True, True, True, False,
    ]  # fmt: skip
    assert flags(invalid_phone, values) == [
        False, False, True, False, True, False, True, True, False,
    ]  # fmt: skip
