"""The platform admin's direct ``subscription add`` (every field unless told fewer) and its
undoing, ``subscription remove``: the subscription stays with its history and deliveries, is
never delivered again, and the removal is audited with its reason."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from exchange.demo.run import create_provider
from exchange.flow import run_resource
from exchange.kernel.errors import BadInput, Forbidden, IllegalTransition
from exchange.store.models import AuditEvent, Delivery, Subscription
from exchange.workflow import service as svc
from exchange.workflow import states as st
from exchange.workflow.grants import add_subscription
from exchange.workflow.models import SlaClock, SubscriptionTransition
from exchange.workflow.users import Principal
from exchange.workspace import Workspace
from tests import workflow_city

UNTIL = (dt.date.today() + dt.timedelta(days=300)).isoformat()
ALL_FIELDS = ["id", "uscc", "name", "legal_person", "id_card", "reg_capital", "updated_at"]


city = workflow_city.city  # the fixture (SQLite and PostgreSQL stores)
cli = workflow_city.cli


def tax_rows(ws: Workspace) -> int:
    with sqlite3.connect(Path(ws.catalog.path).parent / "tax.db") as db:
        return int(db.execute("SELECT count(*) FROM enterprise").fetchone()[0])


def test_add_without_fields_grants_every_field_as_its_help_says(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, _ = city
    shown = cli(ws, "subscription", "add", "--help").stdout
    assert "default: every field" in " ".join(shown.split())

    added = cli(ws, "subscription", "add", "OPEN", "--node", "tax_fe", "--department", "TAX",
                "--until", UNTIL)  # fmt: skip

    assert added.exit_code == 0, (added.output, added.exception)
    with ws.store.session() as s:
        assert s.scalars(sa.select(Subscription.fields)).one() == ALL_FIELDS


def test_add_with_fields_grants_those_in_the_catalogs_order(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, _ = city
    sub = add_subscription(ws, "OPEN", "tax_fe", ["name", "id"], dt.date.fromisoformat(UNTIL),
                           department="TAX")  # fmt: skip
    assert sub.fields == ["id", "name"]


def test_a_removed_subscription_keeps_its_history_and_is_never_delivered_again(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    sub = add_subscription(ws, "OPEN", "tax_fe", None, dt.date.fromisoformat(UNTIL),
                           department="TAX")  # fmt: skip
    run_resource(ws, "OPEN")
    assert tax_rows(ws) == 40

    removed = cli(
        ws, "subscription", "remove", str(sub.id), "--reason", "added for the wrong bureau"
    )

    assert removed.exit_code == 0, (removed.output, removed.exception)
    assert "[removed]" in removed.stdout
    create_provider(Path(ws.catalog.path).parent / "market.db", 60)  # 20 new rows at the source
    run_resource(ws, "OPEN")
    assert tax_rows(ws) == 40
    with ws.store.session() as s:
        kept = s.get_one(Subscription, sub.id)
        assert (kept.status, kept.decision_reason) == (st.REMOVED, "added for the wrong bureau")
        deliveries = s.scalars(sa.select(Delivery).where(Delivery.subscription_id == sub.id))
        assert len(deliveries.all()) == 1  # the first run's, still accounted for
        steps = s.scalars(
            sa.select(SubscriptionTransition.action)
            .where(SubscriptionTransition.subscription_id == sub.id)
            .order_by(SubscriptionTransition.id)
        ).all()
        assert steps == ["add", "deliver", "remove"]
        event = s.scalars(
            sa.select(AuditEvent).where(AuditEvent.kind == "subscription.remove")
        ).one()
        assert event.payload["reason"] == "added for the wrong bureau"
        open_clocks = s.scalars(
            sa.select(SlaClock).where(
                SlaClock.subscription_id == sub.id, SlaClock.stopped_at.is_(None)
            )
        ).all()
        assert open_clocks == []
    assert people  # the admin acted as the platform operator (no --as)


def test_the_removed_subscriptions_table_may_be_subscribed_again(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    until = dt.date.fromisoformat(UNTIL)
    first = add_subscription(ws, "OPEN", "tax_fe", None, until, department="TAX")
    svc.remove(ws, people["admin"], first.id, "wrong fields")

    again = add_subscription(ws, "OPEN", "tax_fe", ["id", "name"], until, department="TAX")

    assert again.id != first.id


def test_only_an_admin_removes_and_only_with_a_reason(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    sub = add_subscription(ws, "OPEN", "tax_fe", None, dt.date.fromisoformat(UNTIL),
                           department="TAX")  # fmt: skip

    with pytest.raises(Forbidden, match="only a platform admin may"):
        svc.remove(ws, people["tax"], sub.id, "not needed")
    with pytest.raises(BadInput, match="remove needs a reason"):
        svc.remove(ws, people["admin"], sub.id, "  ")
    no_reason = cli(ws, "subscription", "remove", str(sub.id))
    assert no_reason.exit_code == 2 and "--reason" in no_reason.output

    svc.remove(ws, people["admin"], sub.id, "a mistake")
    with pytest.raises(IllegalTransition, match="is in state removed"):
        svc.remove(ws, people["admin"], sub.id, "again")
