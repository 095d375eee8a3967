"""What a stranger reads on the command line says what it means: usage lines that name their
arguments (``RESOURCE``, not ``{resource}``) and dates (``YYYY-MM-DD``), command lists in
whole lines, counted and articled words, a retention period as it was given, prune lines
that are true, file subscriptions shown by their directory, a target table asked for where it
is needed and refused where it is not, a value that is not an integer called so, a missing
source column named with its table and field, and an example form that applies after the
demo."""

from __future__ import annotations

import datetime as dt
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa
import typer
from click.testing import Result
from typer.testing import CliRunner

from connectors.cast_reasons import plain_reason
from exchange.cli.app import app
from exchange.cli.prune import period
from exchange.flow import run_resource
from exchange.kernel.errors import BadInput, DataError
from exchange.kernel.settings import Settings, parse_retention
from exchange.kernel.text import a_or_an, plural
from exchange.quality.tickets import answer_ticket, close_ticket, list_tickets
from exchange.store.models import Run
from exchange.workflow.application import parse_application
from exchange.workflow.grants import add_subscription
from exchange.workspace import Workspace
from tests.conftest import catalog_yaml
from tests.sources import create_source, registry
from tests.test_cli_papercuts import commands
from tests.test_quality_flow import FAR, GRANT_A, SQLITE_NODES, damage, resource_yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "schemas/examples"


def invoke(env: dict[str, str], *args: str, columns: int = 250) -> Result:
    """The command in this process (Typer's runner), the terminal ``columns`` wide."""
    full = {"COLUMNS": str(columns), "EXCHANGE_DB_URL": None, **env}
    return CliRunner().invoke(app, list(args), env=full)  # type: ignore[arg-type]


def home_env(home: Path) -> dict[str, str]:
    return {"EXCHANGE_HOME": str(home), "EXCHANGE_CATALOG": str(home / "catalog.yaml")}


def help_of(*path: str, columns: int = 250) -> str:
    result = invoke({}, *path, "--help", columns=columns)
    assert result.exit_code == 0, result.output
    return result.stdout


# -- help: usage lines, dates, command lists ---------------------------------------------------


def test_a_required_argument_reads_as_its_name_not_as_a_list_of_choices() -> None:
    usages = [
        line
        for path, _ in commands(typer.main.get_command(app))
        for line in help_of(*path).splitlines()
        if "Usage:" in line
    ]

    assert len(usages) > 40
    assert [u for u in usages if "{" in u] == []
    assert " run [OPTIONS] RESOURCE " in help_of("run")  # the runner calls itself "root"
    assert " subscription list [OPTIONS] [RESOURCE] " in help_of("subscription", "list")
    missing = invoke({}, "run")
    assert missing.exit_code == 2 and "Missing argument 'RESOURCE'" in missing.output


def test_a_date_option_shows_its_format_as_a_reader_writes_it() -> None:
    for path, _ in commands(typer.main.get_command(app)):
        assert "%Y" not in help_of(*path), path

    (until,) = [r for r in help_of("subscription", "add").splitlines() if "--until" in r]
    (found,) = [
        r for r in help_of("quality", "error-report", "add").splitlines() if "--discovered" in r
    ]
    assert "<YYYY-MM-DD>" in until and "<YYYY-MM-DD>" in found


def first_paragraph(command: Any) -> str:
    return " ".join(inspect.cleandoc(command.help or "").partition("\n\n")[0].split())


def test_a_group_lists_each_command_with_its_first_paragraph_as_one_line() -> None:
    groups = [(p, c) for p, c in commands(typer.main.get_command(app)) if hasattr(c, "commands")]
    wrapped = [
        name
        for _, group in groups
        for name, c in group.commands.items()
        if "\n" in inspect.cleandoc(c.help or "")
    ]
    assert wrapped, "some docstring spans lines (or this checks nothing)"
    for path, group in groups:
        shown = [
            " ".join(line.strip("│ ").split()) for line in help_of(*path, columns=400).splitlines()
        ]
        for name, command in group.commands.items():
            if command.hidden or not command.help:
                continue
            assert f"{name} {first_paragraph(command)}" in shown, (path, name, shown)


# -- words ---------------------------------------------------------------------------------------


def test_a_kind_or_a_type_gets_its_article_and_a_count_its_plural() -> None:
    assert [a_or_an(w) for w in ("integer", "urgent", "api", "table", "critical", "unique")] == [
        "an integer", "an urgent", "an api", "a table", "a critical", "a unique",
    ]  # fmt: skip
    assert [plural(n, "row") for n in (0, 1, 2, 1000)] == [
        "0 rows",
        "1 row",
        "2 rows",
        "1,000 rows",
    ]


@pytest.mark.parametrize(
    ("urgency", "words"), [("critical", "a critical"), ("urgent", "an urgent")]
)
def test_an_urgent_application_without_a_reason_is_named_with_its_article(
    urgency: str, words: str
) -> None:
    form = {
        "resource": "R", "node": "n", "fields": ["id"], "purpose": "核验",
        "legal_basis": "法", "contact_name": "李明", "contact_phone": "0375-2661234",
        "contact_email": "a@b.cn", "system_name": "s", "system_ip": "10.0.0.1",
        "deploy_location": "d", "usage_days": 30, "urgency": urgency,
    }  # fmt: skip
    with pytest.raises(BadInput, match=f"{words} request needs urgency_reason"):
        parse_application(form)


# -- EXCHANGE_RETENTION and exchange prune --------------------------------------------------------


def test_a_retention_period_too_long_for_a_date_is_bad_input_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert parse_retention("36500d") == dt.timedelta(days=36500)
    monkeypatch.setenv("EXCHANGE_RETENTION", "99999999d")
    with pytest.raises(BadInput, match=r"^EXCHANGE_RETENTION: '99999999d' is longer than .*36500d"):
        Settings.from_env()

    (tmp_path / "catalog.yaml").write_text(catalog_yaml(SQLITE_NODES, resource_yaml()), "utf-8")
    result = invoke({**home_env(tmp_path), "EXCHANGE_RETENTION": "99999999d"}, "prune")
    assert isinstance(result.exception, BadInput), result.exception


def test_a_retention_period_is_shown_as_it_is_written() -> None:
    assert [period(dt.timedelta(hours=h)) for h in (0, 36, 168, 24)] == ["0h", "36h", "7d", "1d"]


@pytest.fixture
def reviewed_run(
    tmp_path: Path, make_workspace: Callable[[str], Workspace]
) -> tuple[Workspace, str]:
    """A finished run whose quarantine file still holds raw rows that no open ticket lists
    (its ticket was closed while the run was still going)."""
    rows, _ = damage(registry(range(1, 201)))
    create_source(f"sqlite:///{tmp_path / 'src.db'}", rows)
    ws = make_workspace(catalog_yaml(SQLITE_NODES, resource_yaml()))
    add_subscription(ws, "ENT", "a", GRANT_A, FAR, target_table="ent")
    run_id = run_resource(ws, "ENT").run_id

    def status(value: str) -> None:
        with ws.store.session() as s:
            run = s.get(Run, run_id)
            assert run is not None
            run.status = value

    status("running")  # a ticket closed now leaves the rows for the next prune
    with ws.store.session() as s:
        (ticket,) = list_tickets(s, "ENT")
        answer_ticket(s, ticket.id, "accepted", "数据无误")
    with ws.store.session() as s:
        close_ticket(s, ticket.id)
    status("succeeded")
    return ws, run_id


def prune_cli(ws: Workspace, *args: str, **env: str) -> str:
    result = invoke(
        {"EXCHANGE_HOME": str(ws.settings.home), **env},
        "prune", *args, "--catalog", str(ws.catalog.path),
    )  # fmt: skip
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def test_prune_says_a_quarantine_file_is_reduced_because_no_open_ticket_lists_its_run(
    reviewed_run: tuple[Workspace, str],
) -> None:
    ws, run_id = reviewed_run

    out = prune_cli(ws)  # within the retention period: only reduced

    assert f"reduced run {run_id}'s quarantine file to the masked reasons (no open ticket" in out
    assert "tickets are closed" not in out


def test_prune_does_not_say_it_reduced_a_run_it_removed_in_the_same_command(
    reviewed_run: tuple[Workspace, str],
) -> None:
    ws, run_id = reviewed_run

    out = prune_cli(ws, EXCHANGE_RETENTION="0h")

    assert f"removed run {run_id} (ENT, succeeded)" in out
    assert f"reduced run {run_id}" not in out
    assert "prune (retention 0h): removed 1 run, " in out


# -- subscriptions: where a file subscription lands, the target table ------------------------------

FILE_RESOURCE = """\
- code: F1
  name: 代码表
  kind: file
  provider: gaj_files
  share: unconditional
  files: {path: out, pattern: '*.csv', format: csv}
  primary_key: [code]
  fields:
    - {name: code, type: integer, nullable: false}
    - {name: label, type: varchar, length: 20}
"""
FILE_NODES = {
    "gaj_files": ("local", "{path: gaj}"),
    "swj_files": ("local", "{path: swj}"),
    "tax_fe": ("sqlite", "{path: tax.db}"),
}


@pytest.fixture
def file_home(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "gaj/out").mkdir(parents=True)
    (tmp_path / "swj").mkdir()
    (tmp_path / "catalog.yaml").write_text(catalog_yaml(FILE_NODES, FILE_RESOURCE), "utf-8")
    return home_env(tmp_path)


def add(env: dict[str, str], *args: str) -> Result:
    until = (dt.date.today() + dt.timedelta(days=300)).isoformat()
    return invoke(env, "subscription", "add", "F1", *args, "--until", until)


def test_a_file_subscription_is_listed_and_shown_by_its_node_and_directory(
    file_home: dict[str, str],
) -> None:
    added = add(file_home, "--node", "swj_files", "--dir", "in")
    assert added.exit_code == 0, (added.output, added.exception)

    listed = invoke(file_home, "subscription", "list").stdout
    shown = invoke(file_home, "subscription", "show", "1").stdout

    assert "swj_files:/in" in listed and "swj_files.files" not in listed
    assert "  to swj_files:/in  " in shown
    assert "applicant None" not in shown  # added by the platform: nobody applied


def test_a_file_resource_on_a_database_node_needs_target_table_and_says_so(
    file_home: dict[str, str],
) -> None:
    refused = add(file_home, "--node", "tax_fe")

    assert isinstance(refused.exception, BadInput)
    message = str(refused.exception)
    assert "no source table to name a target table after" in message
    assert "give node 'tax_fe' one with --target-table" in message and "''" not in message
    assert add(file_home, "--node", "tax_fe", "--target-table", "codes").exit_code == 0


def test_target_table_on_a_file_node_is_refused_not_ignored(file_home: dict[str, str]) -> None:
    refused = add(file_home, "--node", "swj_files", "--target-table", "codes")

    assert isinstance(refused.exception, BadInput)
    assert str(refused.exception) == (
        "--target-table is for database nodes; file node 'swj_files' takes --dir"
    )
    assert invoke(file_home, "subscription", "list").stdout.count("F1") == 0


# -- source values and columns -------------------------------------------------------------------


def test_a_value_that_is_not_an_integer_is_called_so() -> None:
    int32 = pa.int32()
    assert plain_reason(int32, "abc", "The string 'abc' is not a valid decimal128 number") == (
        "not an integer"
    )
    assert plain_reason(int32, "2.5", "x") == "not an integer (it has a fraction)"
    assert plain_reason(pa.int16(), "40000", "x") == "out of range for smallint (-32,768 to 32,767)"
    assert plain_reason(pa.decimal128(10, 2), "1.234", "x") == (
        "has more than 2 digits after the point (decimal(10,2))"
    )
    assert plain_reason(pa.date32(), "2021-02-30", "x") == "not a date (YYYY-MM-DD)"


def test_a_tabular_file_with_text_in_an_integer_field_says_not_an_integer(
    file_home: dict[str, str],
) -> None:
    home = Path(file_home["EXCHANGE_HOME"])
    assert add(file_home, "--node", "tax_fe", "--target-table", "codes").exit_code == 0
    (home / "gaj/out/h.csv").write_text("code,label\nabc,x\n", "utf-8")

    ran = invoke(file_home, "run", "F1")

    assert isinstance(ran.exception, BadInput), (ran.output, ran.exception)
    assert "'abc'" in str(ran.exception) and "not an integer" in str(ran.exception)
    assert "decimal128" not in str(ran.exception)


TABLE = """\
- code: R1
  name: 企业
  kind: table
  provider: src
  share: unconditional
  source: {table: company}
  primary_key: [id]
  fields:
    - {name: id, type: bigint, nullable: false}
    - {name: name, type: varchar, length: 50}
    - {name: remark, type: varchar, length: 50}
"""


def source_without_remark(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE company (id bigint PRIMARY KEY, name varchar(50))"))
        conn.execute(sa.text("INSERT INTO company VALUES (1, 'a')"))
    engine.dispose()


def missing_column_error(ws: Workspace) -> str:
    add_subscription(ws, "R1", "dst", ["id", "name", "remark"], FAR, target_table="company")
    with pytest.raises(DataError) as err:
        run_resource(ws, "R1")
    return str(err.value)


def test_a_missing_source_column_is_named_with_its_table_and_field(
    tmp_path: Path, make_workspace: Callable[[str], Workspace]
) -> None:
    source_without_remark(f"sqlite:///{tmp_path / 'src.db'}")
    nodes = {"src": ("sqlite", "{path: src.db}"), "dst": ("sqlite", "{path: dst.db}")}

    message = missing_column_error(make_workspace(catalog_yaml(nodes, TABLE)))

    assert message == (
        "resource R1: source table company on node 'src' has no column 'remark' "
        "(field remark); its columns are: id, name"
    )


def test_a_missing_column_of_an_arrow_native_source_is_named_not_the_drivers_text(
    pg_database: str, make_workspace: Callable[[str], Workspace], monkeypatch: pytest.MonkeyPatch
) -> None:
    source_without_remark(pg_database)
    monkeypatch.setenv("SRC_URL", pg_database)
    nodes = {"src": ("postgresql", "{env: SRC_URL}"), "dst": ("sqlite", "{path: dst.db}")}

    message = missing_column_error(make_workspace(catalog_yaml(nodes, TABLE)))

    assert "source table company on node 'src' has no column 'remark' (field remark)" in message
    assert "NOT_FOUND" not in message and "prepare" not in message


# -- the example form after the demo -------------------------------------------------------------


def test_the_example_form_applies_as_it_is_after_the_demo(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    ran = invoke({}, "demo", "--rows", "2000", "--home", str(demo))
    assert ran.exit_code == 0, (ran.output, ran.exception)
    env = {**home_env(demo), "EXCHANGE_DB_URL": f"sqlite:///{demo / 'exchange.db'}"}
    assert (
        invoke(env, "user", "add", "swj", "--role", "requester", "--department", "SWJ").exit_code
        == 0
    )

    applied = invoke(
        env, "subscription", "apply", "--form", str(EXAMPLES / "application.yaml"), "--as", "swj"
    )

    assert applied.exit_code == 0, (applied.output, applied.exception)
    assert "to tax_fe.enterprise_check " in applied.stdout  # the demo's tax_fe.enterprise is taken
