"""A run's staged Parquet files, checked before a resumed run trusts them.

A step whose done-file exists is skipped on resume, so a staged file that was damaged since
(a disk error, a half-restored backup, a hand edit) would fail every later step on every run.
Instead, a damaged file undoes the step that wrote it and every step after it: the next run
redoes them from the source (a table's extract reads the provider again; a file run parses its
staged files again). Cheap: only the Parquet footer and row count are read.

Not once the run has delivered to a subscriber, though: the source may have changed since,
and the rest of the run (the other subscribers, the quarantine and error-report bookkeeping of
the record step) would then go by rows that subscriber never got. Such a run fails naming
the file, and ``--restart`` starts a new one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from exchange.kernel.errors import DataError, RunFailed
from exchange.runs.handle import RunHandle
from exchange.runs.results import deliveries_recorded
from exchange.runs.rundir import RunDir
from exchange.workspace import Workspace

#: Each step that writes Parquet, what it writes, and the done-file key of its row count.
STEPS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("extract", ("extract",), "rows"),
    ("validate", ("valid", "quarantine"), "valid"),
)


@dataclass(frozen=True)
class Damaged:
    """A staged file that cannot be read as its step wrote it."""

    step: str  # the step that wrote it (redone, with every step after it)
    path: Path
    reason: str


def _problem(path: Path, rows: int | None) -> str | None:
    """Why ``path`` is not the Parquet file of ``rows`` rows its step wrote (None: it is)."""
    if not path.exists():
        return "it is missing" if rows else None
    try:
        with pq.ParquetFile(path) as pf:
            found = pf.metadata.num_rows
    except (pa.ArrowException, OSError) as exc:
        return f"not a readable Parquet file: {str(exc).splitlines()[0]}"
    if rows is not None and found != rows:
        return f"it holds {found} rows, its step wrote {rows}"
    return None


def damaged(rd: RunDir) -> Damaged | None:
    """The first staged file of a done step that cannot be read back, if any."""
    for step, parts, key in STEPS:
        if not rd.is_done(step):
            continue
        rows = rd.read_done(step).get(key)
        for part in parts:
            # Only the first part's count is in the done-file (quarantine has its own).
            problem = _problem(rd.part(part), rows if part == parts[0] else None)
            if problem is not None:
                return Damaged(step, rd.part(part), problem)
    return None


def undo_from(rd: RunDir, step: str) -> None:
    """Discard ``step`` and every step after it that writes Parquet (done-files, outputs)."""
    names = [name for name, _, _ in STEPS]
    for name, parts, _ in STEPS[names.index(step) :]:
        rd.done_file(name).unlink(missing_ok=True)
        rd.reset(*parts)


def _not_redone(ws: Workspace, run: RunHandle, bad: Damaged) -> None:
    """Refuse to redo ``bad``'s step of a run that has delivered already (see the module)."""
    n = deliveries_recorded(ws, run.id)
    if n:
        raise DataError(
            f"resource {run.code} run {run.id}: staged file {bad.path} is unusable "
            f"({bad.reason}), and the run has recorded {n} subscriber delivery(ies) made from "
            f"it: its {bad.step} step is not redone from the source, which may have changed "
            f"since; `exchange run {run.code} --restart` abandons this run and starts a new one"
        )


def repair(ws: Workspace, run: RunHandle) -> tuple[RunHandle, Damaged | None]:
    """A resumed run whose damaged staged file (if any) is undone with its step and those
    after it, so that this run redoes them; with a note saying so. ``DataError`` when the run
    delivered already."""
    bad = damaged(run.dir)
    if bad is None:
        return run, None
    _not_redone(ws, run, bad)
    undo_from(run.dir, bad.step)
    return (
        run.noting(
            f"run {run.id}: its staged file {bad.path} was unusable ({bad.reason}): "
            f"redoing the {bad.step} step from the source"
        ),
        bad,
    )


def _unreadable_data(path: Path) -> str | None:
    """Why the data of ``path`` cannot be read although its footer can (None: it reads)."""
    if not path.exists():
        return None
    try:
        with pq.ParquetFile(path, pre_buffer=False) as pf:
            for _ in pf.iter_batches(batch_size=65_536, use_threads=False):
                pass
    except (pa.ArrowException, OSError) as exc:
        return f"not a readable Parquet file: {str(exc).splitlines()[0]}"
    return None


def unreadable(ws: Workspace, run: RunHandle) -> RunFailed | None:
    """The error of a step that failed reading its input, when a staged file is to blame: the
    file and the run named, and the step that wrote it undone, so the next run redoes it
    (None: every staged file reads, the failure is something else). ``DataError`` when the
    run delivered already."""
    bad = damaged(run.dir)
    if bad is None:  # the footer reads; the data itself? (the extract is what validate reads)
        reason = _unreadable_data(run.dir.part("extract"))
        if reason is None:
            return None
        bad = Damaged("extract", run.dir.part("extract"), reason)
    _not_redone(ws, run, bad)
    undo_from(run.dir, bad.step)
    return RunFailed(
        run.code,
        run.id,
        f"staged file {bad.path} is unusable ({bad.reason}); the {bad.step} step is undone "
        "and the next run redoes it from the source",
    )
