"""Grants: who may receive which fields of a resource (or its files), on which node, until
when. Every check that a subscription, table or file, must pass is made here, once.

A platform engineer may add one already approved (``add_subscription``); requesters apply
through the workflow (``exchange.workflow.service``), which uses the same checks. A database
node receives a table (a table resource, or a tabular file's rows); a file node receives the
files themselves, into a directory (``file_targets``). Either way the node must be a front-end
of the department the subscription is for (``check_node_department``): data never lands on
another department's node. Both are asked again at each delivery (``delivery_refusal``): a run
planned earlier may be resumed after the subscription or the node's owner changed.

An api resource is not delivered but called through the gateway with an authorization code:
its subscription has no node and no target table (both stored as ``""``, ``check_api_grant``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, object_session

from connectors.files import clean_path
from connectors.names import check_identifier
from exchange import audit
from exchange.catalog.model import Catalog, Resource
from exchange.kernel.clock import today, utcnow
from exchange.kernel.errors import BadInput, Forbidden
from exchange.kernel.kinds import FILE_NODE_KINDS
from exchange.kernel.text import a_or_an
from exchange.store.models import FileTarget, Subscription
from exchange.workflow import states
from exchange.workflow.engine import deliverable
from exchange.workflow.notices import check_subscribable, offline_reason
from exchange.workflow.transitions import record
from exchange.workflow.users import Principal
from exchange.workspace import Workspace

MAX_USAGE_DAYS = 1095  # 001: a usage period of at most three years
FILES_LABEL = "files"  # Subscription.target_table of a file subscription (the dir is its target)
API_KIND = "api"
NO_TARGET = "—"  # where an api subscription lands: nowhere, it is called through the gateway


def receives_files(catalog: Catalog, node: str) -> bool:
    """Whether ``node`` is a file node (it receives files into a directory), not a database."""
    return catalog.node(node).kind in FILE_NODE_KINDS


def ownership_mismatch(catalog: Catalog, node: str, department: str | None) -> str | None:
    """How ``node``'s owner differs from ``department`` (None: the node is that department's,
    or both are no department's); the one comparison behind every ownership check."""
    owner = catalog.node(node).department or None
    if owner == department:
        return None
    if owner is None:
        return (
            f"node {node!r} belongs to no department, not to "
            f"{catalog.describe_department(str(department))}"
        )
    if department is None:
        return f"node {node!r} is the front-end of {catalog.describe_department(owner)}"
    return (
        f"node {node!r} is the front-end of {catalog.describe_department(owner)}, "
        f"not of {catalog.describe_department(department)}"
    )


def check_node_department(catalog: Catalog, node: str, department: str | None) -> None:
    """Refuse a node that is not the front-end of ``department``. ``None`` (an admin's add
    for no department) fits only a node of no department: a department's node receives
    only what was granted to that department, named as such.

    A node of another department (or of none) is refused as ``Forbidden``, like applying for
    another department: the request is well formed, it asks for what its department may not
    have (exit 1, API 403). Naming no department for a department's node is a missing option
    (``BadInput``, exit 2)."""
    mismatch = ownership_mismatch(catalog, node, department)
    if mismatch is None:
        return
    if department is None:
        owner = catalog.node(node).department
        raise BadInput(
            f"{mismatch}: name the department the subscription is for (--department {owner})"
        )
    raise Forbidden(f"{mismatch}: name your department's own node")


def check_dedicated(catalog: Catalog, resource: Resource, department: str | None) -> None:
    """A dedicated resource ("-xx 专用", ``dedicated_to``) is for its own department only:
    any other (or a subscription of no department) is refused, naming both (003 §15)."""
    owner = resource.dedicated_to
    if owner is None or owner == department:
        return
    who = (
        f"department {catalog.describe_department(department)}"
        if department
        else "a subscription of no department"
    )
    raise Forbidden(
        f"resource {resource.code} is dedicated to department "
        f"{catalog.describe_department(owner)} (专用): {who} may not request it; file a data "
        "demand to its original provider naming the use and the fields needed"
    )


def check_department(catalog: Catalog, department: str, option: str = "--department") -> None:
    """A department code the catalog declares (any code, if it declares none); ``option`` is
    where the code was given (``--department``, or a form's ``department_code``)."""
    if not department.strip():
        raise BadInput(f"{option}: the department code is empty")
    if catalog.departments and department not in catalog.departments:
        raise BadInput(
            f"{option}: no department {department!r} in the catalog "
            f"(departments: {catalog.department_list()})"
        )


def check_subscriber(catalog: Catalog, node: str, department: str | None) -> None:
    """What every subscription the platform adds must pass first, tables and files alike: a
    declared department (when one is named) whose own node ``node`` is."""
    if department is not None:
        check_department(catalog, department)
    check_node_department(catalog, node, department)


def delivery_refusal(ws: Workspace, subscription_id: int, node: str) -> str | None:
    """Why a planned delivery to ``node`` may no longer go out when it is made, or None.

    A plan is made once and a failed run is resumed later, perhaps much later: by then the
    subscription may be removed, suspended or expired, its department suspended, or the
    node given to another department in the catalog. The same rule as the plan's
    (``deliverable``) is asked again, and the node's owner compared with the subscription's
    department."""
    day = today()
    with ws.store.session() as s:
        sub = s.get(Subscription, subscription_id)
        if sub is None:
            return f"subscription {subscription_id} no longer exists"
        allowed = s.execute(
            sa.select(Subscription.id).where(Subscription.id == sub.id, deliverable(day))
        ).scalar()
        if allowed is None:
            return _not_deliverable(ws.catalog, sub, day)
        department = sub.department_code
    if node not in ws.catalog.nodes:
        return f"node {node!r} is no longer in the catalog"
    mismatch = ownership_mismatch(ws.catalog, node, department)
    if mismatch is None:
        return None
    if department is None:
        return f"{mismatch}, and subscription {subscription_id} is for no department"
    return f"{mismatch}, the department of subscription {subscription_id}"


def _not_deliverable(catalog: Catalog, sub: Subscription, day: dt.date) -> str:
    """Which part of ``deliverable`` the subscription fails today, in words."""
    if sub.status not in states.DELIVERABLE:
        return f"subscription {sub.id} is {sub.status}"
    if sub.valid_until < day:
        return f"subscription {sub.id}'s usage period ended on {sub.valid_until}"
    s = object_session(sub)
    offline = offline_reason(s, sub.resource_code, day) if s is not None else None
    if offline is not None:
        return offline
    dept = catalog.describe_department(sub.department_code or "")
    return f"department {dept} is suspended (an overdue effectiveness report)"


def is_api(resource: Resource) -> bool:
    """Whether ``resource`` is called through the gateway (an ``api``), not delivered."""
    return resource.kind == API_KIND


def check_grant(
    ws: Workspace,
    resource_code: str,
    node: str | None,
    fields: Sequence[str],
    *,
    target_table: str | None = None,
    target_schema: str | None = None,
) -> tuple[Resource, str]:
    """Check that ``node`` may receive ``fields`` of the resource; return it and the table
    (``""`` for an api resource: it has neither node nor table, see ``check_api_grant``)."""
    resource = ws.catalog.resource(resource_code)
    check_subscribable(ws, resource_code)  # an offline notice: no new subscriber
    if is_api(resource):
        check_api_grant(resource, node, fields, target_table, target_schema)
        return resource, ""
    if node is None:
        raise BadInput(
            f"node: resource {resource_code} is {a_or_an(resource.kind)}: name your "
            "department's front-end node to receive it"
        )
    if not resource.delivers_table:
        raise BadInput(
            f"resource {resource_code} is {a_or_an(resource.kind)}; a database node receives "
            "tables and tabular files only (give a file node and a directory for files)"
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
    if not (target_table or resource.source_table):
        raise BadInput(
            f"resource {resource_code} is {a_or_an(resource.kind)} resource with no source "
            f"table to name a target table after: give node {node!r} one with --target-table "
            "(target_table in a form)"
        )
    table = check_identifier(target_table or resource.source_table or "", "target table")
    if target_schema is not None:
        check_identifier(target_schema, "target schema")
    return resource, table


def check_api_grant(
    resource: Resource,
    node: str | None,
    fields: Sequence[str],
    target_table: str | None = None,
    target_schema: str | None = None,
) -> None:
    """An api subscription: no node and no target (the department calls the gateway with
    its authorization code), and fields among the response's (no key: nothing is merged)."""
    code = resource.code
    if resource.share == "not_shared":
        raise BadInput(f"resource {code} is not shared (不予共享) and cannot be subscribed")
    if node is not None:
        raise BadInput(
            f"node: resource {code} is an api resource, called through the gateway: leave node out"
        )
    if target_table is not None or target_schema is not None:
        which = "target_table" if target_table is not None else "target_schema"
        raise BadInput(f"{which}: resource {code} is an api resource: it has no target table")
    if not fields:
        raise BadInput(f"no fields requested of resource {code}")
    unknown = [f for f in fields if f not in resource.field_names]
    if unknown:
        raise BadInput(
            f"resource {code} has no field {', '.join(map(repr, unknown))} "
            f"(fields: {', '.join(resource.field_names)})"
        )


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


def check_api_free(s: Session, resource_code: str, department_code: str) -> None:
    """Refuse a second live (not final) subscription of one api resource for one department.

    The gateway's quota and a provider's review are per subscription: a second one, filed at
    once for an unconditional resource, would be a second quota with no review (a table
    subscription gets this rule from its target, ``check_target_free``)."""
    clash = s.execute(
        sa.select(Subscription.id, Subscription.status)
        .where(
            Subscription.resource_code == resource_code,
            Subscription.department_code == department_code,
            Subscription.status.not_in(sorted(states.FINAL)),
        )
        .order_by(Subscription.id)
        .limit(1)
    ).first()
    if clash is not None:
        raise BadInput(
            f"department {department_code} already holds subscription {clash.id} of api "
            f"resource {resource_code} ({clash.status}): a department holds one live "
            "subscription of an api resource; apply again once that one is rejected, "
            "withdrawn, expired or removed"
        )


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
    fields: Sequence[str] | None,
    valid_until: dt.date,
    *,
    target_table: str | None = None,
    target_schema: str | None = None,
    actor: str = "platform",
    target_dir: str | None = None,
    department: str | None = None,
) -> Subscription:
    """Record a subscription approved outside the workflow (a platform engineer adds it for
    ``department``, whose node ``node`` must be): it starts in implementation, and the
    engine's first delivery moves it on to sign-off. No ``fields``: every field.

    A file node as ``node`` subscribes to the files themselves, into ``target_dir``."""
    if receives_files(ws.catalog, node):
        if target_table or target_schema:  # else silently ignored: files land in a directory
            option = "--target-table" if target_table else "--target-schema"
            raise BadInput(f"{option} is for database nodes; file node {node!r} takes --dir")
        return add_file_subscription(
            ws, resource_code, node, valid_until, target_dir, actor, department=department
        )
    check_subscriber(ws.catalog, node, department)
    wanted = list(fields) if fields else list(ws.catalog.resource(resource_code).field_names)
    resource, table = check_grant(
        ws, resource_code, node, wanted, target_table=target_table, target_schema=target_schema
    )
    check_dedicated(ws.catalog, resource, department)
    check_period(valid_until, today())
    with ws.store.session() as s:
        check_target_free(s, node, table, target_schema)
        granted = [f for f in resource.field_names if f in wanted]
        return add_approved(
            s,
            Subscription(
                resource_code=resource_code,
                subscriber_node=node,
                target_schema=target_schema,
                target_table=table,
                fields=granted,
                valid_until=valid_until,
                **_department_columns(ws.catalog, department),
            ),
            {"table": table, "fields": granted},
            actor,
        )


def _department_columns(catalog: Catalog, department: str | None) -> dict[str, str | None]:
    """The subscription's department (code and the catalog's name), or none for the platform."""
    if department is None:
        return {"department_code": None, "department_name": None}
    return {"department_code": department, "department_name": catalog.department_name(department)}


def add_approved(
    s: Session, sub: Subscription, described: dict[str, Any], actor: str
) -> Subscription:
    """Store ``sub`` as approved by a platform engineer: in implementation, audited (with the
    department it is for), and with its first history entry (tables and files alike)."""
    described = {"department": sub.department_code, **described}
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


def list_subscriptions(
    ws: Workspace,
    resource_code: str | None = None,
    visible: sa.ColumnElement[bool] | None = None,
) -> list[Subscription]:
    """Every subscription, or those of one resource; ``visible`` keeps those a user may see
    (``exchange.workflow.service.visible_to``)."""
    with ws.store.session() as s:
        q = sa.select(Subscription).order_by(Subscription.id)
        if resource_code:
            q = q.where(Subscription.resource_code == resource_code)
        if visible is not None:
            q = q.where(visible)
        return list(s.execute(q).scalars())


def check_file_grant(ws: Workspace, resource_code: str, node: str, target_dir: str | None) -> str:
    """Check that ``node`` may receive the resource's files; return the target directory."""
    resource = ws.catalog.resource(resource_code)
    check_subscribable(ws, resource_code)  # an offline notice: no new subscriber
    if resource.files is None:  # only file and folder resources have files to send
        raise BadInput(
            f"resource {resource_code} is {a_or_an(resource.kind)}: a file node receives file and "
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
    *,
    department: str | None = None,
) -> Subscription:
    """An approved subscription of a file or folder resource into ``target_dir`` on ``node``
    (a front-end of ``department``, or of no department when it is None)."""
    check_subscriber(ws.catalog, node, department)
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
                **_department_columns(ws.catalog, department),
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
    """Where a subscription lands: ``node.table``, ``node:/dir`` for files, or ``—`` for an
    api subscription (no node, no table)."""
    if not sub.subscriber_node:
        return NO_TARGET
    with ws.store.session() as s:
        where = file_dir(s, sub)
    return (
        f"{sub.subscriber_node}:{where}" if where else f"{sub.subscriber_node}.{sub.target_table}"
    )
