"""Grants: who may receive which fields of a resource (or its files), on which node, until
when. Every check that a subscription, table or file, must pass is made here, once.

A platform engineer may add one already approved (``add_subscription``); requesters apply
through the workflow (``exchange.workflow.service``), which uses the same checks. A database
node receives a table (a table resource, or a tabular file's rows); a file node receives the
files themselves, into a directory (``file_targets``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from connectors.base import check_identifier
from connectors.files import clean_path
from exchange import audit
from exchange.catalog.model import Catalog, Resource
from exchange.kernel.clock import today, utcnow
from exchange.kernel.errors import BadInput
from exchange.kernel.kinds import FILE_NODE_KINDS
from exchange.store.models import FileTarget, Subscription
from exchange.workflow import states
from exchange.workflow.transitions import record
from exchange.workflow.users import Principal
from exchange.workspace import Workspace

MAX_USAGE_DAYS = 1095  # 001: a usage period of at most three years
FILES_LABEL = "files"  # Subscription.target_table of a file subscription (the dir is its target)


def receives_files(catalog: Catalog, node: str) -> bool:
    """Whether ``node`` is a file node (it receives files into a directory), not a database."""
    return catalog.node(node).kind in FILE_NODE_KINDS


def check_grant(
    ws: Workspace,
    resource_code: str,
    node: str,
    fields: Sequence[str],
    *,
    target_table: str | None = None,
    target_schema: str | None = None,
) -> tuple[Resource, str]:
    """Check that ``node`` may receive ``fields`` of the resource; return it and the table."""
    resource = ws.catalog.resource(resource_code)
    if not resource.delivers_table:
        raise BadInput(
            f"resource {resource_code} is a {resource.kind}; a database node receives tables "
            "and tabular files only (give a file node and a directory for files)"
        )
    if resource.share == "not_shared":
        raise BadInput(
            f"resource {resource_code} is not shared (不予共享) and cannot be subscribed"
        )
    if receives_files(ws.catalog, node):
        kind = ws.catalog.node(node).kind
        raise BadInput(f"node {node!r} is {kind}, not a database: it cannot receive a table")
    if not fields:
        raise BadInput(f"no fields requested of resource {resource_code}")
    unknown = [f for f in fields if f not in resource.field_names]
    if unknown:
        raise BadInput(
            f"resource {resource_code} has no field {', '.join(map(repr, unknown))} "
            f"(fields: {', '.join(resource.field_names)})"
        )
    missing_key = [k for k in resource.primary_key if k not in fields]
    if missing_key:
        raise BadInput(
            f"the granted fields must include the primary key {', '.join(missing_key)}: "
            "rows are merged by it"
        )
    table = check_identifier(target_table or resource.source_table or "", "target table")
    if target_schema is not None:
        check_identifier(target_schema, "target schema")
    return resource, table


def check_target_free(
    s: Session, node: str, table: str, target_schema: str | None, exclude: int | None = None
) -> None:
    """Refuse a target table that a live (not rejected, withdrawn or expired) subscription has."""
    clash = s.execute(
        sa.select(Subscription.id).where(
            Subscription.subscriber_node == node,
            Subscription.target_table == table,
            Subscription.target_schema.is_(None)
            if target_schema is None
            else Subscription.target_schema == target_schema,
            Subscription.status.not_in(sorted(states.FINAL)),
            Subscription.id != (exclude or 0),
        )
    ).scalar()
    if clash is not None:
        raise BadInput(f"node {node!r} table {table!r} already receives subscription {clash}")


def check_period(valid_until: dt.date, day: dt.date) -> None:
    """A usage period that ends after ``day`` and within the 1095 days 001 allows."""
    if valid_until < day:
        raise BadInput(f"end date {valid_until} is in the past")
    if (valid_until - day).days > MAX_USAGE_DAYS:
        raise BadInput(f"end date {valid_until} exceeds the {MAX_USAGE_DAYS}-day usage period")


def add_subscription(
    ws: Workspace,
    resource_code: str,
    node: str,
    fields: Sequence[str],
    valid_until: dt.date,
    *,
    target_table: str | None = None,
    target_schema: str | None = None,
    actor: str = "platform",
    target_dir: str | None = None,
) -> Subscription:
    """Record a subscription approved outside the workflow (a platform engineer adds it): it
    starts in implementation, and the engine's first delivery moves it on to sign-off.

    A file node as ``node`` subscribes to the files themselves, into ``target_dir``."""
    if receives_files(ws.catalog, node):
        return add_file_subscription(ws, resource_code, node, valid_until, target_dir, actor)
    resource, table = check_grant(
        ws, resource_code, node, fields, target_table=target_table, target_schema=target_schema
    )
    check_period(valid_until, today())
    with ws.store.session() as s:
        check_target_free(s, node, table, target_schema)
        granted = [f for f in resource.field_names if f in fields]
        return add_approved(
            s,
            Subscription(
                resource_code=resource_code,
                subscriber_node=node,
                target_schema=target_schema,
                target_table=table,
                fields=granted,
                valid_until=valid_until,
            ),
            {"table": table, "fields": granted},
            actor,
        )


def add_approved(
    s: Session, sub: Subscription, described: dict[str, Any], actor: str
) -> Subscription:
    """Store ``sub`` as approved by a platform engineer: in implementation, audited, and with
    its first history entry (tables and files alike)."""
    now = utcnow()
    sub.status, sub.urgency = states.IMPLEMENTATION, "normal"
    sub.approved_at = sub.state_changed_at = now
    s.add(sub)
    s.flush()
    audit.append(
        s,
        "subscription.added",
        f"subscription:{sub.id}",
        {"resource": sub.resource_code, "node": sub.subscriber_node, **described,
         "valid_until": sub.valid_until},
        actor=actor,
    )  # fmt: skip
    record(
        s, sub, "add", None, Principal(actor, "admin"),
        "added already approved by a platform engineer", now,
    )  # fmt: skip
    return sub


def list_subscriptions(ws: Workspace, resource_code: str | None = None) -> list[Subscription]:
    """Every subscription, or those of one resource."""
    with ws.store.session() as s:
        q = sa.select(Subscription).order_by(Subscription.id)
        if resource_code:
            q = q.where(Subscription.resource_code == resource_code)
        return list(s.execute(q).scalars())


def check_file_grant(ws: Workspace, resource_code: str, node: str, target_dir: str | None) -> str:
    """Check that ``node`` may receive the resource's files; return the target directory."""
    resource = ws.catalog.resource(resource_code)
    if resource.files is None:  # only file and folder resources have files to send
        raise BadInput(
            f"resource {resource_code} is a {resource.kind}: a file node receives file and "
            "folder resources only"
        )
    if resource.share == "not_shared":
        raise BadInput(
            f"resource {resource_code} is not shared (不予共享) and cannot be subscribed"
        )
    if not receives_files(ws.catalog, node):
        kind = ws.catalog.node(node).kind
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


def file_dir(s: Session, sub: Subscription) -> str | None:
    """``/dir`` of a file subscription, None for a table subscription."""
    t = s.get(FileTarget, sub.id)
    return "/" + t.target_dir if t is not None else None


def describe_target(ws: Workspace, sub: Subscription) -> str:
    """Where a subscription lands: ``node.table``, or ``node:/dir`` for files."""
    with ws.store.session() as s:
        where = file_dir(s, sub)
    return (
        f"{sub.subscriber_node}:{where}" if where else f"{sub.subscriber_node}.{sub.target_table}"
    )
