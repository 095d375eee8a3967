"""``exchange user add | token | revoke | list``: users, roles and API tokens.

These need only the metadata store ($EXCHANGE_DB_URL), no catalog; every change is recorded
as done by the platform operator who runs the command.
"""

from __future__ import annotations

from typing import Annotated

import typer

from exchange.cli.options import operator, store
from exchange.cli.render import console

app = typer.Typer(name="user", no_args_is_help=True, help="Users, roles and API tokens.")


@app.command("add")
def user_add(
    name: str,
    role: Annotated[str, typer.Option(help="admin | provider | requester")],
    department: Annotated[
        str | None, typer.Option(help="Provider: the catalog node's department; requester: code.")
    ] = None,
) -> None:
    """Add a user."""
    from exchange.workflow.users import create_user

    with store() as st, st.session() as s:
        user = create_user(s, name, role, department, operator())
        of = f" of {department}" if department else ""
        console.print(f"user {user.id}: {name} ({role}{of})", markup=False)


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
