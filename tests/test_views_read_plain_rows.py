"""A page of subscriptions and one subscription's detail build no ORM object per SLA clock,
transition, evaluation or report (plain rows of the columns shown: building the objects
cost more than the rest of a page), and show the same thing as before: deadlines, history,
evaluation; an action's own view still sees what the action wrote in its transaction."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from exchange.workflow import service as svc
from exchange.workflow.models import SlaClock, SubscriptionTransition
from exchange.workflow.users import principal_of
from exchange.workspace import Workspace
from tests.workflow_setup import add_people, form, open_city


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def ws(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Workspace]:
    url = None if request.param == "sqlite" else request.getfixturevalue("pg_database")
    workspace = open_city(tmp_path, url)
    add_people(workspace)
    yield workspace
    workspace.close()


def test_a_page_and_a_detail_load_no_clock_or_transition_objects(ws: Workspace) -> None:
    with ws.store.session() as s:
        tax = principal_of(s, "tax")
    applied = [svc.apply(ws, tax, form("OPEN" if i % 2 else "COND", target_table=f"t{i}"))
               for i in range(4)]  # fmt: skip
    loaded: list[object] = []

    def seen(target: object, _context: object) -> None:
        loaded.append(target)

    for model in (SlaClock, SubscriptionTransition):
        sa.event.listen(model, "load", seen)
    try:
        total, page = svc.list_page(ws, tax, limit=50)
        detail = svc.show(ws, tax, applied[0].id)
    finally:
        for model in (SlaClock, SubscriptionTransition):
            sa.event.remove(model, "load", seen)

    assert loaded == []
    assert total == 4
    assert [v.deadlines for v in page] == [v.deadlines for v in applied]
    # an action's own view read the clock it had just started, in its transaction
    assert all(v.deadlines for v in applied)
    assert detail.deadlines == applied[0].deadlines
    assert detail.history is not None and detail.history[-1].to_state == applied[0].state
    assert detail.evaluation is None and detail.effectiveness_reports == []
    assert detail.sla == applied[0].sla == "ok"
