"""A planned delivery asked again, when it is made, whether it may still go out (every kind).

A run's plan names its subscribers once, and a failed run is resumed later, perhaps days
later: a subscriber removed, suspended or expired since, or whose node the catalog now gives to
another department, is recorded ``skipped`` with the reason (nothing is written to its target,
its watermark stays) instead of being delivered to. The rule is the workflow's
(``exchange.workflow.grants.delivery_refusal``).
"""

from __future__ import annotations

from exchange.runs.plan import Delivery, TableDelivery
from exchange.runs.results import DeliveryResult, record_delivery, recorded
from exchange.workflow.grants import delivery_refusal
from exchange.workspace import Workspace

SKIPPED = "skipped"


def refused_delivery(ws: Workspace, run_id: str, d: Delivery) -> DeliveryResult | None:
    """``d`` recorded ``skipped`` with the reason when it may no longer be delivered; None
    when it may (or when this run already delivered it: that stays accounted for)."""
    done = recorded(ws, run_id, d.subscription_id)
    if done is not None and done.status == "delivered":
        return None  # the kind's step reports the recorded delivery, as on any resume
    why = delivery_refusal(ws, d.subscription_id, d.node)
    if why is None:
        return None
    since = d.since if isinstance(d, TableDelivery) else None
    result = DeliveryResult(
        d.subscription_id, d.node, d.table, SKIPPED, 0, 0.0, since, f"not delivered: {why}"
    )
    record_delivery(ws, result, run_id)
    return result
