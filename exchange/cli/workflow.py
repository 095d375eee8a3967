"""CLI face of the subscription workflow: ``exchange subscription apply | review | withdraw |
sign-off | evaluate | report-effectiveness | show | suspend | resume``, ``exchange sla``,
``exchange tick``, ``exchange calendar deadline``, ``exchange user …`` and ``exchange serve``.

Actions are taken as the user named by ``--as`` (or ``$EXCHANGE_USER``), with that user's role
checked exactly as in the REST API; without one the CLI acts as the platform admin ``platform``
(whoever runs it on the server has the store anyway).
"""

from __future__ import annotations

import datetime as dt
import getpass
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from exchange.cli.render import console
from exchange.kernel.errors import BadInput

if TYPE_CHECKING:
    from exchange.workflow.users import Principal
    from exchange.workflow.views import SlaReport, SubscriptionView
    from exchange.workspace import Workspace

calendar_app = typer.Typer(no_args_is_help=True, help="The statutory working-day calendar.")
user_app = typer.Typer(no_args_is_help=True, help="Users, roles and API tokens.")

CatalogOpt = Annotated[
    Path, typer.Option("--catalog", "-c", envvar="EXCHANGE_CATALOG", help="Catalog YAML file.")
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


def _time(text: str | None, what: str = "--at") -> dt.datetime | None:
    """An ISO time given in Asia/Shanghai (unless it carries an offset) as naive UTC."""
    if text is None:
        return None
    from exchange.kernel.clock import stored

    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise BadInput(f"{what} {text!r} is not an ISO 8601 time like 2026-09-30T10:00") from None
    return stored(t)


def _ws(catalog: Path) -> Workspace:
    from exchange.workspace import Workspace

    return Workspace.open(catalog)


def _principal(ws: Workspace, name: str | None) -> Principal:
    from exchange.workflow.users import Principal, principal_of

    if not name:
        return Principal(f"platform:{getpass.getuser()}", "admin")
    with ws.store.session() as s:
        return principal_of(s, name)


def _act(
    catalog: Path,
    as_user: str | None,
    step: Callable[[Workspace, Principal], SubscriptionView],
    detail: bool = False,
) -> None:
    """Open the workspace, take ``step`` as the user, print the subscription it returns."""
    ws = _ws(catalog)
    try:
        _print(step(ws, _principal(ws, as_user)), detail)
    finally:
        ws.close()


def _print(v: SubscriptionView, detail: bool = False) -> None:
    """A subscription as a short block of plain text (deadlines in Asia/Shanghai)."""
    out = [
        f"subscription {v.id}  {v.resource} {v.resource_name}  [{v.state}]  SLA {v.sla}",
        f"  to {v.node}.{v.table}  granted: {', '.join(v.fields)}",
    ]
    if v.requested_fields is not None and v.requested_fields != v.fields:
        out.append(f"  requested: {', '.join(v.requested_fields)}")
    if v.department_code:
        out.append(
            f"  department {v.department_code} {v.department_name}  urgency {v.urgency}  "
            f"applicant {v.applicant}"
        )
    out.append(f"  valid until {v.valid_until}")
    for d in v.deadlines:
        late = f", {d.late_hours} h late" if d.late_hours else ""
        out.append(f"  deadline {d.kind:<13} {d.party:<28} due {d.due}  {d.status}{late}")
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
        if v.evaluation:
            out.append(f"  evaluation: {v.evaluation}")
        for rep in v.effectiveness_reports or []:
            out.append(f"  effectiveness report {rep['at']} by {rep['by']}: {rep['summary']}")
    console.print("\n".join(out), markup=False, highlight=False, soft_wrap=True)


def _split(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [f.strip() for f in text.split(",") if f.strip()]


# -- subscription actions --------------------------------------------------------------------


def apply(
    resource: Annotated[str, typer.Argument(help="Resource code.")],
    node: Annotated[str | None, typer.Option(help="Your front-end node to receive it.")] = None,
    fields: Annotated[str | None, typer.Option(help="Requested fields, comma-separated.")] = None,
    form: Annotated[
        Path | None, typer.Option(help="YAML file with the form's fields (options override).")
    ] = None,
    department_code: Annotated[str | None, typer.Option(help="使用部门代码")] = None,
    department_name: Annotated[str | None, typer.Option(help="使用部门名称")] = None,
    purpose: Annotated[str | None, typer.Option(help="用途及应用场景")] = None,
    legal_basis: Annotated[str | None, typer.Option(help="申请依据")] = None,
    contact_name: Annotated[str | None, typer.Option()] = None,
    contact_phone: Annotated[str | None, typer.Option()] = None,
    contact_email: Annotated[str | None, typer.Option()] = None,
    system_name: Annotated[str | None, typer.Option(help="业务系统名称")] = None,
    system_ip: Annotated[str | None, typer.Option(help="政务外网 IP")] = None,
    deploy_location: Annotated[str | None, typer.Option(help="部署地点")] = None,
    days: Annotated[int | None, typer.Option(help="Usage period in days (1-1095).")] = None,
    urgency: Annotated[str | None, typer.Option(help="normal | urgent | critical")] = None,
    urgency_reason: Annotated[str | None, typer.Option(help="Required unless normal.")] = None,
    table: Annotated[str | None, typer.Option(help="Target table (default: source name).")] = None,
    schema: Annotated[str | None, typer.Option(help="Target schema.")] = None,
    as_user: AsOpt = None,
    at: AtOpt = None,
    catalog: CatalogOpt = Path("catalog.yaml"),
) -> None:
    """Apply for a resource (申请): conditional ones go to the provider's review."""
    import yaml

    from exchange.workflow import service
    from exchange.workflow.application import parse_application

    data: dict[str, Any] = {}
    if form is not None:
        try:
            data = yaml.safe_load(form.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise BadInput(f"form {form}: {exc}") from None
        if not isinstance(data, dict):
            raise BadInput(f"form {form}: expected a mapping of the form's fields")
    given = {
        "resource": resource, "node": node, "fields": _split(fields),
        "department_code": department_code, "department_name": department_name,
        "purpose": purpose, "legal_basis": legal_basis, "contact_name": contact_name,
        "contact_phone": contact_phone, "contact_email": contact_email,
        "system_name": system_name, "system_ip": system_ip, "deploy_location": deploy_location,
        "usage_days": days, "urgency": urgency, "urgency_reason": urgency_reason,
        "target_table": table, "target_schema": schema,
    }  # fmt: skip
    data.update({k: v for k, v in given.items() if v is not None})
    application = parse_application(data)
    _act(catalog, as_user, lambda ws, who: service.apply(ws, who, application, _time(at)))


def review(
    subscription: IdArg,
    approve: Annotated[bool, typer.Option("--approve/--reject", help="The decision.")],
    fields: Annotated[str | None, typer.Option(help="Approve fewer fields than asked.")] = None,
    reason: Annotated[str | None, typer.Option(help="Why (required to reject).")] = None,
    as_user: AsOpt = None,
    at: AtOpt = None,
    catalog: CatalogOpt = Path("catalog.yaml"),
) -> None:
    """Review a request for one of your resources (审核)."""
    from exchange.workflow import service

    _act(catalog, as_user, lambda ws, who: service.review(
        ws, who, subscription, approve=approve, fields=_split(fields), reason=reason,
        now=_time(at),
    ))  # fmt: skip


def withdraw(
    subscription: IdArg,
    reason: Annotated[str, typer.Option(help="Why.")] = "withdrawn by the requester",
    as_user: AsOpt = None,
    at: AtOpt = None,
    catalog: CatalogOpt = Path("catalog.yaml"),
) -> None:
    """Withdraw your application before implementation (撤销)."""
    from exchange.workflow import service

    _act(catalog, as_user,
         lambda ws, who: service.withdraw(ws, who, subscription, reason, _time(at)))  # fmt: skip


def sign_off(
    subscription: IdArg, as_user: AsOpt = None, at: AtOpt = None,
    catalog: CatalogOpt = Path("catalog.yaml"),
) -> None:  # fmt: skip
    """Confirm that the data arrived (签收)."""
    from exchange.workflow import service

    _act(catalog, as_user, lambda ws, who: service.sign_off(ws, who, subscription, _time(at)))


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
    catalog: CatalogOpt = Path("catalog.yaml"),
) -> None:
    """Rate the delivery (评价); this closes the subscription."""
    from pydantic import ValidationError

    from exchange.workflow import service

    parts = _split(stars) or []
    names = list(service.Stars.model_fields)
    if len(parts) != len(names):
        raise BadInput(f"--stars needs {len(names)} ratings ({', '.join(names)}), got {stars!r}")
    try:
        rating = service.Stars.model_validate(dict(zip(names, parts, strict=True)))
    except ValidationError as exc:
        raise BadInput(
            f"--stars {stars!r}: each rating is 1 to 5 ({exc.error_count()} not)"
        ) from None
    _act(catalog, as_user, lambda ws, who: service.evaluate(
        ws, who, subscription, rating, comment, _time(at)))  # fmt: skip


def report_effectiveness(
    subscription: IdArg,
    summary: Annotated[str, typer.Option(help="What the data achieved (应用成效).")],
    as_user: AsOpt = None,
    at: AtOpt = None,
    catalog: CatalogOpt = Path("catalog.yaml"),
) -> None:
    """Report usage effectiveness, due 90 days after closing (lifts a suspension)."""
    from exchange.workflow import service

    _act(catalog, as_user, lambda ws, who: service.report_effectiveness(
        ws, who, subscription, summary, _time(at)))  # fmt: skip


def _admin(action: str, doc: str) -> Any:
    def step(
        subscription: IdArg,
        reason: Annotated[str, typer.Option(help="Why.")],
        as_user: AsOpt = None,
        at: AtOpt = None,
        catalog: CatalogOpt = Path("catalog.yaml"),
    ) -> None:
        from exchange.workflow import service

        _act(catalog, as_user, lambda ws, who: service.admin_step(
            ws, who, subscription, action, reason, _time(at)))  # fmt: skip

    step.__doc__ = doc
    return step


def show(
    subscription: IdArg,
    as_user: AsOpt = None,
    at: Annotated[str | None, typer.Option("--at", hidden=True)] = None,
    catalog: CatalogOpt = Path("catalog.yaml"),
) -> None:
    """A subscription: form, deadlines (Asia/Shanghai), history."""
    from exchange.workflow import service

    _act(catalog, as_user, lambda ws, who: service.show(ws, who, subscription, _time(at)), True)


# -- sla, tick, calendar, serve, users -------------------------------------------------------


def sla(
    as_user: AsOpt = None,
    at: Annotated[str | None, typer.Option("--at", help="As of this time (Asia/Shanghai).")] = None,
    catalog: CatalogOpt = Path("catalog.yaml"),
) -> None:
    """Open deadlines, breaches, and counts per provider, platform and requester."""
    from exchange.workflow import service

    ws = _ws(catalog)
    try:
        _print_sla(service.sla_overview(ws, _principal(ws, as_user), _time(at)))
    finally:
        ws.close()


def _print_sla(report: SlaReport) -> None:
    from rich.table import Table

    for title, rows in (("open deadlines", report.open), ("breaches", report.breaches)):
        t = Table(title=f"{title} (as of {report.now})")
        for col in ("sub", "resource", "state", "deadline", "party", "due", "status", "late h"):
            t.add_column(col, overflow="fold")
        for r in rows:
            t.add_row(
                str(r.subscription_id), r.resource, r.state, r.kind, r.party, r.due, r.status,
                "" if r.late_hours is None else f"{r.late_hours:.1f}",
            )  # fmt: skip
        console.print(t)
    t = Table(title="per party")
    for col in ("party", "running", "overdue", "breaches"):
        t.add_column(col)
    for p in report.by_party:
        t.add_row(p.party, str(p.running), str(p.overdue), str(p.breaches))
    console.print(t)


def tick(
    now: Annotated[
        str | None, typer.Option(help="Pretend it is this time (Asia/Shanghai).")
    ] = None,
    catalog: CatalogOpt = Path("catalog.yaml"),
) -> None:
    """Housekeeping: timeouts, reminders, auto sign-off/evaluation, expiry, suspensions; then
    send the notifications outbox to $EXCHANGE_WEBHOOK_URL."""
    from exchange.workflow.housekeeping import housekeep

    ws = _ws(catalog)
    try:
        report, sent = housekeep(ws, _time(now, "--now"))
    finally:
        ws.close()
    console.print(f"tick: {report}", markup=False)
    console.print(
        f"notifications: {sent.sent} sent, {sent.failed} failed, {sent.pending} waiting",
        markup=False,
    )


@calendar_app.command("deadline")
def calendar_deadline(
    start: Annotated[str, typer.Option("--from", help="Event time (Asia/Shanghai unless offset).")],
    working_days: Annotated[int, typer.Option(min=1, help="Within N working days.")],
) -> None:
    """The deadline N working days after an event: 23:59:59 Asia/Shanghai of that day."""
    from exchange.kernel.workdays import add_working_days

    at = _time(start, "--from")
    assert at is not None
    d = add_working_days(at.replace(tzinfo=dt.UTC), working_days)
    console.print(str(d), markup=False, highlight=False)


@user_app.command("add")
def user_add(
    name: str,
    role: Annotated[str, typer.Option(help="admin | provider | requester")],
    department: Annotated[
        str | None, typer.Option(help="Provider: the catalog node's department; requester: code.")
    ] = None,
) -> None:
    """Add a user."""
    from exchange.workflow.users import create_user

    store = _store()
    try:
        with store.session() as s:
            user = create_user(s, name, role, department, _operator())
            of = f" of {department}" if department else ""
            console.print(f"user {user.id}: {name} ({role}{of})", markup=False)
    finally:
        store.close()


@user_app.command("token")
def user_token(
    name: str, label: Annotated[str | None, typer.Option(help="What it is for.")] = None
) -> None:
    """Issue an API token (printed once; only its hash is stored)."""
    from exchange.workflow.users import issue_token

    store = _store()
    try:
        with store.session() as s:
            token = issue_token(s, name, _operator(), label)
    finally:
        store.close()
    print(token)


@user_app.command("revoke")
def user_revoke(name: str) -> None:
    """Revoke every API token of a user."""
    from exchange.workflow.users import revoke_tokens

    store = _store()
    try:
        with store.session() as s:
            n = revoke_tokens(s, name, _operator())
    finally:
        store.close()
    console.print(f"{n} token(s) of {name} revoked")


@user_app.command("list")
def user_list() -> None:
    """Users and their roles."""
    from exchange.workflow.users import list_users

    store = _store()
    try:
        with store.session() as s:
            for u in list_users(s):
                console.print(f"{u.id}  {u.name}  {u.role}  {u.department or ''}", markup=False)
    finally:
        store.close()


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    catalog: CatalogOpt = Path("catalog.yaml"),
) -> None:
    """Run the REST API (OpenAPI at /docs)."""
    import uvicorn

    from exchange.api import create_app

    ws = _ws(catalog)
    try:
        uvicorn.run(create_app(ws), host=host, port=port, log_level="info")
    finally:
        ws.close()


def _store() -> Any:
    from exchange.kernel.settings import Settings
    from exchange.store import Store

    return Store(Settings.from_env().db_url)


def _operator() -> str:
    return f"platform:{getpass.getuser()}"


def register(app: typer.Typer, sub_app: typer.Typer) -> None:
    """Wire the workflow commands into the ``exchange`` app."""
    sub_app.command("apply")(apply)
    sub_app.command("review")(review)
    sub_app.command("withdraw")(withdraw)
    sub_app.command("sign-off")(sign_off)
    sub_app.command("evaluate")(evaluate)
    sub_app.command("report-effectiveness")(report_effectiveness)
    sub_app.command("show")(show)
    sub_app.command("suspend")(_admin("suspend", "Stop deliveries to a subscription (admin)."))
    sub_app.command("resume")(_admin("resume", "Resume a suspended subscription (admin)."))
    sub_app.command("implemented")(
        _admin("deliver", "Mark an implementation done by hand (admin).")
    )
    app.command("sla")(sla)
    app.command("tick")(tick)
    app.command("serve")(serve)
    app.add_typer(calendar_app, name="calendar")
    app.add_typer(user_app, name="user")
