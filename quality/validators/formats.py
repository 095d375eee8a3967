"""Formats of administrative region codes and phone numbers: one RE2 regex each."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

# GB/T 2260: two digits of province (the 34 provincial-level codes), two of prefecture, two of
# county. The province prefix is checked; which counties exist changes yearly, so a resource that
# needs the current list declares it as an ``enum``.
REGION_CODE_PATTERN = r"^(1[1-5]|2[1-3]|3[1-7]|4[1-6]|5[0-4]|6[1-5]|71|8[12])[0-9]{4}$"
# Mainland mobile numbers: 11 digits starting 13-19, optionally +86 / 86 in front.
MOBILE_PATTERN = r"^(\+?86)?1[3-9][0-9]{9}$"
# A mobile number, or a landline: area code 0 + 2-3 digits, 7-8 digits, optional extension.
PHONE_PATTERN = r"^((\+?86)?1[3-9][0-9]{9}|0[1-9][0-9]{1,2}-?[1-9][0-9]{6,7}(-[0-9]{1,6})?)$"


def _invalid(values: pa.Array | pa.ChunkedArray, pattern: str) -> pa.BooleanArray:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not pa.types.is_string(values.type):
        values = values.cast(pa.string())
    return pc.invert(pc.fill_null(pc.match_substring_regex(values, pattern), True))


def invalid_region_code(values: pa.Array | pa.ChunkedArray) -> pa.BooleanArray:
    """True where a non-null value is not a 6-digit region code of a real province."""
    return _invalid(values, REGION_CODE_PATTERN)


def invalid_mobile(values: pa.Array | pa.ChunkedArray) -> pa.BooleanArray:
    """True where a non-null value is not a mainland mobile number."""
    return _invalid(values, MOBILE_PATTERN)


def invalid_phone(values: pa.Array | pa.ChunkedArray) -> pa.BooleanArray:
    """True where a non-null value is neither a mobile nor a landline number."""
    return _invalid(values, PHONE_PATTERN)
