"""``exchange calendar status`` and ``exchange calendar load``: which years the working-day
calendar knows exactly, and adding a year's official schedule (added to the ``calendar``
group of ``exchange.cli.clock`` by ``register``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from exchange.cli.options import DEFAULT_CATALOG, AsOpt, CatalogOpt, principal, workspace
from exchange.cli.render import console


def calendar_status() -> None:
    """Which years are exact (chinese-calendar, the calendar file) and which provisional."""
    from rich.table import Table

    from exchange.workflow.calendar_status import status

    report = status()
    t = Table(title=f"working-day calendar (file: {report.file or '$EXCHANGE_CALENDAR not set'})")
    for col in ("years", "schedule", "from"):
        t.add_column(col, overflow="fold")
    for y in report.years:
        t.add_row(y.years, "exact" if y.exact else "provisional", y.source)
    console.print(t)
    if report.warning:
        console.print(f"warning: {report.warning}", markup=False, highlight=False, soft_wrap=True)


def calendar_load(
    path: Annotated[Path, typer.Argument(help="A calendar file with the year(s) to add.")],
    as_user: AsOpt = None,
    catalog: CatalogOpt = DEFAULT_CATALOG,
) -> None:
    """Add the years of PATH to $EXCHANGE_CALENDAR and recompute every provisional deadline."""
    from exchange.workflow.calendar_status import load

    with workspace(catalog) as ws:
        report = load(ws.store, path, principal(ws, as_user))
    console.print(str(report), markup=False, highlight=False)


def register(group: typer.Typer) -> None:
    """``status`` and ``load`` in the ``calendar`` group."""
    group.command("status")(calendar_status)
    group.command("load")(calendar_load)
