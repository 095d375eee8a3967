"""What a stranger trips over on the command line: help that shows values flags do not take,
no ``--version``, messages that do not name the bad value, keys of the wrong shape, a tick in
the future that changes things for good, and a catalog argument that ignores
``$EXCHANGE_CATALOG``."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from click.testing import Result
from typer.testing import CliRunner

from exchange.cli.app import app
from exchange.cli.options import ratings
from exchange.kernel.clock import local_now
from exchange.kernel.errors import BadInput
from exchange.workflow.service import Stars
from tests.test_cli import exchange as exchange_process
from tests.test_workflow_cli import FORM

ROOT = Path(__file__).resolve().parents[1]


def cli(home: Path, *args: str) -> Result:
    """The command in this process, against ``home`` (its catalog ``c.yaml``, its own store)."""
    env = {
        "EXCHANGE_HOME": str(home),
        "EXCHANGE_CATALOG": str(home / "c.yaml"),
        "EXCHANGE_DB_URL": None,
        "COLUMNS": "250",
    }
    return CliRunner().invoke(app, list(args), env=env)  # type: ignore[arg-type]


def ok(home: Path, *args: str) -> str:
    result = cli(home, *args)
    assert result.exit_code == 0 and result.exception is None, (result.output, result.exception)
    return result.stdout


def refused(home: Path, *args: str) -> str:
    """The message of the bad input the command refuses (``exchange`` exits 2 with it)."""
    result = cli(home, *args)
    assert isinstance(result.exception, BadInput), (result.output, result.exception)
    return str(result.exception)


# -- help --------------------------------------------------------------------------------------


def commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command and group of the tree (Typer's own click), with the words that reach it."""
    yield path, command
    if hasattr(command, "list_commands"):
        ctx = command.context_class(command)
        for name in command.list_commands(ctx):
            yield from commands(command.get_command(ctx, name), (*path, name))


def test_no_flag_shows_a_value_in_any_commands_help(tmp_path: Path) -> None:
    tree = list(commands(typer.main.get_command(app)))
    assert len(tree) > 40  # every group's commands are walked, not just the root's
    flags = 0
    for path, command in tree:
        shown = ok(tmp_path, *path, "--help")
        help_option = command.get_help_option(command.context_class(command))
        for param in [*command.params, help_option]:
            if param.param_type_name != "option" or param.hidden:
                continue
            name = max(param.opts, key=len)
            row = next(r for r in shown.splitlines() if re.match(rf"│\s+(\*\s+)?{name}\b", r))
            typed = re.search(rf"{name}\b\S*(\s+-\w\b)?\s+<[^>]*>", row)  # --a,--b -a <type>
            where = f"exchange {' '.join(path)} --help: {row.strip()}"
            if param.is_flag or param.count:
                assert typed is None, where
                flags += 1
            else:  # an option that takes a value still says what kind
                assert typed is not None, where
    assert flags > len(tree)  # --help everywhere, and the commands' own flags


def test_a_flag_given_a_value_is_refused_the_way_its_help_says(tmp_path: Path) -> None:
    shown = ok(tmp_path, "run", "--help")
    assert re.search(r"--full\s+Re-extract", shown)
    assert cli(tmp_path, "run", "R", "--full", "true").exit_code == 2  # no value after a flag


# -- version -----------------------------------------------------------------------------------


def test_exchange_version_prints_the_installed_version(tmp_path: Path) -> None:
    out = exchange_process(tmp_path, "--version")

    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"exchange {version('city-exchange')}"


# -- messages that name the bad value ----------------------------------------------------------


def test_a_star_out_of_range_is_named_with_its_place() -> None:
    with pytest.raises(BadInput) as bad:
        ratings(Stars, "5,4,6,5,4")
    assert str(bad.value) == "--stars: 6 (the 3rd of 5, timeliness) is not between 1 and 5"

    with pytest.raises(BadInput) as bad:
        ratings(Stars, "5,x,0,5,4.5")
    assert str(bad.value) == (
        "--stars: x (the 2nd of 5, data_quality) is not a whole number between 1 and 5; "
        "0 (the 3rd of 5, timeliness) is not between 1 and 5; "
        "4.5 (the 5th of 5, review_efficiency) is not a whole number between 1 and 5"
    )


def test_an_empty_star_is_not_skipped_into_the_next_place() -> None:
    with pytest.raises(BadInput) as bad:
        ratings(Stars, "5,,4,5,4")
    assert "an empty value (the 2nd of 5, data_quality)" in str(bad.value)
    with pytest.raises(BadInput, match=r"needs 5 ratings .*got 4: '5,4,5,5'"):
        ratings(Stars, "5,4,5,5")
    assert ratings(Stars, " 5, 4,5,5 ,4").data_quality == 4


# `subscription evaluate` with a star out of range: tests/test_workflow_cli.py (it needs a
# subscription awaiting evaluation, and permission is checked before the stars).


# -- error-report keys in the shape of the primary key -----------------------------------------

KEYS_CATALOG = """\
version: 1
nodes:
  - {name: fe, kind: sqlite, connection: {path: fe.db}}
resources:
  - code: ANNUAL
    name: annual reports
    kind: table
    provider: fe
    share: unconditional
    source: {table: annual}
    primary_key: [uscc, year]
    fields:
      - {name: uscc, type: varchar, length: 18, nullable: false}
      - {name: year, type: integer, nullable: false}
      - {name: revenue, type: decimal, precision: 18, scale: 2}
  - code: BY_ID
    name: by id
    kind: table
    provider: fe
    share: unconditional
    source: {table: by_id}
    primary_key: [id]
    fields:
      - {name: id, type: bigint, nullable: false}
      - {name: name, type: varchar, length: 50}
  - code: BY_CODE
    name: by code
    kind: table
    provider: fe
    share: unconditional
    source: {table: by_code}
    primary_key: [code]
    fields:
      - {name: code, type: varchar, length: 50, nullable: false}
      - {name: name, type: varchar, length: 50}
"""


def report(home: Path, resource: str, keys: str, field: str = "name") -> Result:
    return cli(
        home, "quality", "error-report", "add", resource, "--keys", keys,
        "--fields", field, "--description", "wrong",
    )  # fmt: skip


def test_an_error_report_key_must_have_the_shape_of_the_primary_key(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(KEYS_CATALOG, "utf-8")

    short = report(tmp_path, "ANNUAL", "91410400MA|2026,91410400MB", "revenue")
    assert isinstance(short.exception, BadInput)
    assert str(short.exception) == (
        "resource ANNUAL: row key '91410400MB' has 1 part, not 2 — its primary key is "
        "(uscc, year): write each key as uscc|year"
    )
    long = report(tmp_path, "ANNUAL", "91410400MA|2026|x,91410400MB|twenty", "revenue")
    assert "row keys '91410400MA|2026|x' has 3 parts, not 2; " in str(long.exception)
    assert "'91410400MB|twenty' has 'twenty' for year, an integer" in str(long.exception)
    by_id = report(tmp_path, "BY_ID", "5|6")
    assert str(by_id.exception) == (
        "resource BY_ID: row key '5|6' has 2 parts, not 1 — its primary key is id (bigint): "
        "write each key as one id value"
    )

    first = report(tmp_path, "ANNUAL", "91410400MA|2026", "revenue")
    assert first.exit_code == 0 and "error report 1 on ANNUAL" in first.stdout  # none filed before
    assert report(tmp_path, "BY_ID", "5,-6").exit_code == 0
    assert report(tmp_path, "BY_CODE", "A|B").exit_code == 0  # a text key may hold a '|'
    listed = ok(tmp_path, "quality", "error-report", "list")
    assert "91410400MA|2026" in listed and "A|B" in listed


def test_the_key_shape_is_in_the_commands_help(tmp_path: Path) -> None:
    shown = ok(tmp_path, "quality", "error-report", "add", "--help")
    assert "joined by '|'" in shown and "91410400MA|2026" in shown


# -- tick in the future ------------------------------------------------------------------------


def conditional_application(home: Path) -> None:
    """One application under review, whose 5-working-day review deadline has not passed."""
    doc = yaml.safe_load((ROOT / "schemas/examples/demo.yaml").read_text("utf-8"))
    for resource in doc["resources"]:
        resource["share"] = "conditional"
    (home / "c.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True), "utf-8")
    # the tax bureau, by its code in the catalog where the catalog lists departments
    department = "SWJ" if "SWJ" in doc.get("departments", {}) else FORM["department_code"]
    form = {**FORM, "department_code": department}
    (home / "form.yaml").write_text(yaml.safe_dump(form, allow_unicode=True), "utf-8")
    ok(home, "user", "add", "swj", "--role", "requester", "--department", department)
    applied = ok(home, "subscription", "apply", "410400-SCJG-0001",
                 "--form", str(home / "form.yaml"), "--as", "swj")  # fmt: skip
    assert "[under_review]" in applied


def test_a_tick_later_than_the_clock_needs_yes_and_says_it_is_permanent(tmp_path: Path) -> None:
    conditional_application(tmp_path)
    later = (local_now() + dt.timedelta(days=30)).isoformat(timespec="minutes")

    message = refused(tmp_path, "tick", "--now", later)
    assert message.startswith(f"--now {later} is 72")  # 720 h or so: 30 days later
    assert "h later than the clock" in message and "permanent" in message
    assert "add --yes" in message
    assert "[under_review]" in ok(tmp_path, "subscription", "show", "1")  # nothing was done

    done = cli(tmp_path, "tick", "--now", later, "--yes")
    assert done.exit_code == 0, done.output
    assert "rejected on timeout 1" in done.stdout
    assert "permanent" in done.stderr
    assert "[rejected]" in ok(tmp_path, "subscription", "show", "1")


def test_a_tick_at_or_before_the_clock_needs_no_yes(tmp_path: Path) -> None:
    conditional_application(tmp_path)
    earlier = (local_now() - dt.timedelta(hours=1)).isoformat(timespec="minutes")

    done = cli(tmp_path, "tick", "--now", earlier)

    assert done.exit_code == 0 and done.exception is None, done.output
    assert "permanent" not in done.output
    assert "[under_review]" in ok(tmp_path, "subscription", "show", "1")


def test_the_refused_future_tick_exits_2(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(KEYS_CATALOG, "utf-8")
    out = exchange_process(tmp_path, "tick", "--now", "2099-01-01T00:00")
    assert out.returncode == 2 and "add --yes" in out.stderr


# -- catalog validate and $EXCHANGE_CATALOG ----------------------------------------------------


def test_catalog_validate_defaults_to_exchange_catalog(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(KEYS_CATALOG, "utf-8")

    shown = ok(tmp_path, "catalog", "validate")

    assert f"{tmp_path / 'c.yaml'}: valid (1 nodes, 3 resources)" in shown
    other = tmp_path / "other.yaml"
    other.write_text(KEYS_CATALOG.replace("  - code: BY_CODE", "  - code: BY_CODE_X"), "utf-8")
    assert f"{other}: valid" in ok(tmp_path, "catalog", "validate", str(other))
