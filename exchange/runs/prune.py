"""Pruning: a finished run's staging directory is removed once the retention period is over.

A run directory holds the extract, the valid rows and the quarantined rows in cleartext. Once
the run is finished and ``EXCHANGE_RETENTION`` (default 7 days) has passed since, nothing
needs them: the deliveries, watermarks, quarantine index and audit are in the metadata store.
Finished means succeeded, held or abandoned, or failed and either closed by its record step
(a subscriber failed) or superseded (a later run of the same resource started after it, so it
is never resumed); a running or interrupted run, or a failed one that may still be resumed, is
never touched. Only the run's own directory, ``runs/<resource>/<run id>``, is ever removed
(``rundir.not_a_run_dir``). The run's row stays; a ``run_prunes`` row records when and how much
was removed, written only once the directory is gone (what could not be removed is reported
and tried again by the next prune), and the audit log has a ``run.pruned`` event. A run
without a directory (an abandoned run's went with it) has nothing to prune and is not
recorded. A run whose quarantined rows are still reviewed keeps its ``quarantine/`` until the
review ends (``exchange.quality.retention``).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased

from exchange import audit
from exchange.kernel.clock import utcnow
from exchange.runs.rundir import Removal, not_a_run_dir, remove_run_dir, tighten_runs_dir
from exchange.store.models import Run, RunPrune
from exchange.workspace import Workspace

log = logging.getLogger(__name__)

#: Statuses of a run that will never be resumed.
FINISHED = ("succeeded", "held", "abandoned")
#: A run in this status is resumable until its record step closes it (``finished_at``) or a
#: later run of its resource supersedes it.
SUPERSEDABLE = ("failed",)


def finished() -> sa.ColumnElement[bool]:
    """Runs that are over for good: ``FINISHED``, or ``SUPERSEDABLE`` and closed or followed
    by a later run."""
    later = aliased(Run)
    superseded = (
        sa.exists()
        .where(later.resource_code == Run.resource_code, later.started_at > Run.started_at)
        .correlate(Run)
    )
    over = sa.or_(Run.finished_at.is_not(None), superseded)
    return sa.or_(Run.status.in_(FINISHED), sa.and_(Run.status.in_(SUPERSEDABLE), over))


@dataclass(frozen=True)
class PrunedRun:
    """One run whose staging directory is (or, on a dry run, would be) removed."""

    run_id: str
    resource: str
    status: str
    finished_at: dt.datetime | None
    path: str
    bytes: int
    files: int


@dataclass
class PruneReport:
    """What one prune removed (or would remove), and the runs it left alone and why."""

    dry_run: bool
    retention: dt.timedelta
    runs: list[PrunedRun] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # run id -> why it was left
    failed: dict[str, str] = field(default_factory=dict)  # run id -> what could not be done

    def fail(self, run_id: str, why: str) -> None:
        """Something of the run could not be done: it is ``failed`` and, left as it is,
        ``skipped`` too (what ``exchange prune`` prints)."""
        self.failed[run_id] = why
        before = self.skipped.get(run_id)
        self.skipped[run_id] = f"{before}; {why}" if before else why

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.runs)

    @property
    def files(self) -> int:
        return sum(r.files for r in self.runs)


def size_of(path: Path) -> tuple[int, int]:
    """Bytes and files under ``path`` (0, 0 when it is gone)."""
    total = files = 0
    for root, _, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                continue
            files += 1
    return total, files


def due(s: Session, cutoff: dt.datetime) -> list[Run]:
    """Finished runs that ended at or before ``cutoff`` and are not pruned yet, oldest first."""
    ended = sa.func.coalesce(Run.finished_at, Run.started_at)
    pruned = sa.exists().where(RunPrune.run_id == Run.id)
    return list(
        s.execute(
            sa.select(Run).where(finished(), ended <= cutoff, ~pruned).order_by(ended, Run.id)
        ).scalars()
    )


def prune(
    ws: Workspace,
    now: dt.datetime | None = None,
    *,
    dry_run: bool = False,
    keep_quarantine: Mapping[str, str] | None = None,
) -> PruneReport:
    """Remove the staging directories of the runs finished longer than the retention period
    ago (``now``: naive UTC, default the clock). Of a run in ``keep_quarantine`` (run id ->
    why: its rows are still reviewed) everything but ``quarantine/`` is removed and the run
    is pruned later, once it is not. ``dry_run`` only reports them."""
    now = now or utcnow()
    retention = ws.settings.retention
    report = PruneReport(dry_run, retention)
    keep_quarantine = keep_quarantine or {}
    with ws.store.session() as s:
        runs = [
            (r.id, r.resource_code, r.status, r.finished_at, r.staging_dir)
            for r in due(s, now - retention)
        ]
    root = ws.settings.runs_dir
    if not dry_run:
        tighten_runs_dir(root)
    for run_id, resource, status, finished_at, staging in runs:
        path = Path(staging)
        refused = not_a_run_dir(path, root, resource, run_id)
        if refused is not None:
            # Never remove what is not this run's own directory under this installation's
            # runs directory (a moved EXCHANGE_HOME, an edited row): an operator decides.
            report.skipped[run_id] = refused
            continue
        if not path.exists():
            # Nothing to remove (an abandoned run's directory went with it): nothing to record.
            log.debug("run %s: no directory %s, nothing to prune", run_id, path)
            continue
        if run_id in keep_quarantine:
            report.skipped[run_id] = keep_quarantine[run_id]
            if not dry_run:
                parts = [e.name for e in path.iterdir() if e.name != "quarantine"]
                _note_failures(
                    report, run_id, remove_run_dir(path, root, resource, run_id, parts=parts)
                )
            continue
        size, files = size_of(path)
        pruned = PrunedRun(run_id, resource, status, finished_at, staging, size, files)
        if dry_run:
            report.runs.append(pruned)
            continue
        removal = remove_run_dir(path, root, resource, run_id)
        if _note_failures(report, run_id, removal) or path.exists():
            continue  # recorded only once it is gone: the next prune tries again
        report.runs.append(pruned)
        with ws.store.session() as s:
            s.add(RunPrune(run_id=run_id, pruned_at=now, bytes_removed=size, files_removed=files))
            audit.append(
                s,
                "run.pruned",
                f"run:{run_id}",
                {
                    "resource": resource,
                    "status": status,
                    "bytes": size,
                    "files": files,
                    "retention_hours": retention.total_seconds() / 3600,
                },
            )
    return report


def _note_failures(report: PruneReport, run_id: str, removal: Removal) -> bool:
    """Put what ``removal`` could not remove in ``report.failed``; whether there was any."""
    if removal.done:
        return False
    report.fail(run_id, removal.refused or "could not remove " + "; ".join(removal.failures))
    return True
