"""What every command group shares: option types (``--version`` among them), time and rating
parsing, the workspace and store openers (context managers: ``with workspace(catalog) as ws:``),
and how help shows what typer would show oddly (every CLI module imports this one): a flag
without a value, a date's format as ``<YYYY-MM-DD>``, an argument as ``RESOURCE``, and each
command of a group's list as one paragraph.

Light on purpose: the service modules are imported inside the openers, so that importing the
CLI (``exchange --help``) does not load the engine.
"""

from __future__ import annotations

import datetime as dt
import getpass
import inspect
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, overload

import typer
from typer.core import TyperArgument, TyperGroup, TyperOption

from exchange.kernel.errors import BadInput

if TYPE_CHECKING:
    from pydantic import BaseModel
    from typer._click import (
        Context,
        HelpFormatter,
    )  # Typer's own click, which its help renders with

    from exchange.store import Store
    from exchange.workflow.users import Principal
    from exchange.workspace import Workspace

M = TypeVar("M", bound="BaseModel")

#: The catalog file when neither ``--catalog`` nor ``$EXCHANGE_CATALOG`` names one.
DEFAULT_CATALOG = Path("catalog.yaml")

CatalogOpt = Annotated[
    Path,
    typer.Option("--catalog", "-c", envvar="EXCHANGE_CATALOG", help="Catalog YAML file."),
]
AsOpt = Annotated[
    str | None,
    typer.Option("--as", envvar="EXCHANGE_USER", help="Act as this user (its role is checked)."),
]
AtOpt = Annotated[
    str | None,
    typer.Option(
        "--at",
        hidden=True,
        help="Take the step at this time (Asia/Shanghai ISO 8601), for drills and tests.",
    ),
]
IdArg = Annotated[int, typer.Argument(help="Subscription id.")]
CatalogArg = Annotated[Path, typer.Argument(envvar="EXCHANGE_CATALOG", help="Catalog YAML file.")]


def _print_version(value: bool) -> None:
    if value:
        import exchange

        typer.echo(f"exchange {exchange.__version__}")
        raise typer.Exit()


VersionOpt = Annotated[
    bool,
    typer.Option(
        "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
]

# typer 0.29 (pinned in constraints.txt); an older or newer typer without this hook keeps its
# own rendering rather than failing at import.
_option_type = getattr(TyperOption, "display_type_rich", None)


#: How a date option's format reads in help: ``<YYYY-MM-DD>``, not ``<%Y-%m-%d>``.
_FORMAT_WORDS = {"%Y": "YYYY", "%m": "MM", "%d": "DD", "%H": "hh", "%M": "mm", "%S": "ss"}


def _no_type_for_flags(self: TyperOption, ctx: Context) -> str | None:
    """The value column of a rich help panel: empty for a flag, which takes no value; a date's
    format in words (``<YYYY-MM-DD>``).

    Typer's rich help shows every option's type, flags' included (``--full <bool>``), though
    the parser refuses ``--full true``; its plain help leaves flags bare, and so does this.
    """
    if self.is_flag or self.count or _option_type is None:
        return None
    result: str | None = _option_type(self, ctx)
    for directive, word in _FORMAT_WORDS.items():
        result = result.replace(directive, word) if result else result
    return result


# Once, for every command of every group: each CLI module imports this one.
if _option_type is not None:
    TyperOption.display_type_rich = _no_type_for_flags  # type: ignore[method-assign]


def _argument_name(self: TyperArgument) -> str:
    """An argument as usage lines, help panels and errors name it: ``RESOURCE`` (click's way)."""
    return self.metavar or (self.name or "").upper()


def _argument_usage(self: TyperArgument) -> str:
    """An argument in the usage line: ``RESOURCE`` when required, ``[RESOURCE]`` when not.

    Typer writes a required one as ``{resource}``, which reads like a list of choices.
    """
    name = _argument_name(self) if self.required else f"[{_argument_name(self)}]"
    return name if self.nargs == 1 else f"{name}..."


def _one_line_summaries(self: TyperGroup, ctx: Context, formatter: HelpFormatter) -> None:
    """A group's help, each command summed up by its first paragraph as one line of text.

    Typer's rich help keeps a docstring's line breaks in the command list (ragged lines); a
    ``short_help`` is shown as it is, so each command without one gets its first paragraph.
    """
    for command in self.commands.values():
        if command.short_help is None and command.help:
            first = inspect.cleandoc(command.help).partition("\n\n")[0]
            command.short_help = " ".join(first.split())
    _group_help(self, ctx, formatter)


# Private hooks of typer 0.29 (pinned), kept only where they exist, as above.
if hasattr(TyperArgument, "_usage_display_name") and hasattr(TyperArgument, "display_name_raw"):
    TyperArgument.display_name_raw = property(_argument_name)  # type: ignore[assignment,method-assign]
    TyperArgument._usage_display_name = _argument_usage  # type: ignore[method-assign]
_group_help = TyperGroup.format_help
TyperGroup.format_help = _one_line_summaries  # type: ignore[method-assign]


def parse_time(text: str | None, what: str = "--at") -> dt.datetime | None:
    """An ISO time given in Asia/Shanghai (unless it carries an offset) as the store's naive
    UTC; ``None`` stays ``None`` (the services then take the current time)."""
    if text is None:
        return None
    from exchange.kernel.clock import stored

    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise BadInput(f"{what} {text!r} is not an ISO 8601 time like 2026-09-30T10:00") from None
    return stored(t)


@overload
def split_list(text: str) -> list[str]: ...
@overload
def split_list(text: None) -> None: ...
@overload
def split_list(text: str | None) -> list[str] | None: ...
def split_list(text: str | None) -> list[str] | None:
    """A comma-separated option as its non-empty, stripped items (``None`` stays ``None``)."""
    if text is None:
        return None
    return [f.strip() for f in text.split(",") if f.strip()]


_SUFFIX = {1: "st", 2: "nd", 3: "rd"}


def _ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th ... 11th, 12th, 13th ... 21st ... 111th."""
    last = 0 if n % 100 in (11, 12, 13) else n % 10
    return f"{n}{_SUFFIX.get(last, 'th')}"


def _bounds(model: type[BaseModel], name: str) -> tuple[object, object]:
    """A field's ``ge`` and ``le`` (``None`` where it declares none)."""
    low = high = None
    for m in model.model_fields[name].metadata:
        low = getattr(m, "ge", low)
        high = getattr(m, "le", high)
    return low, high


def ratings(model: type[M], text: str, what: str = "--stars") -> M:
    """``text`` as ``model``: one comma-separated value for each of its fields, in order (``5,4,
    5,5,4``). Bad input names each offending value, its place and its field."""
    from pydantic import ValidationError

    parts = [p.strip() for p in text.split(",")]
    names = list(model.model_fields)
    if len(parts) != len(names):
        raise BadInput(
            f"{what} needs {len(names)} ratings ({', '.join(names)}), got {len(parts)}: {text!r}"
        )
    try:
        return model.model_validate(dict(zip(names, parts, strict=True)))
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            name = str(e["loc"][0])
            low, high = _bounds(model, name)
            place = f"the {_ordinal(names.index(name) + 1)} of {len(names)}, {name}"
            value = parts[names.index(name)] or "an empty value"
            whole = "" if e["type"].endswith("_than_equal") else "a whole number "
            problems.append(f"{value} ({place}) is not {whole}between {low} and {high}")
    raise BadInput(f"{what}: {'; '.join(problems)}")


@contextmanager
def workspace(catalog: Path) -> Iterator[Workspace]:
    """The workspace of ``catalog`` (and ``$EXCHANGE_*``), closed when the block ends."""
    from exchange.workspace import Workspace

    with Workspace.open(catalog) as ws:
        yield ws


@contextmanager
def store() -> Iterator[Store]:
    """Only the metadata store ($EXCHANGE_DB_URL), for commands that need no catalog."""
    from exchange.kernel.settings import Settings
    from exchange.store import Store

    with closing(Store(Settings.from_env().db_url)) as opened:
        yield opened


def operator() -> str:
    """Whoever runs the CLI on the server: the platform admin, named after the OS user."""
    return f"platform:{getpass.getuser()}"


def principal(ws: Workspace, name: str | None) -> Principal:
    """The user named by ``--as`` (its role as in the REST API); without one the platform admin."""
    from exchange.workflow.users import Principal, principal_of

    if not name:
        return Principal(operator(), "admin")
    with ws.store.session() as s:
        return principal_of(s, name)


def read_form(path: Path) -> dict[str, Any]:
    """A form's keys from a YAML or JSON file (JSON is YAML too): an application, an
    upstream application."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise BadInput(f"form {path}: {exc}") from None
    if not isinstance(data, dict):
        raise BadInput(f"form {path}: expected a mapping of the form's fields")
    return data
