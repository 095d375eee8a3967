"""A refusal ends the same way whichever part of a request is refused.

(Exit codes come from the error's class, in ``exchange.cli.app.main``: ``BadInput`` 2,
``Forbidden`` 1; the API answers ``Forbidden`` with 403.)

From a stranger's trial: naming another department's node exited 2 (API 400) while applying
for another department exited 1 (API 403); ``--stars`` was judged before whether the user may
evaluate at all; ``user add adm --role admin --department GAJ`` printed "admin of GAJ" and
stored no department; ``tick`` said "N waiting" forever without saying why nothing was sent.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from exchange.api import create_app
from exchange.cli.app import app
from exchange.kernel.errors import BadInput, Forbidden
from exchange.workflow import service as svc
from exchange.workflow.grants import add_subscription
from exchange.workflow.models import Notification
from exchange.workflow.notifications import notify
from exchange.workflow.users import Principal
from exchange.workspace import Workspace
from tests import workflow_city
from tests.workflow_setup import form_data, tokens

UNTIL = dt.date.today() + dt.timedelta(days=300)

city = workflow_city.city
cli = workflow_city.cli


def test_another_departments_node_is_forbidden_like_another_department(
    city: tuple[Workspace, dict[str, Principal]], tmp_path: Path
) -> None:
    ws, _ = city
    path = tmp_path / "form.yaml"
    path.write_text(
        "\n".join(f"{k}: {v!r}" if not isinstance(v, list) else f"{k}: [{', '.join(v)}]"
                  for k, v in form_data("OPEN", "tax", node="hrss_fe").items()),
        "utf-8",
    )  # fmt: skip

    node = cli(ws, "subscription", "apply", "--form", str(path), "--as", "tax")
    department = cli(ws, "subscription", "apply", "--form", str(path), "--as", "tax",
                     "--node", "tax_fe", "--department-code", "HRSS")  # fmt: skip
    with TestClient(create_app(ws), raise_server_exceptions=False) as client:
        api = client.post(
            "/subscriptions",
            json=form_data("OPEN", "tax", node="hrss_fe"),
            headers={"Authorization": f"Bearer {tokens(ws)['tax']}"},
        )

    assert isinstance(department.exception, Forbidden)
    assert isinstance(node.exception, Forbidden)
    assert "node 'hrss_fe' is the front-end of" in str(node.exception)
    assert api.status_code == 403, api.text


def test_evaluate_checks_who_before_the_stars(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, _ = city
    sub = add_subscription(ws, "OPEN", "tax_fe", None, UNTIL, department="TAX")

    stranger = cli(ws, "subscription", "evaluate", str(sub.id), "--stars", "9", "--as", "hrss")
    owner = cli(ws, "subscription", "evaluate", str(sub.id), "--stars", "9", "--as", "tax")

    assert isinstance(stranger.exception, Forbidden)
    assert "may not evaluate subscription" in str(stranger.exception)
    assert isinstance(owner.exception, BadInput) and "--stars needs 5 ratings" in str(
        owner.exception
    )


def test_an_admin_belongs_to_no_department(tmp_path: Path) -> None:
    env = {"EXCHANGE_HOME": str(tmp_path), "EXCHANGE_DB_URL": f"sqlite:///{tmp_path / 'x.db'}"}
    runner = CliRunner()

    refused = runner.invoke(app, ["user", "add", "adm", "--role", "admin",
                                  "--department", "GAJ"], env=env)  # fmt: skip
    added = runner.invoke(app, ["user", "add", "adm", "--role", "admin"], env=env)
    listed = runner.invoke(app, ["user", "list"], env=env)

    assert isinstance(refused.exception, BadInput)
    assert "an admin acts for the whole platform and belongs to no department" in str(
        refused.exception
    )
    assert added.exit_code == 0 and "adm (admin)" in added.stdout
    assert listed.stdout.split() == ["1", "adm", "admin"]


@pytest.mark.parametrize("url", [None, "http://127.0.0.1:9/hook"])
def test_tick_says_when_no_webhook_is_set(
    city: tuple[Workspace, dict[str, Principal]], url: str | None
) -> None:
    ws, _ = city
    with ws.store.session() as s:
        notify(s, "test", "tax", {}, key="k1")
    env = {} if url is None else {"EXCHANGE_WEBHOOK_URL": url, "EXCHANGE_WEBHOOK_TIMEOUT": "1"}
    result = CliRunner().invoke(
        app,
        ["tick"],
        env={
            "EXCHANGE_HOME": str(ws.settings.home),
            "EXCHANGE_CATALOG": ws.catalog.path,
            "EXCHANGE_DB_URL": ws.settings.db_url,
            "EXCHANGE_WEBHOOK_URL": "",
            "COLUMNS": "250",
            **env,
        },
    )

    assert result.exit_code == 0, result.output
    unset = "$EXCHANGE_WEBHOOK_URL is not set: they wait in the outbox until it is"
    with ws.store.session() as s:  # ours, and any the tick raised itself (a calendar warning)
        waiting = s.scalar(
            sa.select(sa.func.count())
            .select_from(Notification)
            .where(Notification.sent_at.is_(None))
        )
    assert waiting >= 1
    assert f"{waiting} waiting" in result.stdout
    assert (unset in result.stdout) == (url is None)


def test_a_requester_of_another_department_is_refused_by_the_service(
    city: tuple[Workspace, dict[str, Principal]],
) -> None:
    ws, people = city
    with pytest.raises(Forbidden):
        svc.apply(ws, people["tax"], svc.Application.model_validate(
            form_data("OPEN", "tax", node="hrss_fe")))  # fmt: skip
