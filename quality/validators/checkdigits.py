"""Check characters of the unified social credit code (GB 32100-2015) and of the 18-digit
resident ID number (GB 11643-1999), computed for a whole array at once.

Values of 18 bytes are viewed as an ``n x 18`` byte matrix (a zero-copy view of Arrow's
fixed-size-binary buffer, after one pyarrow.compute cast); their shape (which characters may
stand where), the weighted check sum and the birth date are then whole-column numpy operations
on that matrix, one column of 1M bytes at a time. No Python runs per row. The shape is the one
``USCC_PATTERN`` / ``RESIDENT_ID_PATTERN`` describe (the GX export uses the patterns); a regex
pass over the strings measured twice as slow as the matrix. python-stdnum is the oracle these
are tested against.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"  # 31 characters: no I, O, S, V, Z
# Position 1: registration authority (1-9, A for the military, N agriculture, Y other);
# 2: kind of entity; 3-8: region code; 9-17: organisation code; 18: check character.
USCC_PATTERN = r"^[1-9ANY][1-9][0-9]{6}[0-9A-HJ-NPQRTUWXY]{10}$"
_USCC_WEIGHTS = [pow(3, i, 31) for i in range(17)]

RESIDENT_ID_PATTERN = r"^[1-9][0-9]{16}[0-9X]$"
_RIC_WEIGHTS = [pow(2, 17 - i, 11) for i in range(17)]
_RIC_CHECK = "10X98765432"
EARLIEST_BIRTH = dt.date(1890, 1, 1)

_WIDTH = 18


def _lookup(alphabet: str) -> np.ndarray:
    """A 256-entry table: each character's position in ``alphabet`` (0 for others)."""
    table = np.zeros(256, dtype=np.int32)
    for i, ch in enumerate(alphabet):
        table[ord(ch)] = i
    return table


def _member(chars: str) -> np.ndarray:
    """A 256-entry table: True for the bytes of ``chars``."""
    table = np.zeros(256, dtype=bool)
    table[list(chars.encode())] = True
    return table


_USCC_VALUE = _lookup(USCC_ALPHABET)
_USCC_CHECK = np.frombuffer(USCC_ALPHABET.encode(), dtype=np.uint8)
_DIGIT_VALUE = _lookup("0123456789")
_RIC_CHECK_BYTES = np.frombuffer(_RIC_CHECK.encode(), dtype=np.uint8)
_DIGIT = _member("0123456789")
_NONZERO_DIGIT = _member("123456789")
_USCC_FIRST = _member("123456789ANY")
_USCC_CHAR = _member(USCC_ALPHABET)
_RIC_LAST = _member("0123456789X")
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int32)


def _byte_matrix(values: pa.Array) -> np.ndarray:
    """``values`` (all exactly 18 bytes, no nulls) as an ``n x 18`` uint8 matrix."""
    fixed = pc.cast(values.cast(pa.binary()), pa.binary(_WIDTH))
    buf = fixed.buffers()[1]
    assert buf is not None
    flat = np.frombuffer(buf, dtype=np.uint8, count=(fixed.offset + len(fixed)) * _WIDTH)
    return flat.reshape(-1, _WIDTH)[fixed.offset :]


def _all_in(m: np.ndarray, table: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Whether every byte in columns ``start:stop`` is in ``table`` (column by column: a 1-D
    gather from a 256-entry table is fast, a 2-D fancy index would widen the matrix first)."""
    ok = np.ones(len(m), dtype=bool)
    for i in range(start, stop):
        ok &= table[m[:, i]]
    return ok


def _weighted_sum(m: np.ndarray, value: np.ndarray, weights: list[int]) -> np.ndarray:
    """Sum of ``value[char] * weight`` over the first 17 characters of every row."""
    total = np.zeros(len(m), dtype=np.int32)
    for i, w in enumerate(weights):
        total += value[m[:, i]] * w
    return total


def _string_array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return values.cast(pa.string()) if not pa.types.is_string(values.type) else values


def _invalid(
    values: pa.Array | pa.ChunkedArray, valid_rows: Callable[[np.ndarray], np.ndarray]
) -> pa.BooleanArray:
    """True where a non-null value is not 18 bytes long or ``valid_rows`` rejects it."""
    arr = _string_array(values)
    n = len(arr)
    is18 = pc.fill_null(pc.equal(pc.binary_length(arr), _WIDTH), False)
    fits = is18.true_count
    if fits == n:  # the common case: no nulls, every value 18 bytes long, no copy
        return pa.array(~valid_rows(_byte_matrix(arr)))
    ok = np.zeros(n, dtype=bool)
    if fits:
        ok[np.flatnonzero(is18.to_numpy(zero_copy_only=False))] = valid_rows(
            _byte_matrix(arr.filter(is18))
        )
    bad = ~ok
    if arr.null_count:
        bad &= arr.is_valid().to_numpy(zero_copy_only=False)  # null is never invalid
    return pa.array(bad)


def _uscc_rows(m: np.ndarray) -> np.ndarray:
    ok = _USCC_FIRST[m[:, 0]] & _NONZERO_DIGIT[m[:, 1]]
    ok &= _all_in(m, _DIGIT, 2, 8) & _all_in(m, _USCC_CHAR, 8, 18)
    total = _weighted_sum(m, _USCC_VALUE, _USCC_WEIGHTS)
    return ok & (_USCC_CHECK[(31 - total % 31) % 31] == m[:, 17])


def invalid_uscc(values: pa.Array | pa.ChunkedArray) -> pa.BooleanArray:
    """True where a non-null value is not a valid unified social credit code."""
    return _invalid(values, _uscc_rows)


def _number(m: np.ndarray, start: int, stop: int) -> np.ndarray:
    """The decimal number written in columns ``start:stop`` of a digit matrix."""
    out = np.zeros(len(m), dtype=np.int32)
    for i in range(start, stop):
        out = out * 10 + (m[:, i].astype(np.int32) - 48)
    return out


def _real_birth_date(m: np.ndarray, today: dt.date) -> np.ndarray:
    """Whether columns 7-14 (YYYYMMDD) are a date that exists, from 1890 up to today."""
    year, month, day = _number(m, 6, 10), _number(m, 10, 12), _number(m, 12, 14)
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    month_ok = (month >= 1) & (month <= 12)
    days = _DAYS_IN_MONTH[np.where(month_ok, month, 0)] + ((month == 2) & leap)
    ymd = year * 10000 + month * 100 + day
    lo = EARLIEST_BIRTH.year * 10000 + EARLIEST_BIRTH.month * 100 + EARLIEST_BIRTH.day
    hi = today.year * 10000 + today.month * 100 + today.day
    return month_ok & (day >= 1) & (day <= days) & (ymd >= lo) & (ymd <= hi)


def invalid_resident_id(
    values: pa.Array | pa.ChunkedArray, today: dt.date | None = None
) -> pa.BooleanArray:
    """True where a non-null value is not an 18-digit resident ID number: wrong shape, a
    birth date that does not exist, lies in the future or before 1890, or a wrong check digit.

    The first six digits (the place of first registration) are not looked up: codes of
    abolished counties stay valid in old ID numbers, so only their shape is checked.
    """
    day = today or dt.date.today()

    def valid_rows(m: np.ndarray) -> np.ndarray:
        ok = _NONZERO_DIGIT[m[:, 0]] & _all_in(m, _DIGIT, 1, 17) & _RIC_LAST[m[:, 17]]
        total = _weighted_sum(m, _DIGIT_VALUE, _RIC_WEIGHTS)
        return ok & (_RIC_CHECK_BYTES[total % 11] == m[:, 17]) & _real_birth_date(m, day)

    return _invalid(values, valid_rows)
