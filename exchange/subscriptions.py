"""Subscriptions: who receives which fields of a resource, on which node, until when.

For now a platform engineer adds them already approved; the request workflow (review,
filing, sign-off, ...) will create them through the same function.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa

from connectors.base import check_identifier
from exchange import audit
from exchange.catalog.model import DATABASE_KINDS
from exchange.errors import BadInput
from exchange.pipeline.plan import today_shanghai
from exchange.store.models import Subscription
from exchange.workspace import Workspace

MAX_USAGE_DAYS = 1095  # 001: a usage period of at most three years


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
) -> Subscription:
    """Record an approved subscription after checking it against the catalog."""
    resource = ws.catalog.resource(resource_code)
    if resource.kind != "table":
        raise BadInput(f"resource {resource_code} is a {resource.kind}; only tables for now")
    if resource.share == "not_shared":
        raise BadInput(
            f"resource {resource_code} is not shared (不予共享) and cannot be subscribed"
        )
    target = ws.catalog.node(node)
    if target.kind not in DATABASE_KINDS:
        raise BadInput(f"node {node!r} is {target.kind}, not a database: it cannot receive a table")
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
    today = today_shanghai()
    if valid_until < today:
        raise BadInput(f"end date {valid_until} is in the past")
    if (valid_until - today).days > MAX_USAGE_DAYS:
        raise BadInput(f"end date {valid_until} exceeds the {MAX_USAGE_DAYS}-day usage period")
    with ws.store.session() as s:
        clash = s.execute(
            sa.select(Subscription.id).where(
                Subscription.subscriber_node == node,
                Subscription.target_table == table,
                Subscription.target_schema.is_(None)
                if target_schema is None
                else Subscription.target_schema == target_schema,
            )
        ).scalar()
        if clash is not None:
            raise BadInput(f"node {node!r} table {table!r} already receives subscription {clash}")
        sub = Subscription(
            resource_code=resource_code,
            subscriber_node=node,
            target_schema=target_schema,
            target_table=table,
            fields=[f for f in resource.field_names if f in fields],
            status="active",
            valid_until=valid_until,
        )
        s.add(sub)
        s.flush()
        audit.append(
            s,
            "subscription.added",
            f"subscription:{sub.id}",
            {
                "resource": resource_code,
                "node": node,
                "table": table,
                "fields": sub.fields,
                "valid_until": valid_until,
            },
            actor=actor,
        )
        return sub


def list_subscriptions(ws: Workspace, resource_code: str | None = None) -> list[Subscription]:
    """Every subscription, or those of one resource."""
    with ws.store.session() as s:
        q = sa.select(Subscription).order_by(Subscription.id)
        if resource_code:
            q = q.where(Subscription.resource_code == resource_code)
        return list(s.execute(q).scalars())
