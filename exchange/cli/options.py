"""What every command group shares: option types, time parsing, and the workspace and store
openers (context managers: ``with workspace(catalog) as ws:``).

Light on purpose: the service modules are imported inside the openers, so that importing the
CLI (``exchange --help``) does not load the engine.
"""

from __future__ import annotations

import datetime as dt
import getpass
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, overload

import typer

from exchange.kernel.errors import BadInput

if TYPE_CHECKING:
    from exchange.store import Store
    from exchange.workflow.users import Principal
    from exchange.workspace import Workspace

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
