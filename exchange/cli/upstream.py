"""``exchange upstream``: a department's application for a national or provincial resource the
city does not proxy yet (apply | forward | decide | proxied | withdraw | list | show).

The requester applies with a form (``schemas/examples/upstream_application.yaml``); the
platform admin forwards it upstream, records the decision, and once the resource is proxied
in the catalog files the department's form as its subscription. Steps are taken as the user
named by ``--as`` (or ``$EXCHANGE_USER``), without one as the platform admin.
"""

from __future__ import annotations

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
    read_form,
    split_list,
    workspace,
)
from exchange.cli.render import console

if TYPE_CHECKING:
    from exchange.workflow.upstream import UpstreamView
    from exchange.workflow.users import Principal
    from exchange.workspace import Workspace

app = typer.Typer(
    name="upstream",
    no_args_is_help=True,
    help="Applications for national and provincial resources, forwarded by the city.",
)
UpstreamId = Annotated[int, typer.Argument(help="Upstream application id.")]


def _act(
    catalog: Path,
    as_user: str | None,
    step: Callable[[Workspace, Principal], UpstreamView],
    detail: bool = False,
) -> None:
    with workspace(catalog) as ws:
        _print(step(ws, principal(ws, as_user)), detail)


def _print(v: UpstreamView, detail: bool = False) -> None:
    """An upstream application as a short block of plain text (times in Asia/Shanghai)."""
    late = f", {v.forward_late_hours} h late" if v.forward_late_hours else ""
    out = [
        f"upstream application {v.id}  {v.level} {v.platform}  {v.upstream_code} "
        f"{v.resource_name} ({v.kind})  [{v.state}]",
        f"  department {v.department_code}  applicant {v.applicant}  applied {v.created_at}",
        f"  requested: {', '.join(v.fields)}",
        f"  forward due {v.forward_due}  {v.forward_status}{late}",
    ]
    if v.forwarded_at:
        out.append(f"  forwarded {v.forwarded_at}")
    if v.approval_ref:
        out.append(f"  approval {v.approval_ref}")
    if v.decision_reason:
        out.append(f"  reason: {v.decision_reason}")
    if v.resource_code:
        out.append(f"  proxied as {v.resource_code}: subscription {v.subscription_id}")
    if v.next_actions:
        out.append(f"  next: {', '.join(v.next_actions)}")
    if detail:
        for key, value in (v.form or {}).items():
            if value not in (None, ""):
                out.append(f"  {key}: {value}")
        for step in v.history or []:
            why = f"  ({step.reason})" if step.reason else ""
            out.append(
                f"  {step.at}  {step.action}: {step.from_state or '-'} -> {step.to_state}"
                f"  by {step.actor}{why}"
            )
    console.print("\n".join(out), markup=False, highlight=False, soft_wrap=True)


@app.command("apply")
def apply(
    form: Annotated[
        Path,
        typer.Option(
            help="YAML or JSON file: level, platform, upstream_code, resource_name, kind, "
            "fields, and your department's application (schemas/examples/"
            "upstream_application.yaml)."
        ),
    ],
    as_user: AsOpt = None,
    at: AtOpt = None,
    catalog: CatalogOpt = DEFAULT_CATALOG,
) -> None:
    """Apply for a national or provincial resource the city does not proxy yet: the platform
    forwards it upstream."""
    from exchange.workflow import upstream

    request = upstream.parse_upstream_request(read_form(form))
    _act(catalog, as_user, lambda ws, who: upstream.apply(ws, who, request, parse_time(at)))


@app.command("forward")
def forward(
    application: UpstreamId,
    note: Annotated[str | None, typer.Option(help="A note on the forwarding.")] = None,
    as_user: AsOpt = None,
    at: AtOpt = None,
    catalog: CatalogOpt = DEFAULT_CATALOG,
) -> None:
    """Record that the application was forwarded upstream (admin, 转交)."""
    from exchange.workflow import upstream

    _act(catalog, as_user, lambda ws, who: upstream.forward(
        ws, who, application, note, parse_time(at)))  # fmt: skip


@app.command("decide")
def decide(
    application: UpstreamId,
    approved: Annotated[bool, typer.Option("--approved/--rejected", help="The upstream decision.")],
    approval_ref: Annotated[
        str | None, typer.Option(help="The approval's reference (批复文号), to approve.")
    ] = None,
    reason: Annotated[str | None, typer.Option(help="Why (required to reject).")] = None,
    as_user: AsOpt = None,
    at: AtOpt = None,
    catalog: CatalogOpt = DEFAULT_CATALOG,
) -> None:
    """Record the upstream decision (admin)."""
    from exchange.workflow import upstream

    _act(catalog, as_user, lambda ws, who: upstream.decide(
        ws, who, application, approved=approved, approval_ref=approval_ref, reason=reason,
        now=parse_time(at),
    ))  # fmt: skip


@app.command("proxied")
def proxied(
    application: UpstreamId,
    resource: Annotated[
        str, typer.Option(help="The city resource that proxies it (its origin names it).")
    ],
    fields: Annotated[
        str | None,
        typer.Option(help="The requested fields by the resource's names, comma-separated."),
    ] = None,
    as_user: AsOpt = None,
    at: AtOpt = None,
    catalog: CatalogOpt = DEFAULT_CATALOG,
) -> None:
    """Record that the city proxies the resource: the department's form is filed as its
    subscription (admin)."""
    from exchange.workflow import upstream

    _act(catalog, as_user, lambda ws, who: upstream.proxied(
        ws, who, application, resource, split_list(fields), parse_time(at)))  # fmt: skip


@app.command("withdraw")
def withdraw(
    application: UpstreamId,
    reason: Annotated[str, typer.Option(help="Why.")] = "withdrawn by the requester",
    as_user: AsOpt = None,
    at: AtOpt = None,
    catalog: CatalogOpt = DEFAULT_CATALOG,
) -> None:
    """Withdraw your application before the upstream decision (撤销)."""
    from exchange.workflow import upstream

    _act(catalog, as_user, lambda ws, who: upstream.withdraw(
        ws, who, application, reason, parse_time(at)))  # fmt: skip


@app.command("show")
def show(
    application: UpstreamId,
    as_user: AsOpt = None,
    at: Annotated[str | None, typer.Option("--at", hidden=True)] = None,
    catalog: CatalogOpt = DEFAULT_CATALOG,
) -> None:
    """An upstream application: its form, forward deadline (Asia/Shanghai) and history."""
    from exchange.workflow import upstream

    _act(
        catalog,
        as_user,
        lambda ws, who: upstream.show(ws, who, application, parse_time(at)),
        detail=True,
    )


@app.command("list")
def upstream_list(
    state: Annotated[str | None, typer.Option(help="Only those in this state.")] = None,
    as_user: AsOpt = None,
    at: Annotated[str | None, typer.Option("--at", hidden=True)] = None,
    catalog: CatalogOpt = DEFAULT_CATALOG,
) -> None:
    """Upstream applications (an admin: all; a requester: its department's)."""
    from rich.table import Table

    from exchange.workflow import upstream

    with workspace(catalog) as ws:
        _, views = upstream.list_page(ws, principal(ws, as_user), state=state, now=parse_time(at))
        t = Table(title="upstream applications")
        for col in ("id", "upstream", "name", "kind", "department", "state", "forward due",
                    "subscription"):  # fmt: skip
            t.add_column(col, overflow="fold")
        for v in views:
            due = v.forward_due if v.forward_status in ("running", "overdue") else ""
            flag = " OVERDUE" if v.forward_status == "overdue" else ""
            t.add_row(
                str(v.id), f"{v.level} {v.upstream_code}", v.resource_name, v.kind,
                v.department_code, v.state, due + flag,
                "" if v.subscription_id is None else str(v.subscription_id),
            )  # fmt: skip
        console.print(t)
