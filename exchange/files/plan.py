"""Step 1 for files, plan: list the provider's node, compare with the manifest and the ledger.

A file moves when it is new or changed (size or mtime differ from the manifest, or ``--full``)
or when some subscriber's latest delivered version of it is not the manifest's (a new
subscriber, or one that failed last time). Each planned file names the subscribers it goes to;
a file that no subscriber lacks is not pulled at all. In mirror mode, a file in the manifest
that is gone from the node is deleted at the subscribers that hold it.
"""

from __future__ import annotations

import posixpath
from typing import Any

import sqlalchemy as sa

from exchange.catalog.model import Resource
from exchange.files.models import FileDelivery, FileManifest, FileTarget
from exchange.files.nodes import session
from exchange.files.select import list_resource
from exchange.kernel.clock import today
from exchange.kernel.errors import BadInput
from exchange.kernel.kinds import FILE_NODE_KINDS
from exchange.pipeline.plan import (
    active_subscriptions,
    start_run,
    unfinished_run,
)
from exchange.store.models import Subscription
from exchange.workspace import Workspace


def latest_versions(
    ws: Workspace, subscription_ids: list[int]
) -> dict[tuple[int, str], str | None]:
    """(subscription, path) -> sha256 of the version it holds (None: deleted), from the ledger."""
    out: dict[tuple[int, str], str | None] = {}
    if not subscription_ids:
        return out
    with ws.store.session() as s:
        rows = s.execute(
            sa.select(FileDelivery)
            .where(
                FileDelivery.subscription_id.in_(subscription_ids),
                FileDelivery.status == "delivered",
            )
            .order_by(FileDelivery.id)
        ).scalars()
        for r in rows:
            out[(r.subscription_id, r.path)] = r.sha256 if r.action == "put" else None
    return out


def file_targets(ws: Workspace, subscription_ids: list[int]) -> dict[int, str]:
    with ws.store.session() as s:
        return {
            t.subscription_id: t.target_dir
            for t in s.execute(
                sa.select(FileTarget).where(FileTarget.subscription_id.in_(subscription_ids))
            ).scalars()
        }


def _delivery(
    ws: Workspace, sub: Subscription, resource: Resource, dirs: dict[int, str]
) -> dict[str, Any]:
    node = ws.catalog.node(sub.subscriber_node)
    if node.kind in FILE_NODE_KINDS:
        target = dirs.get(sub.id, "")
        return {
            "subscription_id": sub.id,
            "node": sub.subscriber_node,
            "kind": "files",
            "dir": target,
            "table": "/" + target,  # what reports show in the node.table column
        }
    return {
        "subscription_id": sub.id,
        "node": sub.subscriber_node,
        "kind": "table",
        "schema": sub.target_schema,
        "table": sub.target_table,
        "fields": [f for f in resource.field_names if f in sub.fields],
        "since": None,
        "delete_missing": False,  # rows of other files stay: upsert by primary key only
    }


def plan_files(ws: Workspace, resource_code: str, *, full: bool = False) -> str:
    """Create a file run and its plan; return the run id. An unfinished run is resumed."""
    resource = ws.catalog.resource(resource_code)
    spec = resource.files
    if spec is None:
        raise BadInput(f"resource {resource_code}: kind {resource.kind} has no files section")
    previous = unfinished_run(ws, resource_code)
    if previous is not None:
        return previous.id

    subs = active_subscriptions(ws, resource_code, today())
    ids = [s.id for s in subs]
    dirs = file_targets(ws, ids)
    with session(ws, resource.provider) as sess:
        listing = sess.retry(lambda t: list_resource(spec, t))
    with ws.store.session() as s:
        manifest = {
            m.path: m
            for m in s.execute(
                sa.select(FileManifest).where(FileManifest.resource_code == resource_code)
            ).scalars()
        }
    held = latest_versions(ws, ids)

    files: list[dict[str, Any]] = []
    for rel, info in listing.ready.items():
        m = manifest.get(rel)
        unchanged = not full and m is not None and (m.size, m.mtime) == (info.size, info.mtime)
        known = m.sha256 if unchanged and m is not None else None
        need = [sid for sid in ids if known is None or held.get((sid, rel)) != known]
        if need:
            files.append(
                {
                    "path": rel,
                    "source": info.path,
                    "size": info.size,
                    "mtime": info.mtime,
                    "subscribers": need,
                }
            )
    deletes: list[dict[str, Any]] = []
    if spec.mirror:
        file_subs = [sid for sid in ids if sid in dirs]
        for rel in sorted(set(manifest) - listing.present):
            holders = [sid for sid in file_subs if held.get((sid, rel)) is not None]
            deletes.append({"path": rel, "subscribers": holders})

    wanted = {sid for f in files for sid in f["subscribers"]}
    wanted |= {sid for d in deletes for sid in d["subscribers"]}
    deliveries = [_delivery(ws, sub, resource, dirs) for sub in subs if sub.id in wanted]

    return start_run(
        ws,
        resource_code,
        full,
        {
            "kind": "files",
            "mode": "files",
            "since": None,  # the table steps (validate) read it: file runs have no cursor
            "files": files,
            "deletes": deletes,
            "waiting_for_marker": list(listing.waiting),
            "deliveries": deliveries,
        },
        {"files": len(files), "deletes": len(deletes)},
    )


def target_path(delivery: dict[str, Any], rel: str) -> str:
    """Where a file lands on a subscriber's node: its directory joined with the relative path."""
    return posixpath.join(delivery["dir"], rel) if delivery["dir"] else rel
