"""Short value excerpts for quarantine reasons, with ID and phone numbers masked.

A reason says which value broke a rule, so that a provider can find and fix it, without the
quarantine index becoming a copy of people's ID and phone numbers.
"""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.compute as pc

EXCERPT_CHARS = 16
STARS = "****"
#: How the values a domain validator checks are masked wherever a value is shown: in a
#: reason's excerpt, and as (part of) a row key.
MASK_OF_VALIDATOR = {"resident_id": "id", "mobile": "phone", "phone": "phone"}
#: A resident ID number (17 digits and a digit or X) or a mobile number (1, then 10 digits)
#: standing alone in a text, not inside a longer number.
_ID_OR_MOBILE = re.compile(r"(?<![0-9A-Za-z])(?:\d{17}[\dXx]|1[3-9]\d{9})(?![0-9A-Za-z])")


def mask_values(text: pa.Array, kind: str | None) -> pa.Array:
    """``id``: first 3 and last 2 characters kept (410****3X); ``phone``: first 3 and last 4
    (138****5678). Short values keep only their last 2."""
    if kind is None:
        return text
    keep_head, keep_tail, long_from = (3, 2, 10) if kind == "id" else (3, 4, 11)
    long = pc.utf8_replace_slice(text, keep_head, -keep_tail, STARS)
    short = pc.utf8_replace_slice(text, 0, -2, STARS)
    return pc.if_else(pc.greater_equal(pc.utf8_length(text), long_from), long, short)


def excerpt(values: pa.Array, kind: str | None = None) -> pa.Array:
    """Each value as short text: masked if ``kind`` says so, cut to 16 characters with '…',
    without ';' (which separates reasons) and with a NUL shown as '␀' (the quarantine index
    may be a PostgreSQL store, whose text cannot hold one)."""
    text = values if pa.types.is_string(values.type) else pc.cast(values, pa.string())
    text = mask_values(text, kind)
    cut = pc.utf8_slice_codeunits(text, 0, EXCERPT_CHARS)
    longer = pc.greater(pc.utf8_length(text), EXCERPT_CHARS)
    text = pc.if_else(longer, pc.binary_join_element_wise(cut, "…", ""), text)
    return pc.replace_substring(pc.replace_substring(text, ";", ","), "\x00", "␀")


def mask_text(text: str) -> str:
    """``text`` (an error message quoting a row key or a value, a driver's message quoting its
    input) with every resident ID and mobile number in it masked as ``mask_values`` masks them,
    whichever field they came from: an error is shown, logged and kept on the run."""
    return _ID_OR_MOBILE.sub(lambda m: _masked(m.group()), text)


def _masked(number: str) -> str:
    head, tail = (3, 2) if len(number) == 18 else (3, 4)
    return number[:head] + STARS + number[-tail:]
