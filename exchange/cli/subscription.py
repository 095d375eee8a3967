"""``exchange subscription``: the workflow (apply | review | withdraw | sign-off | evaluate |
report-effectiveness | show | suspend | resume | implemented | remove) and the platform
engineer's ``add`` and ``list``.

Workflow steps are taken as the user named by ``--as`` (or ``$EXCHANGE_USER``), with that
user's role checked exactly as in the REST API; without one the CLI acts as the platform admin
``platform`` (whoever runs it on the server has the store anyway).
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
    IdArg,
    operator,
    parse_time,
    principal,
    ratings,
    read_form,
    split_list,
    workspace,
)
from exchange.cli.render import console

if TYPE_CHECKING:
    from exchange.workflow.users import Principal
    from exchange.workflow.views import SubscriptionView
    from exchange.workspace import Workspace

app = typer.Typer(name="subscription", no_args_is_help=True, help="Subscriptions to resources.")


def _act(
    catalog: Path,
    as_user: str | None,
    step: Callable[[Workspace, Principal], SubscriptionView],
    detail: bool = False,
    for_department: str | None = None,
    units_only: bool = False,
) -> None:
    """Open the workspace, take ``step`` as the user (for ``for_department``, a unit its
    department supervises, where the platform allows it), print the subscription it returns."""
    from exchange.accounts.config import AccountSettings
    from exchange.accounts.departments import principal_for

    with workspace(catalog) as ws:
        who = principal(ws, as_user)
        if for_department is not None:
            allowed = AccountSettings.from_env().supervisor_acts_for_units
            with ws.store.session() as s:
                who = principal_for(
                    s, ws.catalog, who, for_department, allowed=allowed, units_only=units_only
                )
        _print(step(ws, who), detail)


ForDeptOpt = Annotated[
    str | None,
    typer.Option(
        "--for-department",
        help="Act for this unit of your department (where EXCHANGE_SUPERVISOR_ACTS_FOR_UNITS "
        "allows it).",
    ),
]


def _print(v: SubscriptionView, detail: bool = False) -> None:
    """A subscription as a short block of plain text (deadlines in Asia/Shanghai)."""
    # an api subscription lands nowhere: the department calls the gateway with its code
    where = f"kind api  to {v.target}" if v.kind == "api" else f"to {v.target}"
    out = [
        f"subscription {v.id}  {v.resource} {v.resource_name}  [{v.state}]  SLA {v.sla}",
        f"  {where}  granted: {', '.join(v.fields)}",
    ]
    if v.requested_fields is not None and v.requested_fields != v.fields:
        out.append(f"  requested: {', '.join(v.requested_fields)}")
    if v.department_code:
        applicant = f"  applicant {v.applicant}" if v.applicant else ""  # added by an admin
        out.append(
            f"  department {v.department_code} {v.department_name}  urgency {v.urgency}{applicant}"
        )
    out.append(f"  valid until {v.valid_until}")
    for d in v.deadlines:
        late = f", {d.late_hours} h late" if d.late_hours else ""
        out.append(f"  deadline {d.kind:<13} {d.party:<28} due {d.due}  {d.status}{late}")
    if v.next_step:
        out.append(f"  next: {v.next_step}")
    elif v.next_actions:
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
        if v.evaluation:
            out.append(f"  evaluation: {v.evaluation}")
        for rep in v.effectiveness_reports or []:
            out.append(f"  effectiveness report {rep['at']} by {rep['by']}: {rep['summary']}")
    console.print("\n".join(out), markup=False, highlight=False, soft_wrap=True)


# -- the workflow ------------------------------------------------------------------------------


@app.command("apply")
def apply(
    resource: Annotated[
        str | None, typer.Argument(help="Resource code (or the form's resource).")
    ] = None,
    node: Annotated[
        str | None,
        typer.Option(help="Your front-end node to receive it (none for an api resource)."),
    ] = None,
    fields: Annotated[str | None, typer.Option(help="Requested fields, comma-separated.")] = None,
    form: Annotated[
        Path | None,
        typer.Option(help="YAML or JSON file with the form's fields (options override)."),
    ] = None,
    department_code: Annotated[
        str | None,
        typer.Option(
            help="使用部门代码 (default: your department; admins give it, a supervisor its unit's)."
        ),
    ] = None,
    department_name: Annotated[
        str | None, typer.Option(help="使用部门名称 (default: the catalog's name).")
    ] = None,
    purpose: Annotated[str | None, typer.Option(help="用途及应用场景")] = None,
    legal_basis: Annotated[str | None, typer.Option(help="申请依据")] = None,
    contact_name: Annotated[str | None, typer.Option()] = None,
    contact_phone: Annotated[str | None, typer.Option()] = None,
    contact_email: Annotated[str | None, typer.Option()] = None,
    system_name: Annotated[str | None, typer.Option(help="业务系统名称")] = None,
    system_ip: Annotated[str | None, typer.Option(help="政务外网 IP")] = None,
    deploy_location: Annotated[str | None, typer.Option(help="部署地点")] = None,
    usage_days: Annotated[int | None, typer.Option(help="Usage period in days (1-1095).")] = None,
    urgency: Annotated[str | None, typer.Option(help="normal | urgent | critical")] = None,
    urgency_reason: Annotated[str | None, typer.Option(help="Required unless normal.")] = None,
    technical_notes: Annotated[str | None, typer.Option(help="其他技术请求")] = None,
    target_table: Annotated[
        str | None, typer.Option(help="Target table (default: source name).")
    ] = None,
    target_schema: Annotated[str | None, typer.Option(help="Target schema.")] = None,
    days: Annotated[int | None, typer.Option("--days", hidden=True)] = None,
    table: Annotated[str | None, typer.Option("--table", hidden=True)] = None,
    schema: Annotated[str | None, typer.Option("--schema", hidden=True)] = None,
    as_user: AsOpt = None,
    at: AtOpt = None,
    catalog: CatalogOpt = DEFAULT_CATALOG,
) -> None:
    """Apply for a resource (申请) for your department: conditional ones go to the provider's
    review. The options are the form's keys (schemas/examples/application.yaml)."""
    from exchange.workflow import service
    from exchange.workflow.application import parse_application

    data = read_form(form) if form is not None else {}
    given = {
        "resource": resource, "node": node, "fields": split_list(fields),
        "department_code": department_code, "department_name": department_name,
        "purpose": purpose, "legal_basis": legal_basis, "contact_name": contact_name,
        "contact_phone": contact_phone, "contact_email": contact_email,
        "system_name": system_name, "system_ip": system_ip, "deploy_location": deploy_location,
        "usage_days": usage_days if usage_days is not None else days, "urgency": urgency,
        "urgency_reason": urgency_reason, "technical_notes": technical_notes,
        "target_table": target_table or table, "target_schema": target_schema or schema,
    }  # fmt: skip
    data.update({k: v for k, v in given.items() if v is not None})
    application = parse_application(data)
    _act(catalog, as_user, lambda ws, who: service.apply(ws, who, application, parse_time(at)),
         for_department=application.department_code, units_only=True)  # fmt: skip


@app.command("review")
def review(
    subscription: IdArg,
    approve: Annotated[bool, typer.Option("--approve/--reject", help="The decision.")],
    fields: Annotated[str | None, typer.Option(help="Approve fewer fields than asked.")] = None,
    reason: Annotated[str | None, typer.Option(help="Why (required to reject).")] = None,
    as_user: AsOpt = None,
    at: AtOpt = None,
    catalog: CatalogOpt = DEFAULT_CATALOG,
) -> None:
    """Review a request for one of your resources (审核)."""
    from exchange.workflow import service

    _act(catalog, as_user, lambda ws, who: service.review(
        ws, who, subscription, approve=approve, fields=split_list(fields), reason=reason,
        now=parse_time(at),
    ))  # fmt: skip


@app.command("withdraw")
def withdraw(
    subscription: IdArg,
    reason: Annotated[str, typer.Option(help="Why.")] = "withdrawn by the requester",
    as_user: AsOpt = None,
    at: AtOpt = None,
    catalog: CatalogOpt = DEFAULT_CATALOG,
    for_department: ForDeptOpt = None,
) -> None:
    """Withdraw your application before implementation (撤销)."""
    from exchange.workflow import service

    _act(catalog, as_user, lambda ws, who: service.withdraw(
        ws, who, subscription, reason, parse_time(at)), for_department=for_department)  # fmt: skip


@app.command("sign-off")
def sign_off(
    subscription: IdArg, as_user: AsOpt = None, at: AtOpt = None,
    catalog: CatalogOpt = DEFAULT_CATALOG, for_department: ForDeptOpt = None,
) -> None:  # fmt: skip
    """Confirm that the data arrived (签收)."""
    from exchange.workflow import service

    _act(catalog, as_user, lambda ws, who: service.sign_off(ws, who, subscription, parse_time(at)),
         for_department=for_department)  # fmt: skip


@app.command("evaluate")
def evaluate(
    subscription: IdArg,
    stars: Annotated[
        str,
        typer.Option(
            help="Five 1-5 ratings: matches description, data quality, timeliness, "
            "implementation service, review efficiency (e.g. 5,4,5,5,4)."
        ),
    ],
    comment: Annotated[str | None, typer.Option()] = None,
    as_user: AsOpt = None,
    at: AtOpt = None,
    catalog: CatalogOpt = DEFAULT_CATALOG,
    for_department: ForDeptOpt = None,
) -> None:
    """Rate the delivery (评价); this closes the subscription."""
    from exchange.workflow import service

    def step(ws: Workspace, who: Principal) -> SubscriptionView:
        # Permission first: one who may not evaluate it is told so, not about its stars.
        with ws.store.session() as s:
            service._require_requester(who, service.subscription_row(s, subscription), "evaluate")
        rating = ratings(service.Stars, stars, "--stars")
        return service.evaluate(ws, who, subscription, rating, comment, parse_time(at))

    _act(catalog, as_user, step, for_department=for_department)


@app.command("report-effectiveness")
def report_effectiveness(
    subscription: IdArg,
    summary: Annotated[str, typer.Option(help="What the data achieved (应用成效).")],
    as_user: AsOpt = None,
    at: AtOpt = None,
    catalog: CatalogOpt = DEFAULT_CATALOG,
) -> None:
    """Report usage effectiveness, due 90 days after closing (lifts a suspension)."""
    from exchange.workflow import service

    _act(catalog, as_user, lambda ws, who: service.report_effectiveness(
        ws, who, subscription, summary, parse_time(at)))  # fmt: skip


@app.command("show")
def show(
    subscription: IdArg,
    as_user: AsOpt = None,
    at: Annotated[str | None, typer.Option("--at", hidden=True)] = None,
    catalog: CatalogOpt = DEFAULT_CATALOG,
) -> None:
    """A subscription: form, deadlines (Asia/Shanghai), history."""
    from exchange.workflow import service

    _act(
        catalog,
        as_user,
        lambda ws, who: service.show(ws, who, subscription, parse_time(at)),
        detail=True,
    )


def _admin(action: str, doc: str) -> Callable[..., None]:
    """An admin step (``service.admin_step``) as a command with the same options as the rest."""

    def step(
        subscription: IdArg,
        reason: Annotated[str, typer.Option(help="Why.")],
        as_user: AsOpt = None,
        at: AtOpt = None,
        catalog: CatalogOpt = DEFAULT_CATALOG,
    ) -> None:
        from exchange.workflow import service

        _act(catalog, as_user, lambda ws, who: service.admin_step(
            ws, who, subscription, action, reason, parse_time(at)))  # fmt: skip

    step.__doc__ = doc
    return step


app.command("suspend")(_admin("suspend", "Stop deliveries to a subscription (admin)."))
app.command("resume")(_admin("resume", "Resume a suspended subscription (admin)."))
app.command("implemented")(_admin("deliver", "Mark an implementation done by hand (admin)."))


# -- outside the workflow ----------------------------------------------------------------------


@app.command("add")
def subscription_add(
    resource: str,
    node: Annotated[str, typer.Option(help="The requester's front-end node.")],
    until: Annotated[dt.datetime, typer.Option(formats=["%Y-%m-%d"], help="Last day of use.")],
    department: Annotated[
        str | None,
        typer.Option(
            help="Code of the department it is for; the node must be its front-end "
            "(required unless the node belongs to no department)."
        ),
    ] = None,
    fields: Annotated[
        str | None, typer.Option(help="Granted fields, comma-separated (default: every field).")
    ] = None,
    target_table: Annotated[
        str | None, typer.Option(help="Target table (default: source name).")
    ] = None,
    target_schema: Annotated[str | None, typer.Option(help="Target schema.")] = None,
    target_dir: Annotated[
        str | None, typer.Option("--target-dir", "--dir", help="Target directory on a file node.")
    ] = None,
    table: Annotated[str | None, typer.Option("--table", hidden=True)] = None,
    schema: Annotated[str | None, typer.Option("--schema", hidden=True)] = None,
    catalog: CatalogOpt = DEFAULT_CATALOG,
) -> None:
    """Add a subscription approved outside the workflow (admin): it starts in implementation."""
    from exchange.workflow.grants import add_subscription, describe_target

    with workspace(catalog) as ws:
        sub = add_subscription(
            ws, resource, node, split_list(fields), until.date(),
            target_table=target_table or table, target_schema=target_schema or schema,
            target_dir=target_dir, actor=operator(), department=department,
        )  # fmt: skip
        of = f" for {sub.department_code}" if sub.department_code else ""
        granted = f" ({', '.join(sub.fields)})" if sub.fields else ""  # files: no fields
        console.print(
            f"subscription {sub.id}: {resource} -> {describe_target(ws, sub)}{of}{granted} "
            f"until {sub.valid_until}",
            markup=False,
        )


@app.command("remove")
def subscription_remove(
    subscription: IdArg,
    reason: Annotated[str, typer.Option(help="Why it is removed (required, audited).")],
    as_user: AsOpt = None,
    at: AtOpt = None,
    catalog: CatalogOpt = DEFAULT_CATALOG,
) -> None:
    """Remove a subscription added by mistake (admin): never delivered again; its history and
    deliveries are kept."""
    from exchange.workflow import service

    _act(catalog, as_user, lambda ws, who: service.remove(
        ws, who, subscription, reason, parse_time(at)))  # fmt: skip


@app.command("list")
def subscription_list(
    resource: Annotated[str | None, typer.Argument()] = None,
    as_user: AsOpt = None,
    catalog: CatalogOpt = DEFAULT_CATALOG,
) -> None:
    """List subscriptions (with --as or $EXCHANGE_USER: those that user may see)."""
    from rich.table import Table

    from exchange.workflow.grants import describe_target, list_subscriptions
    from exchange.workflow.service import visible_to

    with workspace(catalog) as ws:
        t = Table(title="subscriptions")
        for col in ("id", "resource", "target", "fields", "status", "valid until"):
            t.add_column(col, overflow="fold")
        visible = visible_to(ws, principal(ws, as_user))
        for s in list_subscriptions(ws, resource, visible):
            t.add_row(
                str(s.id),
                s.resource_code,
                # node.table, node:/dir for files, — for an api (called, not delivered)
                describe_target(ws, s) + ("" if s.subscriber_node else " (api)"),
                ", ".join(s.fields),
                s.status,
                str(s.valid_until),
            )
        console.print(t)
