"""Step 3 for files, push to each: upload the staged files to one subscriber, exactly once.

Each file goes to a temporary name next to its target, is verified (size, and sha256 from
the server or read back), then renamed into place atomically: a reader on the subscriber's
node sees the old file or the whole new one, never a part. An interrupted upload continues
from the bytes already on the server. The ledger (``file_deliveries``) records each file
version delivered; a re-run skips what it holds, and a file found already in place with the
right sha256 (the process died after the rename) is recorded without a second upload.
One failing subscriber is recorded and returned, never raised: the others go on.
"""

from __future__ import annotations

import posixpath
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from connectors.files import ConnectionLost, FileTransport, HostKeyRejected, TransferError
from connectors.files.transfer import Session, remote_sha256, upload
from connectors.secrets import redact
from exchange.files.models import FileDelivery
from exchange.files.nodes import session
from exchange.files.plan import latest_versions, target_path
from exchange.files.pull import pulled_files, staged_path
from exchange.files.select import PART_SUFFIX
from exchange.kernel.clock import utcnow
from exchange.kernel.errors import ExchangeError
from exchange.kernel.faults import crashpoint
from exchange.runs.handle import RunHandle
from exchange.runs.plan import FolderDelivery
from exchange.runs.results import DeliveryResult, record_delivery, recorded
from exchange.workspace import Workspace

Progress = Callable[[int], None]


def _ledger(ws: Workspace, run_id: str, sid: int, path: str, **values: Any) -> None:
    with ws.store.session() as s:
        row = s.execute(
            sa.select(FileDelivery).where(
                FileDelivery.run_id == run_id,
                FileDelivery.subscription_id == sid,
                FileDelivery.path == path,
            )
        ).scalar()
        if row is None:
            row = FileDelivery(run_id=run_id, subscription_id=sid, path=path)
            s.add(row)
        for k, v in values.items():
            setattr(row, k, v)
        row.finished_at = utcnow()


def record_files(
    ws: Workspace, run_id: str, sid: int, files: list[dict[str, Any]], status: str = "delivered"
) -> None:
    """Ledger rows for files a subscriber received another way (rows merged into its table)."""
    for f in files:
        _ledger(
            ws, run_id, sid, f["path"], action="put", sha256=f["sha256"], size=f["size"],
            status=status, error=None,
        )  # fmt: skip


def _done_in_run(ws: Workspace, run_id: str, sid: int) -> set[str]:
    with ws.store.session() as s:
        return set(
            s.execute(
                sa.select(FileDelivery.path).where(
                    FileDelivery.run_id == run_id,
                    FileDelivery.subscription_id == sid,
                    FileDelivery.status == "delivered",
                )
            ).scalars()
        )


def temp_name(dst: str) -> str:
    """The upload's temporary name: hidden, next to the target (same directory: atomic rename)."""
    head, name = posixpath.split(dst)
    return posixpath.join(head, f".{name}{PART_SUFFIX}")


def _in_place(t: FileTransport, dst: str, size: int, sha: str) -> bool:
    st = t.stat(dst)
    return st is not None and st.size == size and remote_sha256(t, dst) == sha


def push_subscriber(
    ws: Workspace, run: RunHandle, d: FolderDelivery, on_bytes: Progress | None = None
) -> DeliveryResult:
    """Deliver this run's files (and mirror deletions) to one file subscription."""
    run_id, rd, subscription_id, label = run.id, run.dir, d.subscription_id, d.table
    done = recorded(ws, run_id, subscription_id)
    if done is not None and done.status == "delivered":
        return DeliveryResult(subscription_id, d.node, label, "delivered", done.rows, done.seconds)
    spec = run.resource.files
    assert spec is not None
    pulled = pulled_files(rd)
    skip = _done_in_run(ws, run_id, subscription_id)
    held = latest_versions(ws, [subscription_id])
    todo = [
        pulled[f.path]
        for f in run.plan.files_for(subscription_id)
        if f.path in pulled
        and f.path not in skip
        and held.get((subscription_id, f.path)) != pulled[f.path]["sha256"]
    ]
    deletes = [x.path for x in run.plan.deletes if subscription_id in x.subscribers]
    started = time.perf_counter()
    delivered = len(skip)
    errors: list[str] = []
    sess = session(ws, d.node)
    try:
        for o in todo:
            dst = target_path(d, o["path"])
            try:
                local = staged_path(rd, o["path"])
                resumed = _put(sess, local, o, dst, spec.verify == "sha256", on_bytes)
                crashpoint("push:renamed", d.node)  # in place, not yet in the ledger
            except (HostKeyRejected, ConnectionLost) as exc:
                errors.append(redact(str(exc)))
                break  # the node itself is unreachable: the remaining files would fail too
            except TransferError as exc:
                message = redact(str(exc))
                errors.append(message)
                _ledger(
                    ws, run_id, subscription_id, o["path"], action="put", sha256=o["sha256"],
                    size=o["size"], status="failed", error=message,
                )  # fmt: skip
                continue
            _ledger(
                ws, run_id, subscription_id, o["path"], action="put", sha256=o["sha256"],
                size=o["size"], status="delivered", error=None, resumed_from=resumed,
            )  # fmt: skip
            delivered += 1
            crashpoint("push:file", d.node)
        if not errors:
            for rel in deletes:
                gone = target_path(d, rel)
                try:
                    sess.retry(lambda t: t.remove(gone))  # noqa: B023  # called right here
                except ExchangeError as exc:
                    errors.append(redact(str(exc)))
                    break
                _ledger(
                    ws, run_id, subscription_id, rel, action="delete", sha256=None, size=0,
                    status="delivered", error=None,
                )  # fmt: skip
                delivered += 1
    finally:
        sess.close()
    seconds = time.perf_counter() - started
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        result = DeliveryResult(
            subscription_id, d.node, label, "failed", delivered, seconds, None, errors[0] + more
        )
    else:
        result = DeliveryResult(subscription_id, d.node, label, "delivered", delivered, seconds)
    record_delivery(ws, result, run_id)
    return result


def _put(
    sess: Session,
    local: Path,
    o: dict[str, Any],
    dst: str,
    verify_hash: bool,
    on_bytes: Progress | None,
) -> int | None:
    """Upload one staged file to ``dst``; return the offset it resumed from, if it did."""
    tmp = temp_name(dst)
    parent = posixpath.dirname(dst)
    if parent:
        sess.retry(lambda t: t.makedirs(parent))
    # Died after the rename last time? The version is in place: record it, upload nothing.
    if sess.retry(lambda t: t.stat(tmp)) is None and sess.retry(
        lambda t: _in_place(t, dst, o["size"], o["sha256"])
    ):
        return None
    copied = upload(
        sess, local, tmp, dst, sha256=o["sha256"], verify_hash=verify_hash, progress=on_bytes
    )
    return copied.resumed_from[0] if copied.resumed_from else None
