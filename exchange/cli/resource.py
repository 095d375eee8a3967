"""``exchange resource``: change and offline notices of a resource (change | offline | notices).

A provider (``--as`` a provider user of the resource's department) or the platform admin
announces; the effective date must be at least 5 working days after the notice. The notice is
sent to every subscriber through the outbox and applied by ``exchange tick`` on its date.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

from exchange.cli.options import (
    DEFAULT_CATALOG,
    AsOpt,
    AtOpt,
    CatalogOpt,
    parse_time,
    principal,
    split_list,
    workspace,
)
from exchange.cli.render import console
from exchange.kernel.errors import BadInput

app = typer.Typer(
    name="resource",
    no_args_is_help=True,
    help="Change and offline notices of a resource (5 working days' notice to subscribers).",
)
Code = Annotated[str, typer.Argument(help="Resource code.")]
Effective = Annotated[
    str, typer.Option("--effective", help="Effective date (YYYY-MM-DD, Asia/Shanghai).")
]
Why = Annotated[str, typer.Option("--reason", help="Why (and its legal or policy basis).")]


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise BadInput(f"--effective {text!r} is not a date like 2027-01-15") from None


@app.command("change")
def change(
    code: Code,
    effective: Effective,
    reason: Why,
    description: Annotated[str, typer.Option("--description", help="What changes, in words.")],
    fields: Annotated[
        str | None, typer.Option("--fields", help="The fields concerned, comma-separated.")
    ] = None,
    as_user: AsOpt = None,
    at: AtOpt = None,
    catalog: CatalogOpt = DEFAULT_CATALOG,
) -> None:
    """Announce a change of a resource on its effective date."""
    from exchange.workflow import notices

    with workspace(catalog) as ws:
        n = notices.announce(
            ws, principal(ws, as_user), "change", code, _date(effective), reason,
            description=description, fields=split_list(fields), now=parse_time(at),
        )  # fmt: skip
    console.print(n.line(), markup=False, highlight=False)


@app.command("offline")
def offline(
    code: Code,
    effective: Effective,
    reason: Why,
    replacement: Annotated[
        str | None,
        typer.Option("--replacement", help="The resource its subscribers are offered instead."),
    ] = None,
    as_user: AsOpt = None,
    at: AtOpt = None,
    catalog: CatalogOpt = DEFAULT_CATALOG,
) -> None:
    """Announce that a resource goes offline on its effective date (refused while it is
    delivered to a subscriber and no replacement is named)."""
    from exchange.workflow import notices

    with workspace(catalog) as ws:
        n = notices.announce(
            ws, principal(ws, as_user), "offline", code, _date(effective), reason,
            replacement=replacement, now=parse_time(at),
        )  # fmt: skip
    console.print(n.line(), markup=False, highlight=False)


@app.command("notices")
def list_notices(
    code: Annotated[str | None, typer.Argument(help="Resource code (default: all).")] = None,
    catalog: CatalogOpt = DEFAULT_CATALOG,
) -> None:
    """The change and offline notices (of one resource), latest effective date first."""
    from exchange.workflow import notices

    with workspace(catalog) as ws:
        found = notices.list_notices(ws, code)
    if not found:
        console.print("no notices" + (f" of resource {code}" if code else ""), markup=False)
    for n in found:
        console.print(n.line(), markup=False, highlight=False, soft_wrap=True)
