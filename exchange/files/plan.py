"""Step 1 for files, plan: list the provider's node, compare with the manifest and the ledger.

A file moves when it is new or changed (size or mtime differ from the manifest, or ``--full``)
or when some subscriber's latest delivered version of it is not the manifest's (a new
subscriber, or one that failed last time). Each planned file names the subscribers it goes to;
a file that no subscriber lacks is not pulled at all. In mirror mode, a file in the manifest
that is gone from the node is deleted at the subscribers that hold it.

``--full`` pulls every file again. For a tabular file resource in mirror mode it also
reconciles each table subscriber, like a table's full run: the rows of every file now at the
source are staged, and a row the subscriber holds that none of them has (its file was deleted)
is deleted there. Without mirror mode a deleted file's rows stay, as a deleted file stays at
file subscribers, and the run says so.
"""

from __future__ import annotations

import posixpath

import sqlalchemy as sa

from exchange.catalog.model import Resource
from exchange.files.keys import with_later_files
from exchange.files.models import FileDelivery, FileManifest
from exchange.files.nodes import session
from exchange.files.select import list_resource
from exchange.runs.handle import RunHandle, active_subscriptions, new_run_id, start_run
from exchange.runs.plan import (
    Delivery,
    FolderDelivery,
    Plan,
    PlannedDelete,
    PlannedFile,
    TableDelivery,
)
from exchange.store.models import FileTarget, Subscription
from exchange.workflow.grants import receives_files
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
    ws: Workspace, sub: Subscription, resource: Resource, dirs: dict[int, str], reconcile: bool
) -> Delivery:
    if receives_files(ws.catalog, sub.subscriber_node):
        return FolderDelivery(sub.id, sub.subscriber_node, dirs.get(sub.id, ""))
    return TableDelivery(  # a tabular file's rows, into the subscriber's table
        subscription_id=sub.id,
        node=sub.subscriber_node,
        schema=sub.target_schema,
        table=sub.target_table,
        fields=tuple(f for f in resource.field_names if f in sub.fields),
        since=None,
        # Rows of other files stay (upsert by key), but for a mirrored full run: it stages
        # every file at the source, so a row none of them has is gone there.
        delete_missing=reconcile,
    )


def plan_files(ws: Workspace, resource: Resource, *, full: bool = False) -> RunHandle:
    """Create a file run and its plan."""
    spec = resource.files
    assert spec is not None, "the flow plans only file and folder resources here"
    subs = active_subscriptions(ws, resource.code)
    ids = [s.id for s in subs]
    dirs = file_targets(ws, ids)
    with session(ws, resource.provider) as sess:
        listing = sess.retry(lambda t: list_resource(spec, t))
    with ws.store.session() as s:
        manifest = {
            m.path: m
            for m in s.execute(
                sa.select(FileManifest).where(FileManifest.resource_code == resource.code)
            ).scalars()
        }
    held = latest_versions(ws, ids)

    needs: dict[str, tuple[int, ...]] = {}
    for rel, info in listing.ready.items():
        m = manifest.get(rel)
        unchanged = not full and m is not None and (m.size, m.mtime) == (info.size, info.mtime)
        known = m.sha256 if unchanged and m is not None else None
        needs[rel] = tuple(sid for sid in ids if known is None or held.get((sid, rel)) != known)
    if resource.fields:  # a tabular file's rows: a later file's row of a key wins (files.keys)
        tables = [sub.id for sub in subs if not receives_files(ws.catalog, sub.subscriber_node)]
        mtimes = {rel: info.mtime for rel, info in listing.ready.items()}
        needs = with_later_files(needs, mtimes, tables)
    files = [
        PlannedFile(rel, info.path, info.size, info.mtime, needs[rel])
        for rel, info in listing.ready.items()
        if needs[rel]
    ]
    deletes: list[PlannedDelete] = []
    if spec.mirror:
        file_subs = [sid for sid in ids if sid in dirs]
        for rel in sorted(set(manifest) - listing.present):
            holders = tuple(sid for sid in file_subs if held.get((sid, rel)) is not None)
            deletes.append(PlannedDelete(rel, holders))

    reconcile, notes = _reconciles(resource, full, listing.waiting)
    wanted = {sid for f in files for sid in f.subscribers}
    wanted |= {sid for d in deletes for sid in d.subscribers}
    if reconcile:  # every table subscriber, even with no file left at the source
        wanted |= {s.id for s in subs if not receives_files(ws.catalog, s.subscriber_node)}
    plan = Plan(
        run_id=new_run_id(),
        resource=resource.code,
        full=full,
        deliveries=tuple(
            _delivery(ws, sub, resource, dirs, reconcile) for sub in subs if sub.id in wanted
        ),
        kind="files",
        mode="files",
        since=None,  # file runs have no cursor (validate treats them as full extracts)
        files=tuple(files),
        deletes=tuple(deletes),
        waiting_for_marker=listing.waiting,
    )
    return start_run(ws, plan, {"files": len(files), "deletes": len(deletes)}).noting(*notes)


def _reconciles(resource: Resource, full: bool, waiting: tuple[str, ...]) -> tuple[bool, list[str]]:
    """Whether a run's table subscribers are reconciled (rows of deleted files deleted), and
    what the run says about it: only a full run of a mirrored tabular resource that sees every
    file (none waiting for its completion marker, whose rows would look deleted)."""
    spec = resource.files
    if not full or spec is None or not resource.fields:
        return False, []
    if not spec.mirror:
        return False, [
            f"resource {resource.code} is not mirrored (files.mirror: false): --full pulls "
            "every file again, and the rows of a file deleted at the source stay at subscribers"
        ]
    if waiting:
        return False, [
            f"deleted nothing at table subscribers: {len(waiting)} file(s) wait for their "
            "completion marker (" + ", ".join(waiting) + "), so their rows are not staged"
        ]
    return True, []


def target_path(delivery: FolderDelivery, rel: str) -> str:
    """Where a file lands on a subscriber's node: its directory joined with the relative path."""
    return posixpath.join(delivery.dir, rel) if delivery.dir else rel
