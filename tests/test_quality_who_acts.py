"""Who may act on quality, and what each command shows to whom.

The case a stranger hit: ``EXCHANGE_USER=rsj exchange quality ticket answer 2`` answered the
public-security bureau's ticket, audited as "provider"; ``subscription list`` and ``status``
showed every department's subscriptions to any user. Here a ticket is answered only by its
resource's provider department (or an admin), closed only by the platform, an error report is
filed only by a requester whose department subscribes to the resource, every step is audited
under the real user's name, and lists show a user only what it may see.
"""

from __future__ import annotations

import datetime as dt
import getpass

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner, Result

from exchange.cli.app import app
from exchange.kernel.errors import Forbidden
from exchange.quality.error_reports import file_report
from exchange.quality.models import ErrorReport, QualityTicket
from exchange.quality.tickets import note_run
from exchange.store.models import AuditEvent
from exchange.workflow.grants import add_subscription
from exchange.workflow.users import Principal
from exchange.workspace import Workspace
from tests import workflow_city

UNTIL = dt.date.today() + dt.timedelta(days=300)
OPERATOR = f"platform:{getpass.getuser()}"

city = workflow_city.city  # the small city: SCJG provides COND and OPEN, GAJ provides POLICE


def as_user(ws: Workspace, user: str | None, *args: str) -> Result:
    """The command as ``user`` given the way the stranger did: $EXCHANGE_USER."""
    env = {
        "EXCHANGE_HOME": str(ws.settings.home),
        "EXCHANGE_CATALOG": ws.catalog.path,
        "EXCHANGE_DB_URL": ws.settings.db_url,
        "COLUMNS": "250",
    }
    if user is not None:
        env["EXCHANGE_USER"] = user
    return CliRunner().invoke(app, list(args), env=env)


def open_ticket(ws: Workspace, resource: str = "OPEN") -> int:
    with ws.store.session() as s:
        ticket = note_run(s, ws.catalog.resource(resource), "r1", {"uscc": 1}, 1, ["5"], [])
        return ticket.id


def actors(ws: Workspace, kind: str) -> list[str]:
    with ws.store.session() as s:
        return list(
            s.scalars(
                sa.select(AuditEvent.actor).where(AuditEvent.kind == kind).order_by(AuditEvent.id)
            )
        )


def subscriptions(ws: Workspace) -> dict[str, int]:
    """TAX and HRSS each subscribe to OPEN on their own node."""
    tax = add_subscription(ws, "OPEN", "tax_fe", None, UNTIL, department="TAX")
    hrss = add_subscription(ws, "OPEN", "hrss_fe", None, UNTIL, department="HRSS")
    return {"tax": tax.id, "hrss": hrss.id}


ANSWER = ("--resolution", "accepted", "--reason", "数据无误")


@pytest.mark.parametrize("user", ["hrss", "police", "tax"])
def test_only_the_provider_department_answers_a_ticket(
    city: tuple[Workspace, dict[str, Principal]], user: str
) -> None:
    ws, _ = city
    ticket = open_ticket(ws)

    refused = as_user(ws, user, "quality", "ticket", "answer", str(ticket), *ANSWER)

    assert isinstance(refused.exception, Forbidden)
    assert f"may not answer ticket {ticket} of resource OPEN" in str(refused.exception)
    assert "市场监督管理局 (SCJG)" in str(refused.exception)
    with ws.store.session() as s:
        assert s.get_one(QualityTicket, ticket).status == "open"


def test_permission_is_checked_before_the_answer(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, _ = city
    ticket = open_ticket(ws)

    refused = as_user(ws, "hrss", "quality", "ticket", "answer", str(ticket),
                      "--resolution", "maybe", "--reason", "x")  # fmt: skip

    assert isinstance(refused.exception, Forbidden)


def test_the_provider_answers_and_the_platform_closes_under_their_own_names(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, _ = city
    ticket = str(open_ticket(ws))

    answered = as_user(ws, "market", "quality", "ticket", "answer", ticket, *ANSWER)
    by_provider = as_user(ws, "market", "quality", "ticket", "close", ticket)
    closed = as_user(ws, "admin", "quality", "ticket", "close", ticket)

    assert answered.exit_code == 0, answered.output
    assert isinstance(by_provider.exception, Forbidden)
    assert "may not close ticket" in str(by_provider.exception)
    assert closed.exit_code == 0, closed.output
    assert actors(ws, "quality.ticket.answered") == ["market"]
    assert actors(ws, "quality.ticket.closed") == ["admin"]
    with ws.store.session() as s:
        assert s.get_one(QualityTicket, int(ticket)).answered_by == "market"


def test_without_a_user_the_operator_acts_and_is_audited_as_such(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, _ = city
    ticket = str(open_ticket(ws))

    assert as_user(ws, None, "quality", "ticket", "answer", ticket, *ANSWER).exit_code == 0
    assert as_user(ws, None, "quality", "ticket", "close", ticket).exit_code == 0

    assert actors(ws, "quality.ticket.answered") == [OPERATOR]
    assert actors(ws, "quality.ticket.closed") == [OPERATOR]


REPORT = ("--keys", "5", "--fields", "name", "--description", "名称有误")


def test_an_error_report_is_filed_by_a_subscribing_requester_as_itself(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, _ = city
    subs = subscriptions(ws)

    provider = as_user(ws, "market", "quality", "error-report", "add", "OPEN", *REPORT)
    others = as_user(ws, "hrss", "quality", "error-report", "add", "OPEN", *REPORT,
                     "--subscription", str(subs["tax"]))  # fmt: skip
    none_held = as_user(ws, "tax", "quality", "error-report", "add", "COND", "--keys", "5",
                        "--fields", "name", "--description", "x")  # fmt: skip
    filed = as_user(ws, "tax", "quality", "error-report", "add", "OPEN", *REPORT,
                    "--reporter", "someone else")  # fmt: skip

    for refused in (provider, others, none_held):
        assert isinstance(refused.exception, Forbidden)
    assert "holds no subscription to it" in str(none_held.exception)
    assert "belongs to department TAX" in str(others.exception)
    assert filed.exit_code == 0, filed.output
    with ws.store.session() as s:
        report = s.scalars(sa.select(ErrorReport)).one()
        assert (report.reporter, report.subscription_id) == ("tax", subs["tax"])
    assert actors(ws, "quality.error_report.filed") == ["tax"]


def test_an_error_report_is_answered_by_the_provider_and_closed_by_its_requester(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    subs = subscriptions(ws)
    report = file_report(ws, "OPEN", ["5"], ["name"], "名称有误", who=people["tax"])
    rid = str(report.id)
    assert report.subscription_id == subs["tax"]

    by_requester = as_user(ws, "tax", "quality", "error-report", "answer", rid, *ANSWER)
    answered = as_user(ws, "market", "quality", "error-report", "answer", rid, *ANSWER)
    by_other = as_user(ws, "hrss", "quality", "error-report", "close", rid)
    closed = as_user(ws, "tax", "quality", "error-report", "close", rid)

    assert isinstance(by_requester.exception, Forbidden)
    assert answered.exit_code == 0, answered.output
    assert isinstance(by_other.exception, Forbidden)
    assert closed.exit_code == 0, closed.output
    assert actors(ws, "quality.error_report.answered") == ["market"]
    assert actors(ws, "quality.error_report.closed") == ["tax"]


def test_subscription_list_and_status_show_a_user_only_what_it_may_see(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, _ = city
    subs = subscriptions(ws)

    seen = {
        user: (as_user(ws, user, "subscription", "list").stdout,
               as_user(ws, user, "status").stdout)
        for user in ("hrss", "tax", "police", "market", None)
    }  # fmt: skip

    def shows(text: str, node: str) -> bool:
        return f"{node}.enterprise" in text or node in text

    assert subs["tax"] != subs["hrss"]
    for listing, status in (seen["hrss"],):
        assert shows(listing, "hrss_fe") and not shows(listing, "tax_fe")
        assert shows(status, "hrss_fe") and not shows(status, "tax_fe")
    for listing, status in (seen["tax"],):
        assert shows(listing, "tax_fe") and not shows(listing, "hrss_fe")
        assert shows(status, "tax_fe") and not shows(status, "hrss_fe")
    for listing, status in (seen["police"],):  # GAJ provides POLICE only
        assert not shows(listing, "tax_fe") and not shows(listing, "hrss_fe")
        assert not shows(status, "tax_fe") and not shows(status, "hrss_fe")
    for listing, status in (seen["market"], seen[None]):  # OPEN's provider; the operator
        assert shows(listing, "tax_fe") and shows(listing, "hrss_fe")
        assert shows(status, "tax_fe") and shows(status, "hrss_fe")
