"""An error report is filed under a subscription that received data, however it is named.

From a review: with ``--subscription ID`` a requester could file a report under its
department's subscription that was rejected, withdrawn or still under review (it never
received a row), while the same requester without ``--subscription`` was refused. Both paths
now check the same states, for a requester and an admin alike.
"""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from exchange.kernel.errors import Forbidden
from exchange.quality.error_reports import file_report
from exchange.quality.models import ErrorReport
from exchange.store.models import Subscription
from exchange.workflow import states
from exchange.workflow.grants import add_subscription
from exchange.workflow.users import Principal
from exchange.workspace import Workspace
from tests import workflow_city

UNTIL = dt.date.today() + dt.timedelta(days=300)

city = workflow_city.city  # the small city: SCJG provides OPEN; TAX is a requester


def tax_subscription_in(ws: Workspace, status: str) -> int:
    sub = add_subscription(ws, "OPEN", "tax_fe", None, UNTIL, department="TAX")
    with ws.store.session() as s:
        s.get_one(Subscription, sub.id).status = status
    return sub.id


@pytest.mark.parametrize("status", [states.REJECTED, states.WITHDRAWN, states.UNDER_REVIEW])
@pytest.mark.parametrize("user", ["tax", "admin"])
def test_a_named_subscription_that_never_received_data_is_refused(
    city: tuple[Workspace, dict[str, Principal]], status: str, user: str
) -> None:
    ws, people = city
    sid = tax_subscription_in(ws, status)

    with pytest.raises(Forbidden) as refused:
        file_report(ws, "OPEN", ["5"], ["name"], "名称有误", subscription_id=sid,
                    who=people[user])  # fmt: skip

    assert f"under subscription {sid} to OPEN: it is {status} and never received data" in str(
        refused.value
    )
    with ws.store.session() as s:
        assert s.scalars(sa.select(ErrorReport)).all() == []


@pytest.mark.parametrize("status", [states.IMPLEMENTATION, states.SUSPENDED, states.EXPIRED])
def test_a_named_subscription_that_received_data_is_reported_under(
    city: tuple[Workspace, dict[str, Principal]], status: str
) -> None:
    ws, people = city
    sid = tax_subscription_in(ws, status)

    report = file_report(ws, "OPEN", ["5"], ["name"], "名称有误", subscription_id=sid,
                         who=people["tax"])  # fmt: skip

    assert report.subscription_id == sid
