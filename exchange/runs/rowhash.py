"""A 128-bit hash of each row's values, vectorised (pyarrow builds the bytes, numpy hashes).

Two uses: a subscription's memory of the rows it already holds (``exchange.runs.delivered``:
an unchanged row on or near the watermark is not sent again) and the quarantine's memory of
the rows it already holds (a bad row seen again unchanged is not counted or listed twice).

Each row becomes one canonical byte string over the chosen fields, in order: a field is ``~``
when NULL, else ``<length>:<text>`` with its value cast to text by Arrow (one spelling per
type), so no two different rows share a string. The string, padded with NULs to whole 8-byte
words, is hashed as a sum over its words of a 64-bit mixer (splitmix64's finaliser) of the
word and its position, in two lanes (the second weights each term by an odd number from its
position), each lane finalised with the string's length. No per-row Python: a handful of
numpy passes over the words, in chunks of about 4 MB so that memory stays bounded.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

HASH_TYPE = pa.binary(16)


def _pads() -> pa.Array:
    """``b""``, ``b"\\0"``, ... ``b"\\0" * 7`` as large binary, built from buffers: ``pa.array``
    of a Python list would import pandas (pyarrow's check for pandas input), 0.8 s that the
    run path must not pay."""
    offsets = [i * (i - 1) // 2 for i in range(9)]  # value i holds i NULs
    return pa.Array.from_buffers(
        pa.large_binary(),
        8,
        [None, pa.py_buffer(np.array(offsets, np.int64).tobytes()), pa.py_buffer(bytes(28))],
    )


_CHUNK_WORDS = 1 << 19  # 4 MB of row bytes at a time
_PADS = _pads()  # _PADS[0], b"", is also the separator that joins a value to its padding
_SEED_1 = np.uint64(0x9E3779B97F4A7C15)
_SEED_2 = np.uint64(0xD6E8FEB86659FD93)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on every element (uint64, wrapping)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def canonical(batch: pa.RecordBatch | pa.Table, fields: Sequence[str]) -> pa.Array:
    """Each row's fields as one unambiguous string (see the module's docstring)."""
    pieces = []
    for name in fields:
        column = batch.column(name)
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        text = pc.cast(column, pa.string())
        length = pc.cast(pc.binary_length(text), pa.string())
        pieces.append(pc.fill_null(pc.binary_join_element_wise(length, text, ":"), "~"))
    joined = pc.binary_join_element_wise(*pieces, "")
    return joined.combine_chunks() if isinstance(joined, pa.ChunkedArray) else joined


def hash_strings(strings: pa.Array) -> pa.Array:
    """The 16-byte hash of each (non-null) string or binary value."""
    n = len(strings)
    if n == 0:
        return pa.FixedSizeBinaryArray.from_buffers(HASH_TYPE, 0, [None, pa.py_buffer(b"")])
    values = strings.cast(pa.large_binary())
    lengths = pc.binary_length(values)
    # Pad each value with NULs to a whole number of 8-byte words (a new array: offset 0).
    pad = pc.cast(pc.bit_wise_and(pc.negate(lengths), 7), pa.int8())
    padded = pc.binary_join_element_wise(values, _PADS.take(pad), _PADS[0])  # separator b""
    _, offsets_buf, data_buf = padded.buffers()
    assert offsets_buf is not None
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)[: n + 1] // 8
    words = (
        np.frombuffer(data_buf, dtype="<u8", count=int(offsets[-1]))
        if data_buf is not None and offsets[-1]
        else np.empty(0, np.uint64)
    )
    sizes = lengths.to_numpy(zero_copy_only=False).astype(np.uint64)
    out = np.empty((n, 2), dtype=np.uint64)
    start = 0
    while start < n:  # rows start .. stop-1: about _CHUNK_WORDS words, at least one row
        stop = int(np.searchsorted(offsets, offsets[start] + _CHUNK_WORDS, side="right")) - 1
        stop = min(max(start + 1, stop), n)
        out[start:stop] = _hash_chunk(offsets[start : stop + 1], words, sizes[start:stop])
        start = stop
    return pa.FixedSizeBinaryArray.from_buffers(HASH_TYPE, n, [None, pa.py_buffer(out.tobytes())])


def _hash_chunk(offsets: np.ndarray, words: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    lo, hi = int(offsets[0]), int(offsets[-1])
    counts = np.diff(offsets)
    rows = len(counts)
    h1 = np.zeros(rows, dtype=np.uint64)
    h2 = np.zeros(rows, dtype=np.uint64)
    if hi > lo:
        row_of = np.repeat(np.arange(rows), counts)
        position = (np.arange(lo, hi, dtype=np.int64) - offsets[:-1][row_of]).astype(np.uint64)
        terms = _mix(words[lo:hi] ^ (position * _SEED_1 + _SEED_2))
        weighted = terms * (position * np.uint64(2) + np.uint64(1))
        nonempty = counts > 0
        starts = (offsets[:-1] - lo)[nonempty]
        h1[nonempty] = np.add.reduceat(terms, starts)
        h2[nonempty] = np.add.reduceat(weighted, starts)
    return np.stack([_mix(h1 ^ _mix(sizes ^ _SEED_1)), _mix(h2 ^ _mix(sizes ^ _SEED_2))], axis=1)


def row_hashes(batch: pa.RecordBatch | pa.Table, fields: Sequence[str]) -> pa.Array:
    """The 16-byte hash of each row's ``fields`` (order matters)."""
    return hash_strings(canonical(batch, fields))
