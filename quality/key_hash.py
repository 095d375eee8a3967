"""A 64-bit hash of each row's key, vectorised (numpy over the Arrow buffers).

Key integrity over a whole run keeps 8 bytes a row, not the keys: ``key_hashes`` of every
batch, sorted once, shows which hashes repeat; only the rows with a repeated hash are then
compared by value (``quality.rules.DuplicateKey``), so a collision costs a comparison, never
a false quarantine. The hash needs to be equal for equal keys and spread well, nothing more:
integers, dates and times hash their value, text and decimals their UTF-8 bytes
(a tabulated polynomial hash, one pass over the value bytes), and columns are combined with
the splitmix64 finaliser.

``repeated_hashes`` finds the hashes that occur more than once in bounded memory: past
``SPILL_ROWS`` hashes they go to ``2**PARTITION_BITS`` files by their top bits (spilled hash
partitions), and each file is then sorted alone, so memory is one partition and one batch,
whatever the run's size.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from exchange.kernel.modes import private_file

_U64 = np.uint64
_GOLDEN = _U64(0x9E3779B97F4A7C15)
_BYTES = np.random.default_rng(20261201).integers(0, 2**64, 256, dtype=np.uint64, endpoint=False)
_P = 0x100000001B3  # odd, so invertible modulo 2**64
_CHUNK = 8192  # rows hashed at a time: the temporaries stay in the CPU cache
# _POWERS[i] = P**i and _INVERSE[i] = P**-i (mod 2**64), grown on demand.
_POWERS = np.ones(1, dtype=np.uint64)
_INVERSE = np.ones(1, dtype=np.uint64)
# Hashes held in memory before they are spilled to partition files (2 MiB of them): small, so a
# 1M-row run and a 5M-row one spill alike and peak alike; 64 partitions keep each file
# at 1/64 of the run (5M rows: 0.6 MiB a partition).
SPILL_ROWS = 1 << 18
PARTITION_BITS = 6


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit reaches every output bit."""
    h = h ^ (h >> _U64(30))
    h = h * _U64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> _U64(27))
    h = h * _U64(0x94D049BB133111EB)
    return h ^ (h >> _U64(31))


def _cumulative_powers(base: int, n: int) -> np.ndarray:
    steps = np.full(n, base, dtype=np.uint64)
    steps[0] = 1
    return np.cumprod(steps, dtype=np.uint64)  # wraps modulo 2**64, as meant


def _power_tables(n: int) -> tuple[np.ndarray, np.ndarray]:
    global _POWERS, _INVERSE
    if len(_POWERS) < n:
        size = max(n, 2 * len(_POWERS))
        _POWERS = _cumulative_powers(_P, size)
        _INVERSE = _cumulative_powers(pow(_P, -1, 2**64), size)
    return _POWERS, _INVERSE


def _bytes_hash(col: pa.Array) -> np.ndarray:
    """Each value's bytes b_0..b_k hashed as sum T[b_i] * P**i (mod 2**64), its length mixed
    in. Computed over the batch's byte buffer at once: a prefix sum of T[b_j] * P**j over
    all bytes j, each value's slice of it, shifted back by P**-start."""
    if len(col) > _CHUNK:
        return np.concatenate(
            [_bytes_hash(col.slice(i, _CHUNK)) for i in range(0, len(col), _CHUNK)]
        )
    if not pa.types.is_large_binary(col.type):
        col = pc.cast(col, pa.large_binary())
    n = len(col)
    offsets = np.frombuffer(col.buffers()[1], dtype=np.int64, count=n + 1, offset=col.offset * 8)
    start, end = int(offsets[0]), int(offsets[-1])
    data_buf = col.buffers()[2]
    data = (
        np.frombuffer(data_buf, dtype=np.uint8)[start:end]
        if data_buf is not None
        else np.zeros(0, np.uint8)
    )
    offsets = offsets - start
    powers, inverse = _power_tables(len(data) + 1)
    sums = np.zeros(len(data) + 1, dtype=np.uint64)
    np.cumsum(_BYTES[data] * powers[: len(data)], out=sums[1:])
    h = (sums[offsets[1:]] - sums[offsets[:-1]]) * inverse[offsets[:-1]]
    return _mix(h + np.diff(offsets).astype(np.uint64) * _GOLDEN)


def _int_view(col: pa.Array) -> np.ndarray:
    """The values as uint64 (nulls as 0: rows with a null key part are judged elsewhere)."""
    t = col.type
    if pa.types.is_boolean(t):
        col = pc.cast(col, pa.int8())
    elif pa.types.is_date32(t) or pa.types.is_time32(t):
        col = col.view(pa.int32())
    elif pa.types.is_temporal(t):
        col = col.view(pa.int64())
    elif pa.types.is_floating(t):
        col = pc.add(pc.cast(col, pa.float64()), 0.0)  # -0.0 and 0.0: one value
        values = col.fill_null(0.0).to_numpy(zero_copy_only=False)
        # Every NaN one value, as Arrow's own hashing (``unique``, ``group_by``) has them.
        values = np.where(np.isnan(values), np.nan, values)
        return np.ascontiguousarray(values).view(np.uint64)
    values = col.fill_null(0).to_numpy(zero_copy_only=False)
    return values.astype(np.int64).view(np.uint64)


def column_hash(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A uint64 per value of one column; equal values, equal hashes."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    t = col.type
    if pa.types.is_dictionary(t):
        col = col.dictionary_decode()
        t = col.type
    if pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_temporal(t):
        return _mix(_int_view(col) + _GOLDEN)
    if pa.types.is_floating(t):
        return _mix(_int_view(col))
    if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)):
        col = pc.cast(col, pa.string())  # decimals: their canonical text at the column's scale
    return _bytes_hash(col)


def key_hashes(batch: pa.RecordBatch | pa.Table, keys: Sequence[str]) -> np.ndarray:
    """One uint64 per row of ``batch``, over the ``keys`` columns in order."""
    h = np.zeros(batch.num_rows, dtype=np.uint64)
    for k in keys:
        h = _mix(h * _U64(_P) + column_hash(batch.column(k)) + _GOLDEN)
    return h


def _repeats_of(hashes: np.ndarray) -> np.ndarray:
    """The values of ``hashes`` that occur more than once, sorted, each once."""
    h = np.sort(hashes)
    return np.unique(h[1:][h[1:] == h[:-1]])


class _Partitions:
    """Hashes spread over ``2**PARTITION_BITS`` files by their top bits, in a private
    directory of its own under ``where`` (hashes of ID numbers can be reversed by trying
    every number: the files are 0600, and removed when read)."""

    def __init__(self, where: Path) -> None:
        where.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix="hashes-", dir=where))  # 0700
        self.shift = np.uint64(64 - PARTITION_BITS)
        self.files: list[BinaryIO] = [
            open(private_file(self.path / f"{p:02x}"), "wb")  # noqa: SIM115 (closed in close())
            for p in range(1 << PARTITION_BITS)
        ]

    def add(self, hashes: np.ndarray) -> None:
        """Append ``hashes`` to their partitions' files (one stable radix pass by top bits)."""
        part = (hashes >> self.shift).astype(np.uint8)
        ordered = hashes[np.argsort(part, kind="stable")]
        ends = np.cumsum(np.bincount(part, minlength=len(self.files)))
        start = 0
        for f, end in zip(self.files, ends.tolist(), strict=True):
            if end > start:
                f.write(ordered[start:end].tobytes())
            start = end

    def repeats(self) -> np.ndarray:
        """Each partition's repeated hashes, one partition in memory at a time. Partitions
        hold disjoint, ascending ranges of hashes, so the result is sorted."""
        for f in self.files:
            f.close()
        found = []
        for p in range(len(self.files)):
            path = self.path / f"{p:02x}"
            found.append(_repeats_of(np.fromfile(path, dtype=np.uint64)))
            path.unlink()
        return np.concatenate(found)

    def close(self) -> None:
        for f in self.files:
            f.close()
        shutil.rmtree(self.path, ignore_errors=True)


def repeated_hashes(hashes: Iterable[np.ndarray], spill: Path | None = None) -> np.ndarray:
    """The hashes that occur more than once across ``hashes`` (one array a batch), sorted.

    With a ``spill`` directory, memory is bounded: beyond ``SPILL_ROWS`` hashes they are
    written to partition files there (removed before this returns, or raises); without one,
    every hash is kept in memory (8 bytes a row) and sorted once."""
    held: list[np.ndarray] = []
    count = 0
    partitions: _Partitions | None = None
    try:
        for h in hashes:
            held.append(h)
            count += len(h)
            if spill is not None and count > SPILL_ROWS:
                partitions = partitions or _Partitions(spill)
                partitions.add(np.concatenate(held))
                held, count = [], 0
        rest = np.concatenate(held) if held else np.zeros(0, np.uint64)
        if partitions is None:
            return _repeats_of(rest)
        partitions.add(rest)
        del held, rest
        return partitions.repeats()
    finally:
        if partitions is not None:
            partitions.close()
