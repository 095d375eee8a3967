"""A failed file run gets moving again without `--restart`: a bad file deleted at the source is
dropped from the run, a file fixed keeping its size and mtime is pulled again, an empty CSV is
named, and every parse error says how to go on. A damaged staged file is redone from the source
instead of failing every run. `--full` reconciles a mirrored tabular resource (and says so when
it does not). The run table shows what happened: no file counts as rows, the failed step, the
original error of an abandoned run, no empty line before a result."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from exchange import orchestration as orch
from exchange.files import pull as file_pull
from exchange.flow import run_resource
from exchange.kernel.errors import BadInput, DataError, RunFailed
from exchange.status import recent_runs
from exchange.store.models import Run
from exchange.workflow.grants import add_subscription
from exchange.workspace import Workspace
from tests.conftest import catalog_yaml
from tests.test_run_lifecycle import runs, table_ws, target_ids, write_source  # noqa: F401

CODE = "F2"
FAR = dt.date.today() + dt.timedelta(days=300)
MTIME = 1_790_000_000


def file_resource(mirror: bool = False) -> str:
    return f"""\
- code: {CODE}
  name: 代码表（表格文件）
  kind: file
  provider: gaj_files
  share: unconditional
  files: {{path: out, pattern: '*.csv', format: csv, mirror: {str(mirror).lower()}}}
  primary_key: [code]
  fields:
    - {{name: code, type: integer, nullable: false}}
    - {{name: label, type: varchar, length: 20}}
"""


def make_file_ws(
    make_workspace: Callable[[str], Workspace],
    tmp: Path,
    mirror: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> Workspace:
    """Resource F2 from local node gaj_files to table codes of tax_fe (the Airflow steps open
    the same store)."""
    (tmp / "gaj/out").mkdir(parents=True, exist_ok=True)
    nodes = {"gaj_files": ("local", "{path: gaj}"), "tax_fe": ("sqlite", "{path: tax.db}")}
    ws = make_workspace(catalog_yaml(nodes, file_resource(mirror)))
    monkeypatch.setenv("EXCHANGE_HOME", str(ws.settings.home))
    monkeypatch.setenv("EXCHANGE_DB_URL", ws.settings.db_url)
    add_subscription(ws, CODE, "tax_fe", ["code", "label"], FAR, target_table="codes")
    return ws


@pytest.fixture
def files_ws(
    tmp_path: Path, make_workspace: Callable[[str], Workspace], monkeypatch: pytest.MonkeyPatch
) -> Workspace:
    return make_file_ws(make_workspace, tmp_path, False, monkeypatch)


@pytest.fixture
def mirrored_ws(
    tmp_path: Path, make_workspace: Callable[[str], Workspace], monkeypatch: pytest.MonkeyPatch
) -> Workspace:
    return make_file_ws(make_workspace, tmp_path, True, monkeypatch)


def put(tmp: Path, name: str, text: str, mtime: int = MTIME) -> Path:
    path = tmp / "gaj/out" / name
    path.write_bytes(text.encode())
    os.utime(path, (mtime, mtime))
    return path


def codes(tmp: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(tmp / "tax.db") as db:
        return list(db.execute("SELECT code, label FROM codes ORDER BY code"))


def only_run(ws: Workspace) -> Run:
    with ws.store.session() as s:
        (run,) = s.execute(sa.select(Run)).scalars()
        s.expunge(run)
        return run


# --- a failed file run is not stuck ---------------------------------------------------------


def test_a_bad_file_deleted_at_the_source_is_dropped_from_the_failed_run_which_then_succeeds(
    tmp_path: Path, files_ws: Workspace
) -> None:
    put(tmp_path, "g.csv", "code,label\n10,ok\n")
    bad = put(tmp_path, "h.csv", "kode,label\n20,x\n")
    with pytest.raises(BadInput, match=r"file h.csv: no column for field 'code'") as err:
        run_resource(files_ws, CODE)
    assert f"`exchange run {CODE} --restart`" in str(err.value)  # says how to go on
    assert "fix the file at the source and run again" in str(err.value)
    failed = only_run(files_ws).id

    bad.unlink()  # the provider withdraws the bad file
    summary = run_resource(files_ws, CODE)

    assert (summary.run_id, summary.status) == (failed, "succeeded")
    assert any(
        "dropped 1 file(s) gone from the source" in n and "h.csv" in n for n in summary.notes
    )
    assert codes(tmp_path) == [(10, "ok")]


def test_a_file_fixed_keeping_its_size_and_mtime_is_pulled_again_after_a_failed_parse(
    tmp_path: Path, files_ws: Workspace
) -> None:
    put(tmp_path, "k.csv", "code,label\n4x,bad\n")
    with pytest.raises(DataError, match=r"file k.csv line 2: field 'code' value '4x'"):
        run_resource(files_ws, CODE)

    put(tmp_path, "k.csv", "code,label\n40,bad\n")  # fixed in place, like `cp -p`/`rsync -t`
    summary = run_resource(files_ws, CODE)

    assert summary.status == "succeeded", summary.failures
    assert any("re-pulling 1 file(s) whose parse" in n and "k.csv" in n for n in summary.notes)
    assert codes(tmp_path) == [(40, "bad")]


@pytest.mark.parametrize("content", ["", "\n", "\r\n  \r\n"], ids=["zero-bytes", "nl", "blank"])
def test_an_empty_csv_is_named_as_empty_not_listed_with_no_columns(
    content: str, tmp_path: Path, files_ws: Workspace
) -> None:
    put(tmp_path, "a.csv", "code,label\n1,one\n")
    put(tmp_path, "empty.csv", content)
    with pytest.raises(BadInput, match=r"file empty.csv is empty: no header row; fix") as err:
        run_resource(files_ws, CODE)
    assert "its columns are" not in str(err.value) and "--restart" in str(err.value)
    assert codes_table_missing(tmp_path)

    (tmp_path / "gaj/out/empty.csv").unlink()
    assert run_resource(files_ws, CODE).status == "succeeded"
    assert codes(tmp_path) == [(1, "one")]


def codes_table_missing(tmp: Path) -> bool:
    """Nothing was delivered: the subscriber's table was never created."""
    if not (tmp / "tax.db").exists():
        return True
    with sqlite3.connect(tmp / "tax.db") as db:
        return not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'codes'").fetchall()


def test_a_csv_line_with_too_few_cells_is_an_error_naming_the_file_not_a_traceback(
    tmp_path: Path, files_ws: Workspace
) -> None:
    put(tmp_path, "w.csv", "code,label\n1,one\n2\n")
    with pytest.raises(DataError, match=r"file w.csv line 3: not a readable CSV file: Expected 2"):
        run_resource(files_ws, CODE)


def test_a_csv_line_with_too_many_cells_is_named_by_its_line_and_hides_its_content(
    tmp_path: Path, files_ws: Workspace
) -> None:
    rows = "".join(f"{i},r{i}\n" for i in range(1, 600))
    put(tmp_path, "c.csv", "code,label\n" + rows + "600,x,410402197113072725\n")
    with pytest.raises(DataError, match=r"file c.csv line 601: not a readable CSV") as err:
        run_resource(files_ws, CODE)
    assert "410402197113072725" not in str(err.value)


def test_a_file_not_in_its_declared_encoding_says_so(
    tmp_path: Path, make_workspace: Callable[[str], Workspace], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "gaj/out").mkdir(parents=True)
    nodes = {"gaj_files": ("local", "{path: gaj}"), "tax_fe": ("sqlite", "{path: tax.db}")}
    resource = file_resource().replace("format: csv,", "format: csv, encoding: utf-8,")
    ws = make_workspace(catalog_yaml(nodes, resource))
    add_subscription(ws, CODE, "tax_fe", ["code", "label"], FAR, target_table="codes")
    (tmp_path / "gaj/out/g.csv").write_bytes("code,label\n1,户籍\n".encode("gbk"))
    with pytest.raises(DataError, match=r"not in the declared encoding utf-8") as err:
        run_resource(ws, CODE)
    assert "declare files.encoding" not in str(err.value)


# --- a damaged staged file ------------------------------------------------------------------


def staged_extract(ws: Workspace, run_id: str) -> Path:
    return ws.settings.runs_dir / "R1" / run_id / "extract" / "data.parquet"


def test_a_damaged_staged_extract_is_extracted_again_by_the_next_run(
    tmp_path: Path,
    table_ws: Workspace,  # noqa: F811
) -> None:
    cat = str(tmp_path / "catalog.yaml")
    write_source(tmp_path / "src.db", range(1, 31))
    run_id = orch.plan_step(cat, "R1")["run_id"]
    orch.extract_step(cat, run_id)  # then the process dies (crash at extract:done)
    staged_extract(table_ws, run_id).write_text("garbage\n")

    summary = run_resource(table_ws, "R1")

    assert (summary.run_id, summary.status) == (run_id, "succeeded")
    assert any("extract/data.parquet was unusable" in n for n in summary.notes), summary.notes
    assert target_ids(tmp_path / "a.db") == list(range(1, 31))


def test_a_staged_extract_damaged_between_two_steps_fails_the_step_naming_file_and_run(
    tmp_path: Path,
    table_ws: Workspace,  # noqa: F811
) -> None:
    cat = str(tmp_path / "catalog.yaml")
    write_source(tmp_path / "src.db", range(1, 31))
    run_id = orch.plan_step(cat, "R1")["run_id"]
    orch.extract_step(cat, run_id)
    staged_extract(table_ws, run_id).write_text("garbage\n")

    with pytest.raises(RunFailed, match=rf"run {run_id}: staged file .*extract/data.parquet is"):
        orch.validate_step(cat, run_id)
    (shown, *_) = recent_runs(table_ws, "R1")
    assert (shown.id, shown.status, shown.step) == (run_id, "failed", "validate (failed)")
    assert shown.error is not None and "Traceback" not in shown.error

    summary = run_resource(table_ws, "R1")  # redoes the extract from the source
    assert (summary.run_id, summary.status) == (run_id, "succeeded")
    assert target_ids(tmp_path / "a.db") == list(range(1, 31))


def test_a_damaged_staged_extract_of_a_file_run_is_parsed_again_by_the_next_run(
    tmp_path: Path, files_ws: Workspace
) -> None:
    put(tmp_path, "a.csv", "code,label\n1,one\n2,two\n")
    cat = str(tmp_path / "catalog.yaml")
    run_id = orch.plan_step(cat, CODE)["run_id"]
    orch.extract_step(cat, run_id)
    (files_ws.settings.runs_dir / CODE / run_id / "extract/data.parquet").write_bytes(b"PAR1")

    summary = run_resource(files_ws, CODE)

    assert (summary.run_id, summary.status) == (run_id, "succeeded")
    assert any("was unusable" in n for n in summary.notes), summary.notes
    assert codes(tmp_path) == [(1, "one"), (2, "two")]


def test_a_staged_file_damaged_after_a_delivery_fails_the_run_instead_of_redoing_its_step(
    tmp_path: Path,
    table_ws: Workspace,  # noqa: F811
) -> None:
    # The run delivered its extract to subscriber a, then crashed; the source changed since.
    cat = str(tmp_path / "catalog.yaml")
    write_source(tmp_path / "src.db", range(1, 31))
    run_id = orch.plan_step(cat, "R1")["run_id"]
    orch.extract_step(cat, run_id)
    orch.validate_step(cat, run_id)
    (sid,) = orch.subscribers_step(cat, run_id)
    orch.load_step(cat, run_id, sid)
    write_source(tmp_path / "src.db", range(1, 41))
    staged_extract(table_ws, run_id).write_text("garbage\n")

    with pytest.raises(DataError, match=r"extract/data.parquet is unusable") as err:
        run_resource(table_ws, "R1")
    assert f"run {run_id}" in str(err.value) and "`exchange run R1 --restart`" in str(err.value)
    assert [(i, status) for i, status, _ in runs(table_ws) if i == run_id] == [(run_id, "failed")]
    assert target_ids(tmp_path / "a.db") == list(range(1, 31))  # nothing redone behind it

    summary = run_resource(table_ws, "R1", restart=True)
    assert summary.status == "succeeded" and summary.run_id != run_id
    assert target_ids(tmp_path / "a.db") == list(range(1, 41))


# --- --full on a tabular file resource ------------------------------------------------------


def test_full_on_a_mirrored_tabular_resource_deletes_the_rows_of_a_deleted_file(
    tmp_path: Path, mirrored_ws: Workspace
) -> None:
    put(tmp_path, "j.csv", "code,label\n30,j\n")
    k = put(tmp_path, "k.csv", "code,label\n40,k\n")
    assert run_resource(mirrored_ws, CODE).status == "succeeded"
    k.unlink()

    assert run_resource(mirrored_ws, CODE).status == "succeeded"
    assert codes(tmp_path) == [(30, "j"), (40, "k")]  # an incremental run deletes no rows
    assert run_resource(mirrored_ws, CODE, full=True).status == "succeeded"
    assert codes(tmp_path) == [(30, "j")]


def test_full_on_a_tabular_resource_that_is_not_mirrored_keeps_the_rows_and_says_so(
    tmp_path: Path, files_ws: Workspace
) -> None:
    put(tmp_path, "j.csv", "code,label\n30,j\n")
    k = put(tmp_path, "k.csv", "code,label\n40,k\n")
    assert run_resource(files_ws, CODE).status == "succeeded"
    k.unlink()

    summary = run_resource(files_ws, CODE, full=True)

    assert summary.status == "succeeded"
    assert any("is not mirrored (files.mirror: false)" in n for n in summary.notes)
    assert codes(tmp_path) == [(30, "j"), (40, "k")]


def test_full_deletes_nothing_while_a_file_waits_for_its_completion_marker(
    tmp_path: Path, make_workspace: Callable[[str], Workspace]
) -> None:
    (tmp_path / "gaj/out").mkdir(parents=True)
    nodes = {"gaj_files": ("local", "{path: gaj}"), "tax_fe": ("sqlite", "{path: tax.db}")}
    text = file_resource(mirror=True).replace("mirror: true", "mirror: true, marker: ok")
    ws = make_workspace(catalog_yaml(nodes, text))
    add_subscription(ws, CODE, "tax_fe", ["code", "label"], FAR, target_table="codes")
    put(tmp_path, "j.csv", "code,label\n30,j\n")
    put(tmp_path, "j.csv.ok", "")
    put(tmp_path, "k.csv", "code,label\n40,k\n")
    put(tmp_path, "k.csv.ok", "")
    assert run_resource(ws, CODE).status == "succeeded"
    (tmp_path / "gaj/out/k.csv.ok").unlink()  # k.csv is being rewritten

    summary = run_resource(ws, CODE, full=True)

    assert any("deleted nothing" in n and "k.csv" in n for n in summary.notes), summary.notes
    assert codes(tmp_path) == [(30, "j"), (40, "k")]


# --- what the run table shows ---------------------------------------------------------------


def test_a_failed_file_run_shows_no_rows_and_its_failed_step_and_abandoning_keeps_the_error(
    tmp_path: Path, files_ws: Workspace
) -> None:
    put(tmp_path, "h.csv", "kode,label\n20,x\n")
    with pytest.raises(BadInput):
        run_resource(files_ws, CODE)
    (shown,) = recent_runs(files_ws, CODE)
    assert shown.step == "extract (failed)"
    assert (shown.rows_extracted, shown.rows_valid, shown.rows_quarantined) == (None, None, None)

    (tmp_path / "gaj/out/h.csv").unlink()
    run_resource(files_ws, CODE, restart=True)

    (_, old) = recent_runs(files_ws, CODE)
    assert old.status == "abandoned" and old.step == "extract (failed)"
    assert old.error is not None and old.error.startswith("extract failed: resource F2 file h.csv")
    assert old.error.endswith("; abandoned: --restart")


def exchange(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EXCHANGE_HOME": str(tmp), "COLUMNS": "300"}
    env.pop("EXCHANGE_DB_URL", None)
    cmd = [sys.executable, "-m", "exchange", *args, "--catalog", str(tmp / "catalog.yaml")]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_run_prints_no_empty_line_before_its_result_or_its_error(
    tmp_path: Path, files_ws: Workspace
) -> None:
    put(tmp_path, "a.csv", "code,label\n1,one\n")
    done = exchange(tmp_path, "run", CODE)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() and not done.stdout.startswith("\n"), repr(done.stdout[:80])

    put(tmp_path, "b.csv", "kode,label\n2,two\n")
    failed = exchange(tmp_path, "run", CODE)
    assert failed.returncode == 2
    assert failed.stdout == "" and failed.stderr.startswith("error: resource F2 file b.csv")


def test_run_help_does_not_promise_to_reconcile_file_resources(tmp_path: Path) -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "exchange", "run", "--help"],
        env={**os.environ, "COLUMNS": "300"},
        capture_output=True,
        text=True,
    )
    assert "only with files.mirror" in shown.stdout


# --- private from the first write -----------------------------------------------------------


def test_an_existing_runs_directory_is_made_private_by_the_next_run(
    tmp_path: Path, files_ws: Workspace
) -> None:
    runs_dir = files_ws.settings.runs_dir
    (runs_dir / CODE).mkdir(parents=True)
    os.chmod(runs_dir, 0o755)
    os.chmod(runs_dir / CODE, 0o755)
    put(tmp_path, "a.csv", "code,label\n1,one\n")

    run_resource(files_ws, CODE)

    assert stat.S_IMODE(runs_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((runs_dir / CODE).stat().st_mode) == 0o700


def test_the_pull_progress_file_is_private_while_the_pull_goes_on(
    tmp_path: Path, files_ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    put(tmp_path, "a.csv", "code,label\n1,one\n")
    seen: list[int] = []

    def look(point: str) -> None:  # after the first file, before the step seals everything
        (progress,) = files_ws.settings.runs_dir.glob(f"{CODE}/*/pull.progress.jsonl")
        seen.append(stat.S_IMODE(progress.stat().st_mode))

    monkeypatch.setattr(file_pull, "crashpoint", look)
    old = os.umask(0o022)
    try:
        run_resource(files_ws, CODE)
    finally:
        os.umask(old)
    assert seen and seen[0] == 0o600


# --- what a failed run pulls again ----------------------------------------------------------


def test_only_the_file_whose_parse_failed_is_pulled_again(
    tmp_path: Path, files_ws: Workspace
) -> None:
    put(tmp_path, "g.csv", "code,label\n10,ok\n")
    put(tmp_path, "k.csv", "code,label\n4x,bad\n")
    with pytest.raises(DataError, match=r"file k.csv line 2"):
        run_resource(files_ws, CODE)

    put(tmp_path, "k.csv", "code,label\n40,bad\n")  # fixed keeping its size and mtime
    summary = run_resource(files_ws, CODE)

    assert summary.status == "succeeded", summary.failures
    (note,) = [n for n in summary.notes if "re-pulling" in n]
    assert "re-pulling 1 file(s) whose parse failed" in note and note.endswith(": k.csv")
    assert codes(tmp_path) == [(10, "ok"), (40, "bad")]


def test_a_run_failed_by_a_store_outage_while_parsing_pulls_nothing_again(
    tmp_path: Path, files_ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    put(tmp_path, "g.csv", "code,label\n10,ok\n")

    def outage(*args: object, **kwargs: object) -> None:
        raise sa.exc.OperationalError("UPDATE runs", {}, Exception("server closed the connection"))

    with monkeypatch.context() as m:
        m.setattr("exchange.files.tabular.set_step", outage)
        with pytest.raises(sa.exc.OperationalError):
            run_resource(files_ws, CODE)
    summary = run_resource(files_ws, CODE)

    assert summary.status == "succeeded", summary.failures
    assert not [n for n in summary.notes if "re-pulling" in n], summary.notes
    assert codes(tmp_path) == [(10, "ok")]


def test_a_file_changed_after_a_delivery_is_left_to_the_next_run_so_every_subscriber_agrees(
    tmp_path: Path, files_ws: Workspace
) -> None:
    # Subscriber codes got g.csv from this run; then the provider changed g.csv and the run
    # died. Re-pulling it now would give codes2 another version than codes within one run.
    add_subscription(files_ws, CODE, "tax_fe", ["code", "label"], FAR, target_table="codes2")
    cat = str(tmp_path / "catalog.yaml")
    put(tmp_path, "g.csv", "code,label\n10,old\n")
    run_id = orch.plan_step(cat, CODE)["run_id"]
    orch.extract_step(cat, run_id)
    orch.validate_step(cat, run_id)
    first, _ = orch.subscribers_step(cat, run_id)
    orch.load_step(cat, run_id, first)
    put(tmp_path, "g.csv", "code,label\n10,newer\n", mtime=MTIME + 60)

    resumed = run_resource(files_ws, CODE)

    assert (resumed.run_id, resumed.status) == (run_id, "succeeded")
    with sqlite3.connect(tmp_path / "tax.db") as db:
        assert list(db.execute("SELECT label FROM codes2")) == [("old",)]  # as codes got it
    run_resource(files_ws, CODE)  # the next run takes up the change, for both
    with sqlite3.connect(tmp_path / "tax.db") as db:
        assert list(db.execute("SELECT label FROM codes UNION ALL SELECT label FROM codes2")) == [
            ("newer",),
            ("newer",),
        ]
