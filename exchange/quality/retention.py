"""What is kept of a finished run's bad rows, and for how long.

A run's quarantine file (``quarantine/data.parquet`` in its staging directory) holds each bad
row in full beside its reasons, whose ID and phone numbers are masked; its ``extract/`` and
``valid/`` files hold the same rows in full too. The raw rows are kept while a quality ticket
that is not closed lists the run (the provider and the platform review it), even past the
retention period. Once every such ticket is closed and the run is finished, the review is over:
the quarantine file is rewritten with the masked reasons alone and the run's ``extract/`` and
``valid/`` are removed (a finished run is never resumed, so no step reads them again). ``prune``
does that for every run that qualifies, then removes the staging directories past the
retention period (``exchange.runs.prune``), keeping the quarantine files still under review: it
is what ``exchange prune`` and the housekeeping DAG run.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa
from sqlalchemy.orm import Session

from exchange.kernel.clock import utcnow
from exchange.quality.models import QualityTicket
from exchange.runs import prune as runs_prune
from exchange.runs.rundir import RunDir, private_file, remove_run_dir
from exchange.store.models import Run, RunPrune
from exchange.workspace import Workspace
from quality.evaluate import REASONS_COLUMN

log = logging.getLogger(__name__)

#: The parts of a run directory that hold its rows in full besides the quarantine file.
ROW_COPIES = ("extract", "valid")
#: What reading or rewriting one quarantine file may fail with (that file is skipped).
FILE_ERRORS = (OSError, pa.ArrowException)


@dataclass(frozen=True)
class Reviewed:
    """A finished run whose quarantine file holds raw rows no unclosed ticket lists."""

    run_id: str
    resource: str
    staging_dir: str

    @property
    def quarantine(self) -> Path:
        return quarantine_file(self.staging_dir)


def quarantine_file(staging_dir: str | Path) -> Path:
    return RunDir(staging_dir).part("quarantine")


def has_raw_rows(path: Path) -> bool:
    """Whether a quarantine file still holds row values beside the reasons."""
    return path.is_file() and pq.read_schema(path).names != [REASONS_COLUMN]


def scrub(path: Path) -> bool:
    """Rewrite a quarantine file with its masked reasons only (0600, write-then-rename, so
    a crash leaves the old file or the new one); whether it held raw rows."""
    if not has_raw_rows(path):
        return False
    tmp = path.with_name(path.name + ".scrub")
    os.close(private_file(tmp))
    with pq.ParquetFile(path, pre_buffer=False) as pf:
        schema = pf.schema_arrow
        reasons = schema.field(REASONS_COLUMN)
        with pq.ParquetWriter(tmp, pa.schema([reasons]), compression="lz4") as out:
            for batch in pf.iter_batches(columns=[REASONS_COLUMN], use_threads=False):
                out.write_batch(batch)
    os.replace(tmp, path)
    return True


def end_review(run: Reviewed, runs_dir: Path | None = None) -> list[str]:
    """The review of a finished run is over: scrub its quarantine file, remove its
    ``extract/`` and ``valid/``. Only in the run's own directory (``runs_dir/<resource>/<run
    id>``; without ``runs_dir``, a directory of that resource and run id). What could not be
    done, each with its path (nothing raises: one bad file stops no other run)."""
    staging = Path(run.staging_dir)
    root = runs_dir if runs_dir is not None else staging.parent.parent
    try:
        scrub(run.quarantine)
    except FILE_ERRORS as exc:
        return [f"{run.quarantine}: {exc}"]
    removal = remove_run_dir(staging, root, run.resource, run.run_id, parts=ROW_COPIES)
    return [removal.refused] if removal.refused else list(removal.failures)


def under_review(s: Session) -> dict[str, list[int]]:
    """Run id -> the tickets not closed yet that list it (their rows are still reviewed)."""
    out: dict[str, list[int]] = {}
    for ticket_id, runs in s.execute(
        sa.select(QualityTicket.id, QualityTicket.runs).where(QualityTicket.status != "closed")
    ):
        for run_id in runs or ():
            out.setdefault(run_id, []).append(ticket_id)
    return out


def reviewed(
    s: Session, only: Collection[str] | None = None, problems: dict[str, str] | None = None
) -> list[Reviewed]:
    """Finished, unpruned runs (of ``only``, if given) whose quarantine file holds raw rows
    that no open or answered ticket lists any more. A file that cannot be read is left out
    and named in ``problems`` (run id -> path and error), or logged."""
    reviewing = under_review(s)
    q = sa.select(Run.id, Run.resource_code, Run.staging_dir).where(
        runs_prune.finished(), ~sa.exists().where(RunPrune.run_id == Run.id)
    )
    if only is not None:
        q = q.where(Run.id.in_(list(only)))
    out = []
    for run_id, resource, staging in s.execute(q.order_by(Run.id)):
        if run_id in reviewing:
            continue
        run = Reviewed(run_id, resource, staging)
        try:
            raw = has_raw_rows(run.quarantine)
        except FILE_ERRORS as exc:
            _problem(problems, run_id, f"{run.quarantine}: {exc}")
            continue
        if raw:
            out.append(run)
    return out


def _problem(problems: dict[str, str] | None, run_id: str, what: str) -> None:
    if problems is None:
        log.warning("run %s: quarantine file left as it is: %s", run_id, what)
    else:
        problems[run_id] = what


def scrub_after_commit(s: Session, run_ids: Iterable[str]) -> None:
    """Once ``s`` commits (a ticket closed), end the review (``end_review``) of the runs of
    ``run_ids`` that no other ticket still reviews. Files change only after the commit: a
    close that rolls back keeps the raw rows it was still under review with. The close has
    committed by then, so a file that cannot be rewritten is logged, never raised: the next
    ``exchange prune`` tries again."""
    runs = reviewed(s, set(run_ids))
    if not runs:
        return

    def rewrite(_: Session) -> None:
        for run in runs:
            for problem in end_review(run):
                log.warning("run %s: the end of its review left %s", run.run_id, problem)

    sa.event.listen(s, "after_commit", rewrite, once=True)


@dataclass
class RetentionReport:
    """What ``prune`` did: runs whose review ended (quarantine file reduced to its reasons,
    row copies removed), directories removed; ``problems``: what could not be done with a
    run's quarantine file (run id -> path and error; also in ``pruned.failed``)."""

    scrubbed: list[str] = field(default_factory=list)  # run ids
    problems: dict[str, str] = field(default_factory=dict)
    pruned: runs_prune.PruneReport | None = None


def prune(
    ws: Workspace, now: dt.datetime | None = None, *, dry_run: bool = False
) -> RetentionReport:
    """End the review of the finished runs whose tickets are closed, then prune the staging
    directories past the retention period (``now``: naive UTC), keeping the quarantine files
    still under review. ``dry_run`` changes nothing and reports what would be done."""
    now = now or utcnow()
    report = RetentionReport()
    with ws.store.session() as s:
        runs = reviewed(s, problems=report.problems)
        keep = {
            run_id: "quarantine/ kept: ticket " + ", ".join(str(t) for t in tickets)
            + " that lists this run is not closed"
            for run_id, tickets in under_review(s).items()
        }  # fmt: skip
    for run in runs:
        problems = [] if dry_run else end_review(run, ws.settings.runs_dir)
        if problems:
            report.problems[run.run_id] = "; ".join(problems)
        else:
            report.scrubbed.append(run.run_id)
    report.pruned = runs_prune.prune(ws, now, dry_run=dry_run, keep_quarantine=keep)
    for run_id, why in report.problems.items():
        report.pruned.fail(run_id, why)
    return report


def prune_step(catalog_path: str | Path, now: dt.datetime) -> dict[str, object]:
    """The housekeeping DAG's prune task (``now`` with its zone): what it removed. What it
    left alone, the same every 15 minutes, is logged at debug level and only counted here;
    what failed is logged as a warning."""
    with Workspace.open(catalog_path) as ws:
        report = prune(ws, now.astimezone(dt.UTC).replace(tzinfo=None))  # the store's naive UTC
    pruned = report.pruned
    assert pruned is not None
    for run_id, why in pruned.skipped.items():
        if run_id in pruned.failed:
            log.warning("prune could not finish run %s: %s", run_id, why)
        else:
            log.debug("prune left run %s: %s", run_id, why)
    return {
        "scrubbed": report.scrubbed,
        "pruned": [r.run_id for r in pruned.runs],
        "bytes": pruned.bytes,
        "skipped": len(pruned.skipped),
        "failed": pruned.failed,
    }
