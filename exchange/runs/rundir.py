"""A run is a directory: each step writes its output there, then a done-file, atomically.

    runs/<resource>/<run id>/plan.json
    runs/<resource>/<run id>/extract/data.parquet   + extract.done.json
    runs/<resource>/<run id>/valid/data.parquet     + validate.done.json
    runs/<resource>/<run id>/quarantine/data.parquet

A step whose done-file exists is complete and is skipped on resume; one without it is redone
from scratch. Later steps read only what earlier steps wrote here.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


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
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, ensure_ascii=False, indent=1, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def mark_done(self, step: str, doc: dict[str, Any]) -> None:
        self.write_json(self.done_file(step), doc)

    def reset(self, *names: str) -> None:
        """Discard a half-written step's output before redoing it."""
        for name in names:
            shutil.rmtree(self.path / name, ignore_errors=True)

    def plan(self) -> dict[str, Any]:
        return json.loads((self.path / "plan.json").read_text(encoding="utf-8"))

    def writer(self, name: str, schema: pa.Schema) -> pq.ParquetWriter:
        target = self.part(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        # lz4 without dictionaries: the fastest to write and read back here (bench/README).
        return pq.ParquetWriter(target, schema, compression="lz4", use_dictionary=False)

    def batches(
        self, name: str, columns: list[str] | None = None, batch_size: int = 50_000
    ) -> Iterator[pa.RecordBatch]:
        """Stream a step's output back, a batch at a time."""
        path = self.part(name)
        if not path.exists():
            return
        # One row group at a time, no read-ahead: memory stays bounded by the batch size.
        with pq.ParquetFile(path, pre_buffer=False) as pf:
            yield from pf.iter_batches(batch_size=batch_size, columns=columns, use_threads=False)
