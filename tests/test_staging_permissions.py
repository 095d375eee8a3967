"""A run directory holds cleartext: it and everything in it is private to the engine's user
(directories 0700, files 0600, the quarantine file too), whatever the umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pytest
import sqlalchemy as sa

from connectors.files.local import LocalTransport
from connectors.files.transfer import Session, download
from exchange.flow import run_resource
from exchange.quality.retention import prune
from exchange.runs.handle import RunHandle
from exchange.runs.rundir import RunDir, tighten_runs_dir
from exchange.tables import validate
from exchange.workflow.grants import add_subscription
from exchange.workspace import Workspace
from tests.conftest import catalog_yaml
from tests.sources import create_source, registry
from tests.test_quality_flow import FAR, GRANT_A, SQLITE_NODES, damage, resource_yaml


@pytest.fixture(params=[0o000, 0o022], ids=["umask-000", "umask-022"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def modes(root: Path) -> dict[str, int]:
    """``{relative path: permission bits}`` of ``root`` and everything under it."""
    out = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        out[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return out


def test_a_runs_directories_are_0700_and_its_files_0600_whatever_the_umask(
    umask: int, tmp_path: Path, make_workspace: Callable[[str], Workspace]
) -> None:
    rows, why = damage(registry(range(1, 201)))
    create_source(f"sqlite:///{tmp_path / 'src.db'}", rows)
    ws = make_workspace(catalog_yaml(SQLITE_NODES, resource_yaml()))
    add_subscription(ws, "ENT", "a", GRANT_A, FAR, target_table="ent")

    summary = run_resource(ws, "ENT")

    assert summary.quarantined == len(why)
    rd = RunHandle.open(ws, summary.run_id).dir
    found = modes(rd.path)
    assert "quarantine/data.parquet" in found and "extract/data.parquet" in found
    assert {p: m for p, m in found.items() if (rd.path / p).is_dir()} == {
        p: 0o700 for p in found if (rd.path / p).is_dir()
    }
    assert {p: m for p, m in found.items() if not (rd.path / p).is_dir()} == {
        p: 0o600 for p in found if not (rd.path / p).is_dir()
    }
    for parent in (rd.path.parent, ws.settings.runs_dir):  # created for it: private too
        assert stat.S_IMODE(parent.stat().st_mode) == 0o700


def test_what_other_code_puts_in_a_run_directory_is_sealed_when_its_step_is_done(
    umask: int, tmp_path: Path
) -> None:
    rd = RunDir(tmp_path / "runs" / "ENT" / "r1")
    rd.write_json(rd.path / "plan.json", {"run_id": "r1"})
    downloaded = rd.path / "files" / "sub" / "a.csv"
    downloaded.parent.mkdir(parents=True)
    downloaded.write_text("身份证号\n110101199003070011\n", encoding="utf-8")
    with rd.writer("extract", pa.schema([("id", pa.int64())])) as w:
        w.write_batch(pa.record_batch([pa.array([1])], names=["id"]))

    rd.mark_done("pull", {"pulled": 1})

    assert set(modes(rd.path).values()) <= {0o700, 0o600}
    assert stat.S_IMODE(downloaded.stat().st_mode) == 0o600
    assert stat.S_IMODE(downloaded.parent.stat().st_mode) == 0o700


# -- files other code creates are private from their creation, not from the next seal ----------


def test_a_downloaded_file_is_0600_and_its_directories_0700_from_their_creation(
    umask: int, tmp_path: Path
) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.csv").write_text("身份证号\n110101199003070011\n", encoding="utf-8")
    sess = Session(lambda: LocalTransport("ftp_src", tmp_path / "src"))
    run = tmp_path / "runs" / "ENT" / "r1"
    run.mkdir(parents=True, mode=0o700)
    dst = run / "files" / "sub" / "a.csv"

    download(sess, "a.csv", dst)

    assert stat.S_IMODE(dst.stat().st_mode) == 0o600
    assert stat.S_IMODE(dst.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(dst.parent.parent.stat().st_mode) == 0o700


def test_valid_rows_copied_from_the_extract_are_0600_from_their_creation(
    umask: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rd = RunDir(tmp_path / "runs" / "ENT" / "r1")
    with rd.writer("extract", pa.schema([("id", pa.int64())])) as w:
        w.write_batch(pa.record_batch([pa.array([1])], names=["id"]))

    def no_links(*_: object) -> None:
        raise OSError("hard links not supported here")

    monkeypatch.setattr(os, "link", no_links)  # another file system: a copy, not a link
    validate._same_file(rd.part("extract"), rd.part("valid"))

    assert stat.S_IMODE(rd.part("valid").stat().st_mode) == 0o600
    assert stat.S_IMODE(rd.part("valid").parent.stat().st_mode) == 0o700
    assert rd.part("valid").read_bytes() == rd.part("extract").read_bytes()


def test_a_text_file_a_step_writes_in_its_run_directory_is_0600(umask: int, tmp_path: Path) -> None:
    rd = RunDir(tmp_path / "r1")
    rd.write_json(rd.path / "plan.json", {})

    rd.write_text(rd.path / "progress.tmp", '{"path": "a.csv"}\n')  # a pull's progress file

    assert stat.S_IMODE((rd.path / "progress.tmp").stat().st_mode) == 0o600


def test_sealing_leaves_what_a_symbolic_link_points_to_as_it_is(tmp_path: Path) -> None:
    outside = tmp_path / "shared"
    outside.mkdir(mode=0o755)
    (outside / "readme.txt").write_text("public", encoding="utf-8")
    os.chmod(outside, 0o755)
    os.chmod(outside / "readme.txt", 0o644)
    rd = RunDir(tmp_path / "runs" / "ENT" / "r1")
    rd.write_json(rd.path / "plan.json", {})
    (rd.path / "linked_dir").symlink_to(outside)
    (rd.path / "linked_file").symlink_to(outside / "readme.txt")

    rd.mark_done("pull", {})

    assert stat.S_IMODE(outside.stat().st_mode) == 0o755
    assert stat.S_IMODE((outside / "readme.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE(rd.path.stat().st_mode) == 0o700


def test_an_existing_runs_directory_made_by_an_earlier_version_is_tightened(
    tmp_path: Path,
) -> None:
    runs = tmp_path / "runs"
    (runs / "ENT" / "r1").mkdir(parents=True)
    for d in (runs, runs / "ENT"):
        os.chmod(d, 0o755)
    (tmp_path / "shared").mkdir()
    os.chmod(tmp_path / "shared", 0o755)
    (runs / "linked").symlink_to(tmp_path / "shared")

    tighten_runs_dir(runs)

    assert stat.S_IMODE(runs.stat().st_mode) == 0o700
    assert stat.S_IMODE((runs / "ENT").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "shared").stat().st_mode) == 0o755  # a link's target


def test_a_prune_tightens_the_runs_directory(
    tmp_path: Path, make_workspace: Callable[[str], Workspace]
) -> None:
    create_source(f"sqlite:///{tmp_path / 'src.db'}", registry(range(1, 11)))
    ws = make_workspace(catalog_yaml(SQLITE_NODES, resource_yaml()))
    ws.settings.runs_dir.mkdir()
    os.chmod(ws.settings.runs_dir, 0o755)

    prune(ws)

    assert stat.S_IMODE(ws.settings.runs_dir.stat().st_mode) == 0o700


def test_the_sqlite_metadata_store_and_its_wal_are_0600_whatever_the_umask(
    tmp_path: Path, umask: int
) -> None:
    """The store holds quarantine indexes, digests of codes and the audit log."""
    from exchange.store import Store

    store = Store(f"sqlite:///{tmp_path}/home/exchange.db")
    try:
        with store.session() as s:
            s.execute(sa.text("SELECT 1"))
        found = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "home").iterdir()}
    finally:
        store.close()
    assert found["exchange.db"] == 0o600
    assert set(found.values()) == {0o600}, found  # -wal and -shm as well


def test_sealing_a_run_directory_passes_over_a_file_another_step_renamed_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A split run's ranges finish side by side: one seals the directory while another
    renames its done-file into place, so an entry listed a moment ago may be gone."""
    from exchange.runs import rundir

    run = tmp_path / "run"
    run.mkdir()
    (run / "extract-2.done.json.tmp").write_text("{}")
    (run / "plan.json").write_text("{}")
    real = os.lstat

    def renamed_meanwhile(path: str) -> os.stat_result:
        if str(path).endswith(".tmp"):
            raise FileNotFoundError(path)
        return real(path)

    monkeypatch.setattr(rundir.os, "lstat", renamed_meanwhile)

    rundir.seal(run)

    assert stat.S_IMODE(real(run / "plan.json").st_mode) == 0o600
