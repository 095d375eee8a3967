"""Arrow batch -> tab-separated text rows, the input format of both PostgreSQL's
``COPY … FROM STDIN`` (text format) and MySQL/MariaDB's ``LOAD DATA`` defaults.

Both read ``\\N`` as NULL and the same backslash escapes, so one vectorised encoder serves
both bulk paths; no Python loop touches a row.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

_SPECIAL = r"[\\\t\n\r]"
_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))


def _column_text(arr: pa.Array) -> pa.Array:
    if pa.types.is_large_string(arr.type):
        arr = pc.cast(arr, pa.string())  # one batch of text stays far below 2 GiB
    if pa.types.is_boolean(arr.type):
        text = pc.if_else(arr, "1", "0")
    elif pa.types.is_string(arr.type):
        text = arr
        # One scan decides whether the four escaping passes are needed at all (mostly not).
        if pc.any(pc.match_substring_regex(arr, _SPECIAL)).as_py():
            for raw, escaped in _ESCAPES:
                text = pc.replace_substring(text, raw, escaped)
    else:
        text = pc.cast(arr, pa.string())
    return pc.fill_null(text, "\\N")


def encode_text_buffer(batch: pa.RecordBatch) -> pa.Buffer:
    """Every row of ``batch`` as one ``\t``-separated, ``\n``-terminated UTF-8 line, as an
    Arrow buffer (zero-copy: it is the data buffer of the joined string array)."""
    if batch.num_rows == 0:
        return pa.py_buffer(b"")
    columns = [_column_text(c) for c in batch.columns]
    lines = pc.binary_join_element_wise(*columns, "\t")
    terminated = pc.binary_join_element_wise(lines, pa.scalar(""), "\n")
    if isinstance(terminated, pa.ChunkedArray):
        terminated = terminated.combine_chunks()
    offsets = terminated.buffers()[1]
    data = terminated.buffers()[2]
    if data is None:
        return pa.py_buffer(b"")
    bounds = pa.Array.from_buffers(
        pa.int32(), len(terminated) + 1, [None, offsets], offset=terminated.offset
    )
    start, end = bounds[0].as_py(), bounds[len(terminated)].as_py()
    return data.slice(start, end - start)


def encode_text_rows(batch: pa.RecordBatch) -> bytes:
    """``encode_text_buffer`` as bytes (one copy)."""
    return encode_text_buffer(batch).to_pybytes()
