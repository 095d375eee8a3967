"""Step 2 for files, pull once: stream each planned file into the run's staging directory.

Each file is hashed (sha256, and md5 when the provider writes ``.md5`` markers) while it
streams, and resumes from its offset after a dropped connection. A file whose size or mtime
changed between the listing and the end of the read is still being written: it is dropped
from this run (the manifest keeps its old version, so the next run takes it up again).

When an unfinished run is resumed, ``refresh`` first asks the provider about every planned
file again: one whose size or mtime is no longer what was pulled (or, not pulled yet, what was
planned) is planned anew with its current size and mtime, its staged copy and everything
parsed or validated from the staged files are discarded, and it is pulled again. A file gone
from the provider is dropped from the plan. And a file whose staged copy failed to parse (a
bad value, a missing column) is pulled again, changed or not: a provider may fix a file
keeping its size and mtime (``cp -p``, ``rsync -t``), and the stale copy would fail forever.
Only that file: a run that failed otherwise (a store outage) keeps its staged copies.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from connectors.files import FileInfo, FileTransport, TransferError
from connectors.files.transfer import Session, download
from exchange.files.models import FileManifest
from exchange.files.nodes import session
from exchange.kernel.faults import crashpoint
from exchange.kernel.modes import private_file
from exchange.runs.handle import RunHandle, set_step
from exchange.runs.plan import PlannedFile
from exchange.runs.results import deliveries_recorded
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
        # 0600 from its creation whatever the umask: it names the staged files.
        os.fdopen(
            private_file(_progress_file(rd), os.O_WRONLY | os.O_CREAT | os.O_APPEND),
            "a",
            encoding="utf-8",
        ) as progress,
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
    if plan.tables():
        set_step(ws, run.id, "pull")  # the counts are rows: the parse and validate write them
    else:  # plain files: the run's counts are files (planned, pulled, held back)
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


def _stat(sess: Session, src: str) -> FileInfo | None:
    return sess.retry(lambda t: t.stat(src))


def refresh(ws: Workspace, run: RunHandle) -> RunHandle:
    """The resumed run, its plan brought up to date with the provider's files: any planned
    file that changed at the source since it was pulled (or planned) is pulled again, one gone
    from it is dropped, and the file whose parse failed is pulled again."""
    rd, plan = run.dir, run.plan
    if not plan.files or deliveries_recorded(ws, run.id):
        # Some subscriber was served from these copies: the rest get the same ones, and the
        # manifest still holds the old versions, so the next run takes up what changed.
        return run
    before = _already(rd)
    with session(ws, run.resource.provider) as sess:
        now = {f.path: _stat(sess, f.source) for f in plan.files}
    parse_failed = _parse_failed(rd)
    changed: set[str] = set()
    again: set[str] = set()  # unchanged at the source, but their parse failed
    gone: set[str] = set()
    files: list[PlannedFile] = []
    for f in plan.files:
        info, got = now[f.path], before.get(f.path, {})
        pulled = got.get("status") == "pulled"
        seen = (got["size"], got["mtime"]) if pulled else (f.size, f.mtime)
        if info is None:
            gone.add(f.path)
        elif (info.size, info.mtime) != seen:
            changed.add(f.path)
            files.append(replace(f, size=info.size, mtime=info.mtime))
        elif pulled and f.path in parse_failed:
            again.add(f.path)
            files.append(f)
        else:
            files.append(f)
    if not (changed or again or gone):
        return run
    for rel in changed | again | gone:
        staged_path(rd, rel).unlink(missing_ok=True)
    parse_succeeded(rd)  # what failed is pulled again: judged anew by the next parse
    fresh = replace(plan, files=tuple(files))
    rd.write_json(rd.path / "plan.json", fresh.to_json())
    redo = changed | again | gone
    kept = [json.dumps(o, ensure_ascii=False) + "\n" for p, o in before.items() if p not in redo]
    progress = _progress_file(rd)
    rd.write_text(progress.with_suffix(".tmp"), "".join(kept))
    progress.with_suffix(".tmp").replace(progress)
    # What was built from the old copies goes too: the steps after the pull redo it.
    for step in ("pull", "extract", "validate"):
        rd.done_file(step).unlink(missing_ok=True)
    rd.reset("extract", "valid", "quarantine")
    set_step(ws, run.id, "plan", rows_extracted=None, rows_valid=None, rows_quarantined=None)
    return replace(run, plan=fresh).noting(*_refresh_notes(changed, again, gone))


def _parse_failed_file(rd: RunDir) -> Path:
    return rd.path / "parse_failed.json"


def note_parse_failed(rd: RunDir, rel: str) -> None:
    """Remember that parsing the staged copy of ``rel`` failed (a ``DataError`` or
    ``BadInput`` of the file itself): the resumed run pulls that file again."""
    rd.write_json(_parse_failed_file(rd), {"files": [rel]})


def parse_succeeded(rd: RunDir) -> None:
    _parse_failed_file(rd).unlink(missing_ok=True)


def _parse_failed(rd: RunDir) -> frozenset[str]:
    """The files whose parse failed in this run: the ones to pull again, since their staged
    copies failed (none when the run failed otherwise, a store outage say: its staged copies
    are fine)."""
    path = _parse_failed_file(rd)
    if not rd.is_done("pull") or not path.exists():
        return frozenset()
    return frozenset(json.loads(path.read_text(encoding="utf-8"))["files"])


def _refresh_notes(changed: set[str], again: set[str], gone: set[str]) -> list[str]:
    notes = []
    if changed:
        notes.append(
            f"re-pulling {len(changed)} file(s) changed at the source since this run pulled "
            "them: " + ", ".join(sorted(changed))
        )
    if again:
        notes.append(
            f"re-pulling {len(again)} file(s) whose parse failed in this run "
            "(a file fixed keeping its size and mtime is taken too): " + ", ".join(sorted(again))
        )
    if gone:
        notes.append(
            f"dropped {len(gone)} file(s) gone from the source since this run planned them: "
            + ", ".join(sorted(gone))
        )
    return notes


def pulled_files(rd: RunDir) -> dict[str, dict[str, Any]]:
    """The run's pulled files by relative path (only those that arrived whole and checked)."""
    return {o["path"]: o for o in rd.read_done("pull")["files"] if o["status"] == "pulled"}


def not_pulled(rd: RunDir, files: Sequence[PlannedFile]) -> list[str]:
    """Which of ``files`` this run did not pull whole (held back, changing, vanished)."""
    pulled = pulled_files(rd) if rd.is_done("pull") else {}
    return sorted(f.path for f in files if f.path not in pulled)
