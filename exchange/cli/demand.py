"""``exchange demand``: data demands (file | assign | answer | close | list | show).

A requester (``--as``) files a demand for data nobody shares yet; the platform admin assigns
it to the department that owns the data; that department's provider answers within 5 working
days (an existing resource, a publication by a date, or a refusal with its reason); the
requester closes it. Roles are checked exactly as in the REST API.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from exchange.cli.options import (
    DEFAULT_CATALOG,
    AsOpt,
    AtOpt,
    CatalogOpt,
    parse_time,
    principal,
    workspace,
)
from exchange.cli.render import console
from exchange.kernel.errors import BadInput

if TYPE_CHECKING:
    from exchange.workflow.demands import DemandView
    from exchange.workflow.users import Principal
    from exchange.workspace import Workspace

app = typer.Typer(
    name="demand",
    no_args_is_help=True,
    help="Data demands: data nobody shares yet, answered within 5 working days.",
)
DemandArg = Annotated[int, typer.Argument(help="Demand id.")]


def _act(catalog: Path, as_user: str | None, step: Callable[[Workspace, Principal], DemandView],
         detail: bool = False) -> None:  # fmt: skip
    with workspace(catalog) as ws:
        _print(step(ws, principal(ws, as_user)), detail)


def _print(v: DemandView, detail: bool = False) -> None:
    """A demand as a short block of plain text (times in Asia/Shanghai)."""
    out = [f"demand {v.id}  {v.title}  [{v.state}]  department {v.department}"]
    if v.provider:
        out.append(f"  provider {v.provider}  answer due {v.answer_due}  {v.answer_clock}")
    if v.answer:
        what = {"existing": f"resource {v.resource}", "publish": f"publish by {v.publish_by}",
                "refuse": "refused"}[v.answer]  # fmt: skip
        note = f": {v.answer_text}" if v.answer_text else ""
        out.append(f"  answer {v.answer} ({what}){note}  at {v.answered_at}")
    if v.next_actions:
        out.append(f"  next: {', '.join(v.next_actions)}")
    if detail:
        out += [f"  what: {v.description}", f"  why: {v.purpose}",
                f"  legal basis: {v.legal_basis}", f"  urgency: {v.urgency}"]  # fmt: skip
        for step in v.history:
            why = f"  ({step.reason})" if step.reason else ""
            out.append(
                f"  {step.at}  {step.action}: {step.from_state or '-'} -> {step.to_state}"
                f"  by {step.actor}{why}"
            )
    console.print("\n".join(out), markup=False, highlight=False, soft_wrap=True)


@app.command("file")
def file(
    title: Annotated[str, typer.Option("--title", help="需求标题")],
    description: Annotated[
        str, typer.Option("--description", help="需求说明: what data (fields, coverage, cycle).")
    ],
    purpose: Annotated[str, typer.Option("--purpose", help="用途: why it is needed.")],
    legal_basis: Annotated[str, typer.Option("--legal-basis", help="需求依据")],
    urgency: Annotated[str, typer.Option(help="normal | urgent | critical")] = "normal",
    department_code: Annotated[
        str | None, typer.Option(help="The requesting department (admins give it).")
    ] = None,
    as_user: AsOpt = None,
    at: AtOpt = None,
    catalog: CatalogOpt = DEFAULT_CATALOG,
) -> None:
    """File a demand for data nobody shares yet."""
    from exchange.workflow import demands
    from exchange.workflow.application import parse_form

    form = parse_form(
        demands.DemandForm,
        {"title": title, "description": description, "purpose": purpose,
         "legal_basis": legal_basis, "urgency": urgency, "department_code": department_code},
    )  # fmt: skip
    _act(catalog, as_user, lambda ws, who: demands.file_demand(ws, who, form, parse_time(at)))


@app.command("assign")
def assign(
    demand_id: DemandArg,
    provider: Annotated[str, typer.Option("--provider", help="The department owning the data.")],
    note: Annotated[str | None, typer.Option(help="A note for the provider.")] = None,
    as_user: AsOpt = None,
    at: AtOpt = None,
    catalog: CatalogOpt = DEFAULT_CATALOG,
) -> None:
    """Assign a demand to a provider department: its 5-working-day answer clock starts."""
    from exchange.workflow import demands

    _act(catalog, as_user, lambda ws, who: demands.assign(
        ws, who, demand_id, provider, parse_time(at), note))  # fmt: skip


@app.command("answer")
def answer(
    demand_id: DemandArg,
    kind: Annotated[
        str, typer.Option("--kind", help="existing (a resource) | publish (by a date) | refuse")
    ],
    resource: Annotated[
        str | None, typer.Option("--resource", help="existing: the resource's code.")
    ] = None,
    publish_by: Annotated[
        str | None, typer.Option("--publish-by", help="publish: the date (YYYY-MM-DD).")
    ] = None,
    text: Annotated[
        str | None, typer.Option("--text", help="refuse: the reason (required); else a note.")
    ] = None,
    as_user: AsOpt = None,
    at: AtOpt = None,
    catalog: CatalogOpt = DEFAULT_CATALOG,
) -> None:
    """Answer a demand assigned to your department."""
    from exchange.workflow import demands
    from exchange.workflow.application import parse_form

    reply = parse_form(
        demands.DemandAnswer,
        {"answer": kind, "resource": resource, "publish_by": _date(publish_by), "text": text},
    )
    _act(catalog, as_user, lambda ws, who: demands.answer(
        ws, who, demand_id, reply, parse_time(at)))  # fmt: skip


@app.command("close")
def close(
    demand_id: DemandArg,
    note: Annotated[str | None, typer.Option(help="Why, or what came of it.")] = None,
    as_user: AsOpt = None,
    at: AtOpt = None,
    catalog: CatalogOpt = DEFAULT_CATALOG,
) -> None:
    """Close your department's demand."""
    from exchange.workflow import demands

    _act(catalog, as_user, lambda ws, who: demands.close(
        ws, who, demand_id, note, parse_time(at)))  # fmt: skip


@app.command("show")
def show(
    demand_id: DemandArg,
    as_user: AsOpt = None,
    at: AtOpt = None,
    catalog: CatalogOpt = DEFAULT_CATALOG,
) -> None:
    """One demand with its history."""
    from exchange.workflow import demands

    _act(catalog, as_user, lambda ws, who: demands.show(ws, who, demand_id, parse_time(at)),
         detail=True)  # fmt: skip


@app.command("list")
def list_(
    state: Annotated[
        str | None, typer.Option(help="Only this state: filed | assigned | answered | closed.")
    ] = None,
    as_user: AsOpt = None,
    at: AtOpt = None,
    catalog: CatalogOpt = DEFAULT_CATALOG,
) -> None:
    """The demands you may see (the platform: all; a requester: its department's; a
    provider: those assigned to it)."""
    from exchange.workflow import demands

    with workspace(catalog) as ws:
        views = demands.list_for(ws, principal(ws, as_user), state, parse_time(at))
    if not views:
        console.print("no demands", markup=False, highlight=False)
    for v in views:
        _print(v)


def _date(text: str | None) -> dt.date | None:
    if text is None:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise BadInput(f"--publish-by {text!r} is not a date like 2027-01-15") from None
