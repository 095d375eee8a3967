"""``exchange department``: departments as data (sync | add | list | unmapped | map).

``sync`` loads the catalog's ``departments`` into the store (a code is also loaded at its
first use); ``add`` adds or changes one in the store; ``unmapped`` lists the department values
in users, subscriptions and API calls that are no department code (an older installation's
free text), each with the codes whose name it equals; ``map VALUE CODE`` replaces one by the
operator's decision. Nothing is mapped by guessing.
"""

from __future__ import annotations

from typing import Annotated

import typer

from exchange.cli.options import DEFAULT_CATALOG, CatalogOpt, operator, workspace
from exchange.cli.render import console

app = typer.Typer(
    name="department", no_args_is_help=True, help="Departments: levels, supervisors, codes."
)


def _say(text: str) -> None:
    console.print(text, markup=False, highlight=False)


@app.command("sync")
def department_sync(catalog: CatalogOpt = DEFAULT_CATALOG) -> None:
    """Load the catalog's departments into the store."""
    from exchange.accounts.departments import sync

    with workspace(catalog) as ws, ws.store.session() as s:
        changed = sync(s, ws.catalog, operator())
    _say(
        f"{len(changed)} department(s) added or changed"
        + (f": {', '.join(changed)}" if changed else "")
    )


@app.command("add")
def department_add(
    code: Annotated[str, typer.Argument(help="The code (the unified social credit code).")],
    name: Annotated[str, typer.Option(help="The department's name.")],
    level: Annotated[
        str,
        typer.Option(
            help="city_department | second_level_unit | county_bureau | county_department | "
            "public_utility"
        ),
    ] = "city_department",
    supervisor: Annotated[
        str | None, typer.Option(help="The supervising department's code (units).")
    ] = None,
    catalog: CatalogOpt = DEFAULT_CATALOG,
) -> None:
    """Add or change a department in the store."""
    from exchange.accounts.departments import add

    with workspace(catalog) as ws, ws.store.session() as s:
        add(s, ws.catalog, code, name, level, supervisor, operator())
    _say(f"department {code}: {name} ({level}" + (f", under {supervisor})" if supervisor else ")"))


@app.command("list")
def department_list(catalog: CatalogOpt = DEFAULT_CATALOG) -> None:
    """Every department, its level and supervisor."""
    from exchange.accounts.departments import listing

    with workspace(catalog) as ws, ws.store.session() as s:
        for d in listing(s, ws.catalog):
            under = f"  under {d.supervisor}" if d.supervisor else ""
            _say(f"{d.code}  {d.name}  {d.level}{under}  ({d.source})")


@app.command("unmapped")
def department_unmapped(catalog: CatalogOpt = DEFAULT_CATALOG) -> None:
    """Department values in the store that are no department code (exit 1 if any)."""
    from exchange.accounts.departments import unmapped

    with workspace(catalog) as ws, ws.store.session() as s:
        found = unmapped(s, ws.catalog)
    for u in found:
        names = f": {', '.join(u.name_of)}" if u.name_of else ""
        _say(f"{u.value!r}  in {u.table} ({u.rows} row(s))  {u.verdict}{names}")
    _say(f"{len(found)} unmapped department value(s)")
    if found:
        raise typer.Exit(1)


@app.command("map")
def department_map(
    value: Annotated[str, typer.Argument(help="The free-text value, exactly as listed.")],
    code: Annotated[str, typer.Argument(help="The department code it stands for.")],
    catalog: CatalogOpt = DEFAULT_CATALOG,
) -> None:
    """Replace a free-text department value by a code, wherever it stands (audited)."""
    from exchange.accounts.departments import map_value

    with workspace(catalog) as ws, ws.store.session() as s:
        changed = map_value(s, ws.catalog, value, code, operator())
    _say(", ".join(f"{t}: {n}" for t, n in changed.items()) + f" row(s) now {code}")
