"""Step 2 for files, pull once: stream each planned file into the run's staging directory.

Each file is hashed (sha256, and md5 when the provider writes ``.md5`` markers) while it
streams, and resumes from its offset after a dropped connection. A file whose size or mtime
changed between the listing and the end of the read is still being written: it is dropped
from this run (the manifest keeps its old version, so the next run takes it up again).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from connectors.files import FileInfo, FileTransport, TransferError
from connectors.files.transfer import Session, download
from exchange.files.models import FileManifest
from exchange.files.nodes import session
from exchange.kernel.faults import crashpoint
from exchange.runs.handle import RunHandle, set_step
from exchange.runs.plan import PlannedFile
from exchange.runs.rundir import RunDir
from exchange.workspace import Workspace

Progress = Callable[[int], None]


@dataclass(frozen=True)
class PullResult:
    pulled: int
    held_back: int
    bytes: int


def staged_path(rd: RunDir, rel: str) -> Path:
    return rd.path / "files" / rel


def _progress_file(rd: RunDir) -> Path:
    return rd.path / "pull.progress.jsonl"


def _already(rd: RunDir) -> dict[str, dict[str, Any]]:
    """Files finished by an earlier attempt of this run (one JSON line each)."""
    path = _progress_file(rd)
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash: that file is pulled again
        out[doc["path"]] = doc
    return out


def _md5_marker(t: FileTransport, path: str) -> str:
    text = t.read_text(path).strip()
    return text.split()[0].lower() if text else ""


def pull_one(sess: Session, f: PlannedFile, local: Path, marker: str | None) -> dict[str, Any]:
    """Pull one planned file; return its outcome (status pulled | changing | md5_mismatch | ...)."""
    src = f.source
    listed = FileInfo(src, f.size, f.mtime)
    out: dict[str, Any] = {"path": f.path}
    before = sess.retry(lambda t: t.stat(src))
    if before is None:
        return {**out, "status": "vanished", "reason": "gone from the node since the listing"}
    if before != listed:
        local.unlink(missing_ok=True)
        return {**out, "status": "changing", "reason": "changed since the listing"}
    copied = download(sess, src, local, md5=marker is not None)
    after = sess.retry(lambda t: t.stat(src))
    if after != before or copied.size != before.size:
        local.unlink(missing_ok=True)
        return {
            **out,
            "status": "changing",
            "reason": f"still being written (size {before.size} -> "
            f"{after.size if after else 'gone'} while read)",
        }
    if marker is not None:
        expected = sess.retry(lambda t: _md5_marker(t, marker))
        if expected != copied.md5:
            local.unlink(missing_ok=True)
            return {
                **out,
                "status": "md5_mismatch",
                "reason": f"md5 {copied.md5} does not match its .md5 marker "
                f"({expected or 'empty'})",
            }
    return {
        **out,
        "status": "pulled",
        "size": copied.size,
        "mtime": before.mtime,
        "sha256": copied.sha256,
        "resumed_from": list(copied.resumed_from),
    }


def pull(ws: Workspace, run: RunHandle, on_bytes: Progress | None = None) -> PullResult:
    """Pull every planned file once. Done already: skip. Files done before a crash are kept."""
    rd, plan, resource, code = run.dir, run.plan, run.resource, run.code
    if rd.is_done("pull"):
        d = rd.read_done("pull")
        return PullResult(d["pulled"], d["held_back"], d["bytes"])
    spec = resource.files
    assert spec is not None
    done = _already(rd)
    with (
        session(ws, resource.provider) as sess,
        open(_progress_file(rd), "a", encoding="utf-8") as progress,
    ):
        for f in plan.files:
            if f.path in done:
                continue
            marker = f.source + ".md5" if spec.marker == "md5" else None
            try:
                outcome = pull_one(sess, f, staged_path(rd, f.path), marker)
            except TransferError as exc:  # this file only (permissions, vanished mid-read)
                outcome = {"path": f.path, "status": "failed", "reason": str(exc)}
            if on_bytes and outcome["status"] == "pulled":
                on_bytes(outcome["size"])
            progress.write(json.dumps(outcome, ensure_ascii=False) + "\n")
            progress.flush()
            done[f.path] = outcome
            crashpoint("pull:file")
    outcomes = [done[f.path] for f in plan.files]
    pulled = [o for o in outcomes if o["status"] == "pulled"]
    with ws.store.session() as s:
        for o in pulled:
            row = s.execute(
                sa.select(FileManifest).where(
                    FileManifest.resource_code == code, FileManifest.path == o["path"]
                )
            ).scalar()
            if row is None:
                row = FileManifest(resource_code=code, path=o["path"])
                s.add(row)
            row.size, row.mtime, row.sha256, row.run_id = o["size"], o["mtime"], o["sha256"], run.id
        gone = [d.path for d in plan.deletes]
        if gone:
            s.execute(
                sa.delete(FileManifest).where(
                    FileManifest.resource_code == code, FileManifest.path.in_(gone)
                )
            )
    result = PullResult(len(pulled), len(outcomes) - len(pulled), sum(o["size"] for o in pulled))
    rd.mark_done(
        "pull",
        {
            "pulled": result.pulled,
            "held_back": result.held_back,
            "bytes": result.bytes,
            "files": outcomes,
        },
    )
    set_step(
        ws,
        run.id,
        "pull",
        rows_extracted=len(outcomes),
        rows_valid=result.pulled,
        rows_quarantined=result.held_back,
    )
    crashpoint("pull:done")
    return result


def pulled_files(rd: RunDir) -> dict[str, dict[str, Any]]:
    """The run's pulled files by relative path (only those that arrived whole and checked)."""
    return {o["path"]: o for o in rd.read_done("pull")["files"] if o["status"] == "pulled"}
