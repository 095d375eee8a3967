"""The example application form (schemas/examples/application.yaml and .json) is what the CLI
and the REST API take, by the same names: every form key is a ``subscription apply`` option
of the same name and a key of the API's body, and the example applies as it is."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import typer
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner, Result

from exchange.api import create_app
from exchange.cli.app import app
from exchange.demo.run import create_provider
from exchange.kernel.errors import BadInput, Forbidden
from exchange.kernel.settings import Settings
from exchange.store.models import Subscription
from exchange.workflow.application import Application
from exchange.workflow.users import create_user, issue_token
from exchange.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "schemas/examples"
NOT_THE_FORM = {"form", "as_user", "at", "catalog"}  # who acts, when, on which catalog


def example(suffix: str) -> dict[str, Any]:
    text = (EXAMPLES / f"application.{suffix}").read_text("utf-8")
    data = json.loads(text) if suffix == "json" else yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def apply_command() -> Any:
    """Typer's own click command of ``subscription apply``."""
    group: Any = typer.main.get_command(app)
    return group.commands["subscription"].commands["apply"]


def visible_cli_names() -> set[str]:
    """The form keys ``subscription apply`` takes: options by their flag (``--usage-days`` is
    ``usage_days``) and the resource argument."""
    names = set()
    for param in apply_command().params:
        if param.name in NOT_THE_FORM:
            continue
        if param.param_type_name == "option" and not param.hidden:
            flag = max(param.opts, key=len)
            names.add(flag.removeprefix("--").replace("-", "_"))
        elif param.param_type_name == "argument":
            names.add(param.name)
    return names


def test_the_example_form_the_cli_and_the_api_use_the_same_names() -> None:
    form_keys = set(Application.model_fields)

    assert set(example("yaml")) == form_keys
    assert example("json") == example("yaml")
    assert visible_cli_names() == form_keys, (
        f"CLI only: {visible_cli_names() - form_keys}, form only: {form_keys - visible_cli_names()}"
    )
    Application.model_validate(example("yaml"))


def test_the_old_option_names_are_hidden_aliases() -> None:
    hidden = {
        opt
        for p in apply_command().params
        if p.param_type_name == "option" and p.hidden and p.name not in NOT_THE_FORM
        for opt in p.opts
    }
    assert hidden == {"--days", "--table", "--schema"}


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The demo catalog with its provider DB, a store, and the tax bureau's requester swj."""
    (tmp_path / "c.yaml").write_text((EXAMPLES / "demo.yaml").read_text("utf-8"), "utf-8")
    create_provider(tmp_path / "provider.db", 30)
    env = {
        "EXCHANGE_HOME": str(tmp_path),
        "EXCHANGE_CATALOG": str(tmp_path / "c.yaml"),
        "EXCHANGE_DB_URL": f"sqlite:///{tmp_path / 'exchange.db'}",
        "COLUMNS": "250",
    }
    added = CliRunner().invoke(
        app, ["user", "add", "swj", "--role", "requester", "--department", "SWJ"], env=env
    )
    assert added.exit_code == 0, (added.output, added.exception)
    yield env


def cli(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(app, list(args), env=env)


def stored(env: dict[str, str]) -> list[Subscription]:
    ws = Workspace.open(env["EXCHANGE_CATALOG"], Settings.from_env())
    try:
        with ws.store.session() as s:
            return list(s.scalars(sa.select(Subscription).order_by(Subscription.id)))
    finally:
        ws.close()


@pytest.mark.parametrize("suffix", ["yaml", "json"])
def test_the_example_form_applies_through_the_cli(
    demo: dict[str, str], suffix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in demo.items():
        monkeypatch.setenv(k, v)

    applied = cli(demo, "subscription", "apply", "--form",
                  str(EXAMPLES / f"application.{suffix}"), "--as", "swj")  # fmt: skip

    assert applied.exit_code == 0, (applied.output, applied.exception)
    assert "410400-SCJG-0001" in applied.stdout and "department SWJ 税务局" in applied.stdout
    (sub,) = stored(demo)
    form = example(suffix)
    assert (sub.resource_code, sub.subscriber_node, sub.target_table) == (
        form["resource"], form["node"], form["target_table"],
    )  # fmt: skip
    assert (sub.usage_days, sub.urgency, sub.technical_notes) == (
        form["usage_days"], form["urgency"], form["technical_notes"],
    )  # fmt: skip
    assert (sub.department_code, sub.department_name) == ("SWJ", "税务局")


def test_options_override_the_form_by_the_same_names(
    demo: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in demo.items():
        monkeypatch.setenv(k, v)

    applied = cli(demo, "subscription", "apply", "--form", str(EXAMPLES / "application.yaml"),
                  "--usage-days", "30", "--target-table", "ent_copy", "--as", "swj")  # fmt: skip
    old_names = cli(demo, "subscription", "apply", "--form", str(EXAMPLES / "application.yaml"),
                    "--days", "60", "--table", "ent_old", "--as", "swj")  # fmt: skip

    assert applied.exit_code == 0 and old_names.exit_code == 0, (applied.output, old_names.output)
    assert [(s.usage_days, s.target_table) for s in stored(demo)] == [
        (30, "ent_copy"), (60, "ent_old"),
    ]  # fmt: skip


def test_a_form_for_another_department_is_refused(
    demo: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in demo.items():
        monkeypatch.setenv(k, v)
    form = EXAMPLES / "application.yaml"

    other_code = cli(demo, "subscription", "apply", "--form", str(form),
                     "--department-code", "RSJ", "--as", "swj")  # fmt: skip
    other_name = cli(demo, "subscription", "apply", "--form", str(form),
                     "--department-name", "人力资源和社会保障局", "--as", "swj")  # fmt: skip

    assert isinstance(other_code.exception, Forbidden)
    assert "may apply only for its own department 税务局 (SWJ), not RSJ" in str(
        other_code.exception
    )
    assert isinstance(other_name.exception, BadInput)
    assert (
        "department_name: '人力资源和社会保障局' is not the name of department SWJ (税务局)"
        in str(other_name.exception)
    )
    assert stored(demo) == []


def test_the_example_form_is_the_api_body(demo: dict[str, str]) -> None:
    ws = Workspace.open(
        demo["EXCHANGE_CATALOG"],
        Settings(home=Path(demo["EXCHANGE_HOME"]), db_url=demo["EXCHANGE_DB_URL"]),
    )
    try:
        with ws.store.session() as s:
            token = issue_token(s, "swj", "test")
            create_user(s, "admin", "admin", None, "test")
        # the department and its name come from the token's user and the catalog
        body = {k: v for k, v in example("json").items() if not k.startswith("department_")}
        with TestClient(create_app(ws)) as client:
            r = client.post(
                "/subscriptions", json=body, headers={"Authorization": f"Bearer {token}"}
            )
        assert r.status_code == 201, r.text
        assert (r.json()["department_code"], r.json()["department_name"]) == ("SWJ", "税务局")
    finally:
        ws.close()
