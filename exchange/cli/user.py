"""``exchange user add | token | revoke | list``: users, roles and API tokens.

These need only the metadata store ($EXCHANGE_DB_URL); ``add`` of a provider or a requester
also reads the catalog (``--catalog`` or $EXCHANGE_CATALOG), to check that the department code
is declared in it, and refuses without one: a code no catalog lists would give a user who can
never see anything. Every change is recorded as done by the platform operator who runs the
command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from exchange.cli.options import DEFAULT_CATALOG, CatalogOpt, operator, store
from exchange.cli.render import console
from exchange.kernel.errors import BadInput

app = typer.Typer(name="user", no_args_is_help=True, help="Users, roles and API tokens.")


@app.command("add")
def user_add(
    name: str,
    role: Annotated[str, typer.Option(help="admin | provider | requester")],
    department: Annotated[
        str | None,
        typer.Option(help="The department's code (the catalog's departments); not for admins."),
    ] = None,
    catalog: CatalogOpt = DEFAULT_CATALOG,
) -> None:
    """Add a user (of a department, by its code)."""
    from exchange.workflow.users import create_user

    departments = _departments(catalog) if role != "admin" else None
    with store() as st, st.session() as s:
        user = create_user(s, name, role, department, operator(), departments)
        of = f" of {department}" if department else ""
        console.print(f"user {user.id}: {name} ({role}{of})", markup=False)


def _departments(catalog: Path) -> dict[str, str]:
    """The catalog's departments, to check a user's department code against; refused when the
    catalog file is not there (the check would silently not happen)."""
    from exchange.catalog.loader import load_catalog

    if not catalog.exists():
        raise BadInput(
            f"--catalog: no catalog file {catalog}: a provider's or requester's department "
            "code is checked against the catalog's departments (give --catalog FILE or "
            "$EXCHANGE_CATALOG)"
        )
    return load_catalog(catalog).departments


@app.command("token")
def user_token(
    name: str, label: Annotated[str | None, typer.Option(help="What it is for.")] = None
) -> None:
    """Issue an API token (printed once; only its hash is stored)."""
    from exchange.workflow.users import issue_token

    with store() as st, st.session() as s:
        token = issue_token(s, name, operator(), label)
    print(token)


@app.command("revoke")
def user_revoke(name: str) -> None:
    """Revoke every API token of a user."""
    from exchange.workflow.users import revoke_tokens

    with store() as st, st.session() as s:
        n = revoke_tokens(s, name, operator())
    console.print(f"{n} token(s) of {name} revoked")


@app.command("list")
def user_list() -> None:
    """Users and their roles."""
    from exchange.workflow.users import list_users

    with store() as st, st.session() as s:
        for u in list_users(s):
            console.print(f"{u.id}  {u.name}  {u.role}  {u.department or ''}", markup=False)
