"""A run is a directory: each step writes its output there, then a done-file, atomically.

    runs/<resource>/<run id>/plan.json
    runs/<resource>/<run id>/extract/data.parquet   + extract.done.json
    runs/<resource>/<run id>/valid/data.parquet     + validate.done.json
    runs/<resource>/<run id>/quarantine/data.parquet

A step whose done-file exists is complete and is skipped on resume; one without it is redone
from scratch. Later steps read only what earlier steps wrote here.

A run directory holds cleartext (the extract, the valid rows, the quarantined rows), so it is
private to the engine's user whatever the umask: directories 0700, files 0600. What this class
writes is created so; what other code puts in the directory (downloaded files, copies) is
sealed to the same modes when a step is marked done, and the directory itself is 0700 from the
first write, so nobody else can reach a file in between.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exchange.kernel.modes import DIR_MODE, FILE_MODE, private_dirs, private_file

if TYPE_CHECKING:  # pyarrow is imported by the steps that read or write Parquet
    import pyarrow as pa
    import pyarrow.parquet as pq

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "Removal",
    "RunDir",
    "not_a_run_dir",
    "private_dirs",
    "private_file",
    "remove_run_dir",
    "seal",
    "tighten_runs_dir",
]

log = logging.getLogger(__name__)


def seal(path: Path) -> None:
    """Every directory under ``path`` (and it) 0700, every file 0600. A symbolic link is left
    as it is: a chmod through it would change whatever it points to (Linux has no lchmod)."""
    if path.is_symlink() or not path.is_dir():
        return
    os.chmod(path, DIR_MODE)
    for root, dirs, files in os.walk(path):  # never into a linked directory
        for name in dirs + files:
            full = os.path.join(root, name)
            try:
                mode = os.lstat(full).st_mode
                if stat.S_ISDIR(mode):
                    os.chmod(full, DIR_MODE)
                elif stat.S_ISREG(mode):
                    os.chmod(full, FILE_MODE)
            except FileNotFoundError:
                # Steps of one run may write side by side (a split run's ranges): a file that
                # another renamed or removed since the listing has nothing left to seal.
                continue


def tighten_runs_dir(runs_dir: Path) -> None:
    """Make an existing runs directory and its resources' directories 0700: an earlier
    version made them with the umask's modes (a run's own files are sealed by its steps)."""
    for d in (runs_dir, *(runs_dir.iterdir() if runs_dir.is_dir() else ())):
        if not d.is_symlink() and d.is_dir() and stat.S_IMODE(d.stat().st_mode) != DIR_MODE:
            os.chmod(d, DIR_MODE)


def not_a_run_dir(path: str | Path, runs_dir: Path, resource: str, run_id: str) -> str | None:
    """Why ``path`` is not run ``run_id``'s own directory, or None when it is: exactly
    ``runs_dir/<resource>/<run_id>`` once resolved, and no symbolic link. Only such a path is
    ever removed: a store row pointing at the runs directory itself, a resource's directory, a
    link or anywhere else would otherwise take what is there with it."""
    where = Path(path)
    for part, what in ((resource, "resource"), (run_id, "run id")):
        if part in ("", ".", "..") or Path(part).name != part:
            return f"{path}: the {what} {part!r} is not a directory name; left alone"
    expected = runs_dir.resolve() / resource / run_id
    if where.is_symlink():
        return f"{path} is a symbolic link, not run {run_id}'s directory; left alone"
    resolved = where.resolve()
    if not resolved.is_relative_to(runs_dir.resolve()):
        return f"{path} is outside the runs directory {runs_dir}; left alone"
    if resolved != expected:
        return f"{path} is not run {run_id}'s own directory {expected}; left alone"
    return None


@dataclass(frozen=True)
class Removal:
    """What removing a run's directory did: ``refused`` (why it was left alone) or the
    ``failures`` ("path: error") of what could not be removed."""

    path: Path
    refused: str | None = None
    failures: tuple[str, ...] = ()

    @property
    def done(self) -> bool:
        """Whether all that was to go is gone."""
        return self.refused is None and not self.failures


def remove_run_dir(
    path: str | Path,
    runs_dir: Path,
    resource: str,
    run_id: str,
    *,
    parts: Collection[str] | None = None,
) -> Removal:
    """Remove run ``run_id``'s directory, or only the entries of it named in ``parts``, only
    if ``path`` is that directory (``not_a_run_dir``). What cannot be removed is collected,
    not ignored; a refusal and failures are logged as warnings."""
    where = Path(path)
    refused = not_a_run_dir(where, runs_dir, resource, run_id)
    if refused is not None:
        log.warning("run %s: %s", run_id, refused)
        return Removal(where, refused=refused)
    failures: list[str] = []

    def failed(
        _: object, name: str, exc_info: tuple[type[BaseException], BaseException, object]
    ) -> None:
        failures.append(f"{name}: {exc_info[1]}")

    targets = [where] if parts is None else [where / name for name in parts]
    for target in targets:
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target, onerror=failed)
        elif target.is_symlink() or target.exists():
            try:
                target.unlink()
            except OSError as exc:
                failures.append(f"{target}: {exc}")
    if failures:
        log.warning("run %s: could not remove %s", run_id, "; ".join(failures))
    return Removal(where, failures=tuple(failures))


class RunDir:
    """Paths and atomic writes inside one run's staging directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def part(self, name: str) -> Path:
        return self.path / name / "data.parquet"

    def done_file(self, step: str) -> Path:
        return self.path / f"{step}.done.json"

    def is_done(self, step: str) -> bool:
        return self.done_file(step).exists()

    def read_done(self, step: str) -> dict[str, Any]:
        return json.loads(self.done_file(step).read_text(encoding="utf-8"))

    def write_json(self, path: Path, doc: dict[str, Any]) -> None:
        """Write-then-rename, so a crash leaves the old file or the new one, never half."""
        private_dirs(path.parent)
        tmp = path.with_suffix(path.suffix + ".tmp")
        with os.fdopen(private_file(tmp), "w", encoding="utf-8") as fh:
            json.dump(doc, fh, ensure_ascii=False, indent=1, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def write_text(self, path: Path, text: str) -> None:
        """Write ``text`` to ``path`` (UTF-8), 0600 from its creation."""
        with os.fdopen(private_file(path), "w", encoding="utf-8") as fh:
            fh.write(text)

    def mark_done(self, step: str, doc: dict[str, Any]) -> None:
        # What the step wrote by other means (downloads, copies) gets the run's modes too.
        seal(self.path)
        self.write_json(self.done_file(step), doc)

    def reset(self, *names: str) -> None:
        """Discard a half-written step's output before redoing it."""
        for name in names:
            shutil.rmtree(self.path / name, ignore_errors=True)

    def plan(self) -> dict[str, Any]:
        return json.loads((self.path / "plan.json").read_text(encoding="utf-8"))

    def writer(self, name: str, schema: pa.Schema) -> pq.ParquetWriter:
        import pyarrow.parquet as pq

        target = self.part(name)
        private_dirs(target.parent)
        os.close(private_file(target))  # Arrow then truncates it and keeps its mode
        # lz4 without dictionaries: the fastest to write and read back here (docs/performance.md).
        return pq.ParquetWriter(target, schema, compression="lz4", use_dictionary=False)

    def batches(
        self, name: str, columns: list[str] | None = None, batch_size: int = 50_000
    ) -> Iterator[pa.RecordBatch]:
        """Stream a step's output back, a batch at a time."""
        import pyarrow.parquet as pq

        path = self.part(name)
        if not path.exists():
            return
        # One row group at a time, no read-ahead: memory stays bounded by the batch size.
        with pq.ParquetFile(path, pre_buffer=False) as pf:
            yield from pf.iter_batches(batch_size=batch_size, columns=columns, use_threads=False)
