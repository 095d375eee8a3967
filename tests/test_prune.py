"""Nothing cleartext is kept forever: a finished run's staging directory is pruned once the
retention period is over (its row stays, marked, and audited), never an unfinished run's; a
quarantine file keeps its raw rows only while a ticket that lists its run is not closed."""

from __future__ import annotations

import datetime as dt
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from exchange.cli.app import app
from exchange.flow import run_resource
from exchange.kernel.clock import utcnow
from exchange.kernel.errors import BadInput
from exchange.kernel.settings import Settings, parse_retention
from exchange.quality import retention
from exchange.quality.retention import prune, prune_step
from exchange.quality.tickets import answer_ticket, close_ticket, list_tickets
from exchange.runs import rundir
from exchange.runs.handle import RunHandle, abandon_run
from exchange.runs.rundir import not_a_run_dir, remove_run_dir
from exchange.store.models import AuditEvent, Run, RunPrune
from exchange.workflow.grants import add_subscription
from exchange.workspace import Workspace
from tests.conftest import catalog_yaml
from tests.sources import create_source, registry
from tests.test_quality_flow import FAR, GRANT_A, SQLITE_NODES, damage, resource_yaml
from tests.test_staging_permissions import modes

DAY = dt.timedelta(days=1)


def test_the_retention_period_is_days_or_hours_and_a_bad_value_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert parse_retention("7d") == dt.timedelta(days=7)
    assert parse_retention("36h") == dt.timedelta(hours=36)
    assert parse_retention("0d") == dt.timedelta(0)
    for bad in ("7", "7 days", "-1d", "1w", "", "d"):
        with pytest.raises(BadInput, match=r"EXCHANGE_RETENTION: .* e\.g\. 7d or 36h"):
            parse_retention(bad)
    monkeypatch.delenv("EXCHANGE_RETENTION", raising=False)
    assert Settings.from_env().retention == dt.timedelta(days=7)  # the documented default
    monkeypatch.setenv("EXCHANGE_RETENTION", "36h")
    assert Settings.from_env().retention == dt.timedelta(hours=36)
    monkeypatch.setenv("EXCHANGE_RETENTION", "a week")
    with pytest.raises(BadInput, match="EXCHANGE_RETENTION: 'a week'"):
        Settings.from_env()


@pytest.fixture
def ws(tmp_path: Path, make_workspace: Callable[[str], Workspace]) -> Workspace:
    """A workspace whose resource has four bad rows in every extract (a ticket opens)."""
    rows, _ = damage(registry(range(1, 201)))
    create_source(f"sqlite:///{tmp_path / 'src.db'}", rows)
    opened = make_workspace(catalog_yaml(SQLITE_NODES, resource_yaml()))
    add_subscription(opened, "ENT", "a", GRANT_A, FAR, target_table="ent")
    return opened


@pytest.fixture
def clean(tmp_path: Path, make_workspace: Callable[[str], Workspace]) -> Workspace:
    """A workspace whose resource has no bad row (no ticket keeps anything for review)."""
    create_source(f"sqlite:///{tmp_path / 'src.db'}", registry(range(1, 201)))
    opened = make_workspace(catalog_yaml(SQLITE_NODES, resource_yaml()))
    add_subscription(opened, "ENT", "a", GRANT_A, FAR, target_table="ent")
    return opened


def run_dir(ws: Workspace, run_id: str) -> Path:
    return RunHandle.open(ws, run_id).dir.path


def set_status(ws: Workspace, run_id: str, status: str, *, closed: bool = True) -> None:
    """Give a run ``status``; ``closed`` False: as a step left it, not closed by its record."""
    with ws.store.session() as s:
        run = s.get(Run, run_id)
        assert run is not None
        run.status = status
        if not closed:
            run.finished_at = None


def test_a_finished_run_is_pruned_after_the_retention_period_and_its_row_is_kept(
    clean: Workspace,
) -> None:
    done = run_resource(clean, "ENT")
    path = run_dir(clean, done.run_id)
    assert (path / "extract" / "data.parquet").exists()

    early = prune(clean, utcnow() + 6 * DAY)  # within the 7 days: kept
    assert early.pruned is not None and early.pruned.runs == [] and path.exists()

    report = prune(clean, utcnow() + 8 * DAY)

    assert report.pruned is not None
    assert [r.run_id for r in report.pruned.runs] == [done.run_id]
    assert report.pruned.bytes > 0 and report.pruned.files >= 4
    assert not path.exists()
    with clean.store.session() as s:
        run = s.get(Run, done.run_id)
        assert run is not None and run.status == "succeeded"  # the row stays
        mark = s.get(RunPrune, done.run_id)
        assert mark is not None and mark.bytes_removed == report.pruned.bytes
        event = s.execute(sa.select(AuditEvent).where(AuditEvent.kind == "run.pruned")).scalar_one()
        assert event.subject == f"run:{done.run_id}"
        assert event.payload["bytes"] == report.pruned.bytes
    again = prune(clean, utcnow() + 9 * DAY)
    assert again.pruned is not None and again.pruned.runs == []  # once


def test_a_dry_run_reports_what_it_would_remove_and_removes_nothing(clean: Workspace) -> None:
    done = run_resource(clean, "ENT")
    path = run_dir(clean, done.run_id)
    before = modes(path)

    report = prune(clean, utcnow() + 8 * DAY, dry_run=True)

    assert report.pruned is not None and report.pruned.dry_run
    assert [r.run_id for r in report.pruned.runs] == [done.run_id]
    assert report.pruned.bytes > 0
    assert modes(path) == before and (path / "extract" / "data.parquet").exists()
    with clean.store.session() as s:
        assert s.get(RunPrune, done.run_id) is None


def test_an_unfinished_run_is_never_pruned_and_a_failed_one_only_once_superseded(
    clean: Workspace,
) -> None:
    first = run_resource(clean, "ENT")
    later = utcnow() + 30 * DAY
    for status in ("running", "interrupted", "failed"):
        set_status(clean, first.run_id, status, closed=False)  # a step failed: resumable
        report = prune(clean, later)
        assert report.pruned is not None and report.pruned.runs == [], status
        assert run_dir(clean, first.run_id).exists()
    set_status(clean, first.run_id, "running", closed=False)
    second = run_resource(clean, "ENT")  # resumes the first
    assert second.run_id == first.run_id
    set_status(clean, first.run_id, "failed", closed=False)
    with clean.store.session() as s:  # a later run started: the failed one is never resumed now
        run = s.get(Run, first.run_id)
        assert run is not None
        s.add(
            Run(
                id="r-later", resource_code="ENT", status="running", step="plan",
                staging_dir=str(clean.settings.runs_dir / "ENT" / "r-later"),
                started_at=run.started_at + dt.timedelta(seconds=1),
            )
        )  # fmt: skip

    report = prune(clean, later)

    assert report.pruned is not None
    assert [r.run_id for r in report.pruned.runs] == [first.run_id]  # not the running one
    assert not run_dir_path(clean, first.run_id).exists()


def test_a_failed_run_closed_by_its_record_step_is_finished(clean: Workspace) -> None:
    done = run_resource(clean, "ENT")
    set_status(clean, done.run_id, "failed")  # a subscriber failed; the record step closed it

    report = prune(clean, utcnow() + 8 * DAY)

    assert report.pruned is not None and [r.run_id for r in report.pruned.runs] == [done.run_id]


def run_dir_path(ws: Workspace, run_id: str) -> Path:
    with ws.store.session() as s:
        run = s.get(Run, run_id)
        assert run is not None
        return Path(run.staging_dir)


def test_a_directory_outside_the_runs_directory_is_left_alone(
    clean: Workspace, tmp_path: Path
) -> None:
    done = run_resource(clean, "ENT")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with clean.store.session() as s:
        run = s.get(Run, done.run_id)
        assert run is not None
        run.staging_dir = str(elsewhere)

    report = prune(clean, utcnow() + 8 * DAY)

    assert report.pruned is not None and report.pruned.runs == []
    assert f"{elsewhere} is outside the runs directory" in report.pruned.skipped[done.run_id]
    assert elsewhere.exists()


def has_raw(path: Path) -> bool:
    return pq.read_schema(path / "quarantine" / "data.parquet").names != ["_reasons"]


def test_a_quarantine_file_keeps_the_raw_rows_only_while_its_ticket_is_open(
    ws: Workspace,
) -> None:
    done = run_resource(ws, "ENT")
    path = run_dir(ws, done.run_id)
    quarantine = path / "quarantine" / "data.parquet"
    reasons = pq.read_table(quarantine).column("_reasons").to_pylist()
    assert has_raw(path)
    prune(ws)  # the ticket is open: the rows stay for its review
    assert has_raw(path)
    with ws.store.session() as s:
        (ticket,) = list_tickets(s, "ENT")
        answer_ticket(s, ticket.id, "will_not_fix", "历史数据")
    assert has_raw(path)  # answered, not yet closed

    with ws.store.session() as s:
        close_ticket(s, ticket.id)

    assert not has_raw(path)
    assert pq.read_table(quarantine).column("_reasons").to_pylist() == reasons
    assert "****" in " ".join(reasons)  # the masked excerpts are what is left
    assert modes(path)["quarantine/data.parquet"] == 0o600


def test_a_ticket_closed_while_its_run_is_unfinished_is_scrubbed_by_the_next_prune(
    ws: Workspace,
) -> None:
    done = run_resource(ws, "ENT")
    path = run_dir(ws, done.run_id)
    set_status(ws, done.run_id, "running")  # (it may still deliver: it needs the keys)
    with ws.store.session() as s:
        (ticket,) = list_tickets(s, "ENT")
        answer_ticket(s, ticket.id, "accepted", "数据无误")
    with ws.store.session() as s:
        close_ticket(s, ticket.id)
    assert has_raw(path)
    set_status(ws, done.run_id, "succeeded")

    report = prune(ws)

    assert report.scrubbed == [done.run_id] and not has_raw(path)


def cli(ws: Workspace, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    home = ws.settings.home
    full = {"EXCHANGE_HOME": str(home), "EXCHANGE_DB_URL": ws.settings.db_url, **env}
    result = CliRunner().invoke(app, ["prune", *args, "--catalog", str(ws.catalog.path)], env=full)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def test_exchange_prune_prints_what_it_removes_or_would_remove(clean: Workspace) -> None:
    done = run_resource(clean, "ENT")
    path = run_dir(clean, done.run_id)

    dry = cli(clean, "--dry-run", EXCHANGE_RETENTION="0h")

    assert dry.returncode == 0, dry.stdout
    assert f"would remove run {done.run_id} (ENT, succeeded): {path}" in dry.stdout
    assert "prune (retention 0h): would remove 1 run, " in dry.stdout
    assert path.exists()

    real = cli(clean, EXCHANGE_RETENTION="0h")

    assert real.returncode == 0, real.stdout
    assert f"removed run {done.run_id}" in real.stdout and not path.exists()
    bad = subprocess.run(
        [sys.executable, "-m", "exchange", "prune", "--catalog", str(clean.catalog.path)],
        env={**os.environ, "EXCHANGE_HOME": str(clean.settings.home), "EXCHANGE_RETENTION": "soon"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2
    assert "EXCHANGE_RETENTION: 'soon' is not a retention period" in bad.stderr


# -- only a run's own directory is ever removed ---------------------------------------------


def close_the_ticket(ws: Workspace) -> int:
    with ws.store.session() as s:
        (ticket,) = list_tickets(s, "ENT")
        answer_ticket(s, ticket.id, "will_not_fix", "历史数据")
    with ws.store.session() as s:
        close_ticket(s, ticket.id)
    return ticket.id


def set_staging(ws: Workspace, run_id: str, staging: Path) -> None:
    with ws.store.session() as s:
        run = s.get(Run, run_id)
        assert run is not None
        run.staging_dir = str(staging)


@pytest.mark.parametrize("recorded", ["the runs directory", "the resource's directory"])
def test_a_run_recorded_with_a_directory_above_its_own_has_nothing_removed(
    clean: Workspace, recorded: str
) -> None:
    done = run_resource(clean, "ENT")
    own = run_dir(clean, done.run_id)
    runs = clean.settings.runs_dir
    set_staging(clean, done.run_id, runs if recorded == "the runs directory" else runs / "ENT")

    report = prune(clean, utcnow() + 8 * DAY)

    assert report.pruned is not None and report.pruned.runs == []
    assert f"is not run {done.run_id}'s own directory {own}" in report.pruned.skipped[done.run_id]
    assert (own / "plan.json").exists()
    with clean.store.session() as s:
        assert s.get(RunPrune, done.run_id) is None


@pytest.mark.parametrize("recorded", ["the runs directory", "the resource's directory"])
def test_abandoning_a_run_recorded_with_a_directory_above_its_own_removes_nothing(
    clean: Workspace, recorded: str, caplog: pytest.LogCaptureFixture
) -> None:
    done = run_resource(clean, "ENT")
    own = run_dir(clean, done.run_id)
    set_status(clean, done.run_id, "failed", closed=False)
    runs = clean.settings.runs_dir
    set_staging(clean, done.run_id, runs if recorded == "the runs directory" else runs / "ENT")

    with caplog.at_level(logging.WARNING):
        abandon_run(clean, done.run_id, "--restart")

    assert (own / "plan.json").exists()
    assert f"is not run {done.run_id}'s own directory {own}; left alone" in caplog.text


def test_a_symbolic_link_or_a_path_with_dot_dot_is_not_a_runs_own_directory(
    tmp_path: Path,
) -> None:
    runs = tmp_path / "runs"
    (runs / "ENT" / "r2").mkdir(parents=True)
    (runs / "ENT" / "r1").symlink_to(runs / "ENT" / "r2")

    assert not_a_run_dir(runs / "ENT" / "r2", runs, "ENT", "r2") is None
    assert "symbolic link" in str(not_a_run_dir(runs / "ENT" / "r1", runs, "ENT", "r1"))
    assert "not a directory name" in str(not_a_run_dir(runs / "ENT", runs, "ENT", ".."))
    removal = remove_run_dir(runs / "ENT" / "r1", runs, "ENT", "r1")
    assert not removal.done and (runs / "ENT" / "r2").is_dir()


# -- what could not be removed is said, and tried again ---------------------------------------


def test_a_directory_that_cannot_be_removed_is_reported_and_not_recorded_as_pruned(
    clean: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = run_resource(clean, "ENT")
    path = run_dir(clean, done.run_id)

    def stubborn(target: str | Path, onerror: Callable[..., None]) -> None:
        denied = PermissionError(13, "Permission denied")
        onerror(os.unlink, str(Path(target) / "plan.json"), (PermissionError, denied, None))

    with monkeypatch.context() as patch:
        patch.setattr(rundir.shutil, "rmtree", stubborn)
        report = prune(clean, utcnow() + 8 * DAY)

    assert report.pruned is not None and report.pruned.runs == []
    assert report.pruned.failed[done.run_id] == (
        f"could not remove {path / 'plan.json'}: [Errno 13] Permission denied"
    )
    assert done.run_id in report.pruned.skipped  # what `exchange prune` prints
    with clean.store.session() as s:
        assert s.get(RunPrune, done.run_id) is None
        assert not s.execute(sa.select(AuditEvent).where(AuditEvent.kind == "run.pruned")).all()

    again = prune(clean, utcnow() + 8 * DAY)  # the next prune tries again

    assert again.pruned is not None and [r.run_id for r in again.pruned.runs] == [done.run_id]
    assert not path.exists()


def test_an_unreadable_quarantine_file_is_named_and_stops_neither_the_close_nor_the_prune(
    ws: Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    done = run_resource(ws, "ENT")
    path = run_dir(ws, done.run_id)
    quarantine = path / "quarantine" / "data.parquet"
    quarantine.write_bytes(b"not parquet")

    with caplog.at_level(logging.WARNING):
        close_the_ticket(ws)  # reading the file fails: logged, the close stands

    assert str(quarantine) in caplog.text
    with ws.store.session() as s:
        assert [t.status for t in list_tickets(s, "ENT")] == ["closed"]

    report = prune(ws, utcnow() + 8 * DAY)

    assert report.problems[done.run_id].startswith(f"{quarantine}: ")
    assert report.pruned is not None and report.pruned.failed[done.run_id].startswith(
        str(quarantine)
    )
    assert [r.run_id for r in report.pruned.runs] == [done.run_id]  # the rest went on
    assert not path.exists()


def test_a_quarantine_file_that_cannot_be_rewritten_after_a_close_is_logged_not_raised(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    done = run_resource(ws, "ENT")
    path = run_dir(ws, done.run_id)

    def full_disk(target: Path) -> bool:
        raise OSError(28, "No space left on device", str(target))

    monkeypatch.setattr(retention, "scrub", full_disk)
    with caplog.at_level(logging.WARNING):
        close_the_ticket(ws)

    with ws.store.session() as s:
        assert [t.status for t in list_tickets(s, "ENT")] == ["closed"]
    assert "No space left on device" in caplog.text and str(path / "quarantine") in caplog.text
    assert has_raw(path)  # as it was: the next prune tries again
    monkeypatch.undo()
    assert prune(ws).scrubbed == [done.run_id] and not has_raw(path)


# -- the rows under review, and nothing more, outlive the run -------------------------------


def test_closing_a_ticket_removes_the_finished_runs_row_copies_with_the_raw_rows(
    ws: Workspace,
) -> None:
    done = run_resource(ws, "ENT")
    path = run_dir(ws, done.run_id)
    assert (path / "extract" / "data.parquet").exists() and (path / "valid").exists()

    close_the_ticket(ws)

    assert not has_raw(path)
    assert not (path / "extract").exists() and not (path / "valid").exists()
    assert (path / "plan.json").exists() and (path / "quarantine" / "data.parquet").exists()


def test_a_run_under_review_keeps_its_quarantine_file_past_the_retention_period(
    ws: Workspace,
) -> None:
    done = run_resource(ws, "ENT")
    path = run_dir(ws, done.run_id)
    with ws.store.session() as s:
        (ticket,) = list_tickets(s, "ENT")

    report = prune(ws, utcnow() + 8 * DAY)

    assert report.pruned is not None and report.pruned.runs == []
    assert report.pruned.skipped[done.run_id] == (
        f"quarantine/ kept: ticket {ticket.id} that lists this run is not closed"
    )
    assert has_raw(path) and sorted(p.name for p in path.iterdir()) == ["quarantine"]
    with ws.store.session() as s:
        assert s.get(RunPrune, done.run_id) is None

    close_the_ticket(ws)
    later = prune(ws, utcnow() + 8 * DAY)

    assert later.pruned is not None and [r.run_id for r in later.pruned.runs] == [done.run_id]
    assert not path.exists()


# -- no noise -----------------------------------------------------------------------------


def test_an_abandoned_run_whose_directory_went_with_it_is_not_recorded_as_pruned(
    clean: Workspace,
) -> None:
    done = run_resource(clean, "ENT")
    path = run_dir(clean, done.run_id)
    set_status(clean, done.run_id, "failed", closed=False)
    abandon_run(clean, done.run_id, "--restart")
    assert not path.exists()

    report = prune(clean, utcnow() + 8 * DAY)

    assert report.pruned is not None and report.pruned.runs == [] and report.pruned.skipped == {}
    with clean.store.session() as s:
        assert s.get(RunPrune, done.run_id) is None
        assert not s.execute(sa.select(AuditEvent).where(AuditEvent.kind == "run.pruned")).all()


def test_the_housekeeping_prune_counts_what_it_leaves_alone_and_logs_it_at_debug_level(
    clean: Workspace,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    done = run_resource(clean, "ENT")
    set_staging(clean, done.run_id, tmp_path / "elsewhere")
    monkeypatch.setenv("EXCHANGE_HOME", str(clean.settings.home))
    monkeypatch.setenv("EXCHANGE_DB_URL", clean.settings.db_url)
    monkeypatch.setenv("EXCHANGE_RETENTION", "0h")  # allowed: prune as soon as finished
    assert clean.catalog.path is not None

    with caplog.at_level(logging.INFO):
        result = prune_step(clean.catalog.path, dt.datetime.now(dt.UTC) + DAY)

    assert result["skipped"] == 1 and result["pruned"] == [] and result["failed"] == {}
    assert "elsewhere" not in caplog.text  # every 15 minutes: not at info level or above
