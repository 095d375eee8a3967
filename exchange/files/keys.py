"""Keys across tabular files: the later file's row wins, for every subscriber alike.

A provider's files are usually increments: tomorrow's file updates rows of today's. So when
one key is in two files, the row of the later file is the one delivered, files ordered by
modification time, then name (``file_order``). Every subscriber must end with the same rows
whichever runs brought them the files, so the order is the files', never the runs': a table
subscriber that needs a file also takes every file after it (``exchange.files.plan``), and a
run that reads several files drops the earlier files' rows of a key a later file holds
(``supersede``), saying so in the run's notes. Within one file a repeated key is still
``duplicate_key``'s, at validate: it is not an update, and no row of it is delivered.

Only a later row that passes validation replaces an earlier one: one that breaks a rule, or
whose key repeats within its file, is quarantined, and the earlier file's row stands
(``Superseded.standing``), as it stands for a subscriber that took the earlier file in an
earlier run. Validate judges a standing row without ``duplicate_key`` (and counts no key twice
for it): its key is in the run again only in those quarantined later rows.

Finding the keys in more than one file keeps 8 bytes a row (``quality.rules.DuplicateKey``:
the keys' hashes, confirmed by value); only the rows of such keys are then read with their
position, which names their file.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from exchange.catalog.model import Resource
from exchange.kernel.clock import local_now
from exchange.runs.rundir import RunDir
from quality import rules_for_resource
from quality.evaluate import evaluate
from quality.mask import excerpt
from quality.rules import DuplicateKey, Rule, Unique

_ROW, _FILE, _LAST, _EARLIER, _GOOD = "_row", "_file", "_last", "_earlier", "_good"
_COUNT, _LATEST = "_count", "_latest"
_SHOWN = 3  # keys named in a note; the rest are counted


def file_order(path: str, mtime: float) -> tuple[float, str]:
    """Where a file stands among the resource's files: later files' rows win."""
    return (mtime, path)


def with_later_files(
    needs: dict[str, tuple[int, ...]],
    mtimes: dict[str, float],
    table_subscribers: Sequence[int],
) -> dict[str, tuple[int, ...]]:
    """``needs`` (file -> the subscribers that lack it, for every listed file) with each table
    subscriber also taking every file after the first one it lacks: an old file copied in
    late (``cp -p``) must not overwrite the row of a later file it already holds. The usual
    new file is the last one: nothing is added then."""
    taking: set[int] = set()
    out: dict[str, tuple[int, ...]] = {}
    for rel in sorted(needs, key=lambda rel: file_order(rel, mtimes[rel])):
        mine = needs[rel]
        taking |= set(mine) & set(table_subscribers)
        out[rel] = mine + tuple(sid for sid in table_subscribers if sid in taking - set(mine))
    return {rel: out[rel] for rel in needs}  # in the listing's order, as before


@dataclass(frozen=True)
class Span:
    """The rows one file put into the run's extract: ``start`` up to ``end`` (exclusive)."""

    path: str
    mtime: float
    start: int
    end: int


@dataclass(frozen=True)
class Superseded:
    """Rows of earlier files that a later file's row of the same key replaces."""

    rows: np.ndarray  # positions in the parsed rows, ascending
    notes: tuple[str, ...] = ()
    # Positions in the parsed rows of earlier rows that stand: every later row of their key
    # is quarantined (a rule it breaks, or its key repeated within its file).
    standing: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))


def _key_text(table: pa.Table, keys: Sequence[str], masks: dict[str, str]) -> list[str]:
    """``code=1`` (``region=410402,id=1``) for each row, ID and phone numbers masked."""
    parts = [
        [f"{k}={v}" for v in excerpt(table.column(k).combine_chunks(), masks.get(k)).to_pylist()]
        for k in keys
    ]
    return [",".join(p) for p in zip(*parts, strict=True)]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _notes(
    per_key: pa.Table, replaced: int, tie: bool, spans: Sequence[Span], resource: Resource
) -> tuple[str, ...]:
    """One line for the run: which keys a later file updated, and over which files."""
    keys = list(resource.primary_key)
    masks = {r.field: r.mask for r in rules_for_resource(resource, local_now()) if r.mask}
    shown = per_key.slice(0, _SHOWN)
    parts = []
    for text, last, earlier in zip(
        _key_text(shown, keys, masks),
        shown.column(_LAST).to_pylist(),
        shown.column(_EARLIER).to_pylist(),
        strict=True,
    ):
        names = ", ".join(spans[i].path for i in sorted(earlier))
        parts.append(f"key {text} is in {spans[last].path}, also in {names}")
    more = per_key.num_rows - shown.num_rows
    line = (
        f"{_plural(per_key.num_rows, 'key')} in more than one file: the later file's row is "
        f"delivered, {_plural(replaced, 'earlier row')} replaced ("
        + "; ".join(parts)
        + (f"; and {_plural(more, 'more key')}" if more else "")
        + ")"
    )
    if tie:
        line += "; files of the same modification time are ordered by name"
    return (line,)


def _by_name(grouped: pa.Table, keys: Sequence[str], *names: str) -> pa.Table:
    """A group_by's result as ``keys`` then ``names`` (its aggregates, in their order)."""
    aggregates = [c for c in grouped.column_names if c not in keys]
    return pa.table(
        {
            **{k: grouped.column(k) for k in keys},
            **dict(zip(names, (grouped.column(c) for c in aggregates), strict=True)),
        }
    )


def row_rules(resource: Resource) -> list[Rule]:
    """The rules that judge a row by itself (not by the run's other rows), as validate has
    them: whether a later file's row passes validation, and so replaces an earlier one."""
    return [
        r
        for r in rules_for_resource(resource, local_now())
        if not isinstance(r, DuplicateKey | Unique)
    ]


def _passing(rows: pa.Table, keys: Sequence[str], rules: Sequence[Rule]) -> pa.Array:
    """Whether each row (of a key in more than one file) would pass validation: no rule it
    breaks, and its key not repeated within its own file (``duplicate_key``'s)."""
    good = pc.invert(evaluate(rows.to_batches()[0], rules).bad)
    per_file = rows.group_by([*keys, _FILE]).aggregate([([], "count_all")])
    per_file = _by_name(per_file, [*keys, _FILE], _COUNT)
    counted = rows.select([*keys, _FILE, _ROW]).join(per_file, keys=[*keys, _FILE])
    counted = counted.sort_by(_ROW)  # a join keeps no order; rows is in _ROW order
    once = pc.equal(counted.column(_COUNT), 1)
    return pc.and_(good, once.combine_chunks())


def supersede(rd: RunDir, part: str, resource: Resource, spans: Sequence[Span]) -> Superseded:
    """The rows of ``part`` (files written in file order, ``spans``) that a later file's row
    of the same key replaces, the earlier rows that stand (``Superseded.standing``) and the
    note that says so. None, usually: nothing is read twice then."""
    keys = tuple(resource.primary_key)
    nothing = Superseded(np.zeros(0, np.int64))
    if len(spans) < 2 or not keys:
        return nothing
    repeated = DuplicateKey(field=keys[0], keys=keys).over(
        functools.partial(rd.batches, part, columns=list(keys))
    )
    if repeated.duplicates is None or not repeated.duplicates.num_rows:
        return nothing
    # The rows of a repeated key (every field: are they valid?), with their position, hence
    # their file.
    found, offset = [], 0
    for batch in rd.batches(part):
        at = np.flatnonzero(repeated.violations(batch).to_numpy(zero_copy_only=False))
        if len(at):
            rows = pa.Table.from_batches([batch.take(pa.array(at))])
            found.append(rows.append_column(_ROW, pa.array(at + offset)))
        offset += batch.num_rows
    rows = pa.concat_tables(found).combine_chunks()
    starts = np.array([s.start for s in spans], dtype=np.int64)
    files = np.searchsorted(starts, rows.column(_ROW).to_numpy(), side="right") - 1
    rows = rows.append_column(_FILE, pa.array(files))
    rows = rows.append_column(_GOOD, _passing(rows, keys, row_rules(resource)))
    rows = rows.select([*keys, _ROW, _FILE, _GOOD])
    # The winner of a key: its latest file with a row that passes; none passes: no winner.
    good = rows.filter(rows.column(_GOOD))
    last = _by_name(good.group_by(list(keys)).aggregate([(_FILE, "max")]), keys, _LAST)
    latest = _by_name(rows.group_by(list(keys)).aggregate([(_FILE, "max")]), keys, _LATEST)
    rows = rows.join(last, keys=list(keys)).join(latest, keys=list(keys))
    losers = rows.filter(pc.less(rows.column(_FILE), rows.column(_LAST)))
    # A winner with quarantined rows after it stands (it is not the latest file's row).
    standing = rows.filter(
        pc.and_(
            pc.equal(rows.column(_FILE), rows.column(_LAST)),
            pc.less(rows.column(_LAST), rows.column(_LATEST)),
        )
    )
    stands = np.sort(standing.column(_ROW).to_numpy())
    if not losers.num_rows:
        # Repeated within one file only (duplicate_key's, at validate), or no later row passes.
        return dataclasses.replace(nothing, standing=stands)
    mtimes = np.array([s.mtime for s in spans])
    tie = bool(
        np.any(mtimes[losers.column(_FILE).to_numpy()] == mtimes[losers.column(_LAST).to_numpy()])
    )
    per_key = _by_name(
        losers.group_by(list(keys)).aggregate([(_FILE, "distinct"), (_LAST, "max")]),
        keys,
        _EARLIER,
        _LAST,
    )
    per_key = per_key.sort_by([(k, "ascending") for k in keys])
    return Superseded(
        np.sort(losers.column(_ROW).to_numpy()),
        _notes(per_key, losers.num_rows, tie, spans, resource),
        stands,
    )


def after_removal(positions: np.ndarray, removed: np.ndarray) -> list[int]:
    """``positions`` (ascending) in a part from which the ``removed`` rows (ascending, none
    of ``positions``) are gone."""
    return [int(p) for p in positions - np.searchsorted(removed, positions)]


def without(batch: pa.RecordBatch, offset: int, rows: np.ndarray) -> pa.RecordBatch:
    """``batch`` (at ``offset`` in its part) less the ``rows`` positions it holds."""
    lo, hi = np.searchsorted(rows, [offset, offset + batch.num_rows])
    if lo == hi:
        return batch
    keep = np.ones(batch.num_rows, dtype=bool)
    keep[rows[lo:hi] - offset] = False
    return batch.filter(pa.array(keep))
