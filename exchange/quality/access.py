"""Who may act on quality: the same roles as the subscription workflow, read from the rules.

* A quality ticket and an error report are answered by the department that provides the
  resource ("whoever produces data answers for it", 004 §9b; the provider checks and answers,
  001, 003 §10), or by a platform admin.
* A ticket is closed by the platform (the operator reviews the provider's answer, 004 §9c-d):
  an admin only.
* An error report is filed by a requester whose department holds a subscription to the
  resource (the user who received the data reports it, 001, 003 §10 and §14), or by an admin
  on its behalf; it is closed by that department (it accepts the answer or the delivered fix)
  or an admin.

Every refusal is ``Forbidden`` and names the user, the resource and who may do it instead.
"""

from __future__ import annotations

import sqlalchemy as sa

from exchange.kernel.errors import BadInput, Forbidden, NotFound
from exchange.store.models import Subscription
from exchange.workflow import states
from exchange.workflow.users import Principal
from exchange.workspace import Workspace

#: Who acts when no user is named (the demo, the engine's own callers): the platform itself.
PLATFORM = Principal("platform", "admin")


def _who(who: Principal) -> str:
    return who.describe()


def require_provider(ws: Workspace, who: Principal, resource_code: str, action: str) -> None:
    """An admin, or a provider of the department whose node provides the resource."""
    if who.role == "admin":
        return
    # here: the workflow service loads its forms' models (pydantic), which a run never needs
    from exchange.workflow.service import provider_department

    resource = ws.catalog.resource(resource_code)
    provider = provider_department(ws, resource)
    if who.role == "provider" and provider is not None and who.department == provider:
        return
    by = (
        f"its provider department {ws.catalog.describe_department(provider)}"
        if provider is not None
        else f"a platform admin (its node {resource.provider!r} belongs to no department)"
    )
    raise Forbidden(f"{_who(who)} may not {action} of resource {resource_code}: only {by} or a "
                    "platform admin may")  # fmt: skip


def require_admin(who: Principal, action: str) -> None:
    """The platform's own steps (closing a ticket: reviewing the provider's answer)."""
    if who.role != "admin":
        raise Forbidden(f"{_who(who)} may not {action}: the platform (an admin) does")


#: The states of a subscription that data was delivered to: an error report is on rows received.
RECEIVED = frozenset(states.DELIVERABLE | {states.SUSPENDED, states.EXPIRED})


def reporting_subscription(
    ws: Workspace, who: Principal, resource_code: str, subscription_id: int | None
) -> Subscription | None:
    """The subscription an error report on ``resource_code`` is filed under, checked for
    ``who``: an admin may name any subscription to the resource, or none; a requester files
    under one of its department's subscriptions to it that data was delivered to (named, or
    found when there is exactly one). A named subscription must be one data was delivered
    to as well, whoever names it."""
    ws.catalog.resource(resource_code)  # NotFound for an unknown code
    with ws.store.session() as s:
        if subscription_id is not None:
            sub = s.get(Subscription, subscription_id)
            if sub is None or sub.resource_code != resource_code:
                raise NotFound(f"no subscription {subscription_id} to {resource_code}")
            mine = who.role == "requester" and who.department == sub.department_code
            if who.role != "admin" and not (mine and who.department):
                raise Forbidden(
                    f"{_who(who)} may not report errors under subscription {subscription_id}: "
                    "it belongs to department "
                    f"{sub.department_code or '(none: added by the platform)'}"
                )
            if sub.status not in RECEIVED:
                raise Forbidden(
                    f"{_who(who)} may not report errors under subscription {subscription_id} "
                    f"to {resource_code}: it is {sub.status} and never received data (an error "
                    "report is filed under a subscription the rows were delivered with)"
                )
            return sub
        if who.role == "admin":
            return None
        if who.role != "requester" or not who.department:
            raise Forbidden(
                f"{_who(who)} may not file an error report on resource {resource_code}: a "
                "requester holding a subscription to it (or a platform admin) reports errors"
            )
        held = list(
            s.execute(
                sa.select(Subscription)
                .where(
                    Subscription.resource_code == resource_code,
                    Subscription.department_code == who.department,
                    Subscription.status.in_(sorted(RECEIVED)),
                )
                .order_by(Subscription.id)
            ).scalars()
        )
    if not held:
        raise Forbidden(
            f"{_who(who)} may not file an error report on resource {resource_code}: its "
            "department holds no subscription to it that received data"
        )
    if len(held) > 1:
        ids = ", ".join(str(x.id) for x in held)
        raise BadInput(
            f"department {who.department} holds subscriptions {ids} to {resource_code}: "
            "name the one the rows came with (--subscription ID)"
        )
    return held[0]


def require_reporter(who: Principal, subscription: Subscription | None, report_id: int) -> None:
    """An admin, or a requester of the department whose subscription the report was filed
    under (it accepts the answer or the delivered fix)."""
    if who.role == "admin":
        return
    if (
        who.role == "requester"
        and who.department
        and subscription is not None
        and subscription.department_code == who.department
    ):
        return
    of = (
        f"department {subscription.department_code}"
        if subscription is not None and subscription.department_code
        else "the platform"
    )
    raise Forbidden(
        f"{_who(who)} may not close error report {report_id}: it was filed for {of}, "
        "which closes it (or a platform admin)"
    )
