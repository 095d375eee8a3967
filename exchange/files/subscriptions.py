"""File and folder subscriptions: a requester's file node and the directory the files go to."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from connectors.files import clean_path
from exchange.files.models import FileTarget
from exchange.kernel.clock import today
from exchange.kernel.errors import BadInput
from exchange.kernel.kinds import FILE_NODE_KINDS
from exchange.store.models import Subscription
from exchange.subscriptions import add_approved
from exchange.workflow import states
from exchange.workspace import Workspace

FILES_LABEL = "files"  # Subscription.target_table of a file subscription (the dir is its target)


def check_file_grant(ws: Workspace, resource_code: str, node: str, target_dir: str | None) -> str:
    """Check that ``node`` may receive the resource's files; return the target directory."""
    resource = ws.catalog.resource(resource_code)
    if resource.files is None:
        raise BadInput(
            f"resource {resource_code} is a {resource.kind}: a file node receives file and "
            "folder resources only"
        )
    if resource.share == "not_shared":
        raise BadInput(
            f"resource {resource_code} is not shared (不予共享) and cannot be subscribed"
        )
    kind = ws.catalog.node(node).kind
    if kind not in FILE_NODE_KINDS:
        raise BadInput(f"node {node!r} is {kind}, not a file node: it cannot receive files")
    chosen = target_dir or resource.files.target_dir or resource.files.path
    return clean_path(chosen)


def add_file_subscription(
    ws: Workspace,
    resource_code: str,
    node: str,
    valid_until: dt.date,
    target_dir: str | None = None,
    actor: str = "platform",
) -> Subscription:
    """An approved subscription of a file or folder resource into ``target_dir`` on ``node``."""
    from exchange.subscriptions import check_period

    directory = check_file_grant(ws, resource_code, node, target_dir)
    check_period(valid_until, today())
    with ws.store.session() as s:
        clash = s.execute(
            sa.select(Subscription.id)
            .join(FileTarget, FileTarget.subscription_id == Subscription.id)
            .where(
                Subscription.subscriber_node == node,
                FileTarget.target_dir == directory,
                Subscription.status.not_in(sorted(states.FINAL)),
            )
        ).scalar()
        if clash is not None:
            raise BadInput(
                f"node {node!r} directory /{directory} already receives subscription {clash}"
            )
        sub = add_approved(
            s,
            Subscription(
                resource_code=resource_code,
                subscriber_node=node,
                target_schema=None,
                target_table=FILES_LABEL,
                fields=[],
                valid_until=valid_until,
            ),
            {"dir": "/" + directory},
            actor,
        )
        s.add(FileTarget(subscription_id=sub.id, target_dir=directory))
        return sub
