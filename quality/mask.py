"""Short value excerpts for quarantine reasons, with ID and phone numbers masked.

A reason says which value broke a rule, so that a provider can find and fix it, without the
quarantine index becoming a copy of people's ID and phone numbers.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

EXCERPT_CHARS = 16
STARS = "****"


def _mask(text: pa.Array, kind: str | None) -> pa.Array:
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
    text = _mask(text, kind)
    cut = pc.utf8_slice_codeunits(text, 0, EXCERPT_CHARS)
    longer = pc.greater(pc.utf8_length(text), EXCERPT_CHARS)
    text = pc.if_else(longer, pc.binary_join_element_wise(cut, "…", ""), text)
    return pc.replace_substring(pc.replace_substring(text, ";", ","), "\x00", "␀")
