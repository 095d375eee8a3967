"""``exchange account``: departments' applications for platform, database and FTP accounts
(apply | consent | refuse | issue | reject | reset | list | show | password).

A department applies with the form's fields as options (or ``--form FILE``); a unit's
application waits for its supervising department's consent; the platform admin issues the
account (the secret is printed once, here, and kept nowhere) or rejects it. Steps are taken
as the user named by ``--as`` (or ``$EXCHANGE_USER``), without one as the platform admin.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from exchange.cli.options import (
    DEFAULT_CATALOG,
    AsOpt,
    AtOpt,
    CatalogOpt,
    parse_time,
    principal,
    read_form,
    workspace,
)
from exchange.cli.render import console

if TYPE_CHECKING:
    from exchange.accounts.service import AccountView
    from exchange.workflow.users import Principal
    from exchange.workspace import Workspace

app = typer.Typer(
    name="account",
    no_args_is_help=True,
    help="Account applications: platform, database and FTP accounts, and their resets.",
)
AppId = Annotated[int, typer.Argument(help="Account application id.")]
Opt = Annotated[str | None, typer.Option()]


def _act(
    catalog: Path,
    as_user: str | None,
    step: Callable[[Workspace, Principal], AccountView],
    detail: bool = False,
) -> None:
    with workspace(catalog) as ws:
        _print(step(ws, principal(ws, as_user)), detail)


def _print(v: AccountView, detail: bool = False) -> None:
    """An application as a short block of plain text (times in Asia/Shanghai, phone masked)."""
    acting = f" (filed by {v.acting_department} for it)" if v.acting_department else ""
    out = [
        f"account application {v.id}  {v.account_type} {v.application_type}  [{v.state}]",
        f"  department {v.department_code}{acting}  applicant {v.applicant}  "
        f"applied {v.applied_at}",
        f"  responsible {v.responsible_person} ({v.position})  {v.phone}  {v.email}",
    ]
    if v.supervisor:
        out.append(f"  supervisor {v.supervisor}")
    if v.existing_login:
        out.append(f"  existing account {v.existing_login}")
    if v.login:
        out.append(f"  account {v.login}: {v.reach or ''}")
    if v.decision_reason:
        out.append(f"  reason: {v.decision_reason}")
    out += [f"  {d.kind} by {d.party}: due {d.due}  [{d.status}]" for d in v.deadlines]
    if detail and v.history:
        out += [
            f"  {h.at}  {h.action}: {h.from_state or '-'} -> {h.to_state}  by {h.actor}"
            + (f" of {h.actor_department}" if h.actor_department else "")
            + (f"  ({h.reason})" if h.reason else "")
            for h in v.history
        ]
    console.print("\n".join(out), markup=False, highlight=False)


def _form(form: Path | None, given: dict[str, Any]) -> dict[str, Any]:
    data = read_form(form) if form is not None else {}
    data.update({k: v for k, v in given.items() if v is not None})
    return data


@app.command("apply")
def account_apply(
    account_type: Annotated[
        str | None, typer.Option("--type", help="platform | database | ftp (账号类型)")
    ] = None,
    application: Annotated[
        str | None, typer.Option(help="new | reset | other (申请类型; default new)")
    ] = None,
    department: Annotated[
        str | None, typer.Option(help="The department's code (default: your own).")
    ] = None,
    person: Annotated[str | None, typer.Option(help="The responsible person (申请人).")] = None,
    position: Annotated[str | None, typer.Option(help="Their position (职务).")] = None,
    phone: Annotated[str | None, typer.Option(help="联系电话: a mobile or a landline.")] = None,
    email: Annotated[str | None, typer.Option(help="电子邮箱.")] = None,
    reason: Annotated[str | None, typer.Option(help="申请事由.")] = None,
    existing: Annotated[
        str | None, typer.Option("--existing-login", help="原有账号名称 (a reset).")
    ] = None,
    node: Annotated[
        str | None, typer.Option(help="The department's node (database and FTP accounts).")
    ] = None,
    form: Annotated[Path | None, typer.Option(help="The form's fields in a YAML file.")] = None,
    catalog: CatalogOpt = DEFAULT_CATALOG,
    as_user: AsOpt = None,
    at: AtOpt = None,
) -> None:
    """Apply for an account (用户账号 / 数据库、FTP 账号密码申请单)."""
    from exchange.accounts.forms import parse_account_form
    from exchange.accounts.service import apply

    data = _form(form, {
        "account_type": account_type, "application_type": application,
        "department_code": department, "responsible_person": person, "position": position,
        "phone": phone, "email": email, "reason": reason, "existing_login": existing,
        "node": node,
    })  # fmt: skip
    parsed = parse_account_form(data)
    when = parse_time(at)
    _act(catalog, as_user, lambda ws, who: apply(ws, who, parsed, when))


@app.command("reset")
def account_reset(
    login: Annotated[str, typer.Argument(help="The existing account (原有账号名称).")],
    account_type: Annotated[
        str, typer.Option("--type", help="platform | database | ftp")
    ] = "platform",
    department: Opt = None,
    person: Opt = None,
    position: Opt = None,
    phone: Opt = None,
    email: Opt = None,
    reason: Opt = None,
    node: Opt = None,
    form: Annotated[Path | None, typer.Option(help="The form's fields in a YAML file.")] = None,
    catalog: CatalogOpt = DEFAULT_CATALOG,
    as_user: AsOpt = None,
    at: AtOpt = None,
) -> None:
    """Apply for a reset of an existing account (密码重置): the same path as a new one."""
    from exchange.accounts.forms import parse_account_form
    from exchange.accounts.service import apply

    data = _form(form, {
        "account_type": account_type, "application_type": "reset", "existing_login": login,
        "department_code": department, "responsible_person": person, "position": position,
        "phone": phone, "email": email, "reason": reason, "node": node,
    })  # fmt: skip
    parsed = parse_account_form(data)
    when = parse_time(at)
    _act(catalog, as_user, lambda ws, who: apply(ws, who, parsed, when))


@app.command("consent")
def account_consent(
    application_id: AppId,
    reason: Opt = None,
    catalog: CatalogOpt = DEFAULT_CATALOG,
    as_user: AsOpt = None,
    at: AtOpt = None,
) -> None:
    """The supervising department consents to its unit's application."""
    from exchange.accounts.service import consent

    when = parse_time(at)
    _act(catalog, as_user, lambda ws, who: consent(ws, who, application_id, reason, when))


@app.command("refuse")
def account_refuse(
    application_id: AppId,
    reason: Annotated[str, typer.Option(help="Why (kept with the application).")],
    catalog: CatalogOpt = DEFAULT_CATALOG,
    as_user: AsOpt = None,
    at: AtOpt = None,
) -> None:
    """The supervising department refuses its consent."""
    from exchange.accounts.service import refuse

    when = parse_time(at)
    _act(catalog, as_user, lambda ws, who: refuse(ws, who, application_id, reason, when))


@app.command("reject")
def account_reject(
    application_id: AppId,
    reason: Annotated[str, typer.Option(help="Why (kept with the application).")],
    catalog: CatalogOpt = DEFAULT_CATALOG,
    as_user: AsOpt = None,
    at: AtOpt = None,
) -> None:
    """The platform rejects an application (admin)."""
    from exchange.accounts.service import reject

    when = parse_time(at)
    _act(catalog, as_user, lambda ws, who: reject(ws, who, application_id, reason, when))


@app.command("issue")
def account_issue(
    application_id: AppId,
    login: Annotated[
        str | None, typer.Option(help="A new platform user's name (default DEPT-ID).")
    ] = None,
    role: Annotated[str, typer.Option(help="A new platform user's role.")] = "requester",
    note: Annotated[str | None, typer.Option(help="The answer to an 'other' application.")] = None,
    catalog: CatalogOpt = DEFAULT_CATALOG,
    as_user: AsOpt = None,
    at: AtOpt = None,
) -> None:
    """Issue the account (admin): the secret is printed once and kept nowhere."""
    from exchange.accounts.service import issue

    when = parse_time(at)
    with workspace(catalog) as ws:
        got = issue(
            ws, principal(ws, as_user), application_id, login=login, role=role, note=note,
            now=when,
        )  # fmt: skip
    _print(got.application)
    if got.secret is not None:
        console.print(
            f"login: {got.login}\nsecret (shown once, kept nowhere): {got.secret}",
            markup=False,
            highlight=False,
        )


@app.command("list")
def account_list(
    state: Annotated[str | None, typer.Option(help="Only applications in this state.")] = None,
    catalog: CatalogOpt = DEFAULT_CATALOG,
    as_user: AsOpt = None,
) -> None:
    """The account applications you may see (a supervisor: its units' too)."""
    from exchange.accounts.service import list_page

    with workspace(catalog) as ws:
        total, items = list_page(ws, principal(ws, as_user), state=state, limit=10_000)
    for v in items:
        _print(v)
    console.print(f"{total} application(s)", markup=False)


@app.command("show")
def account_show(
    application_id: AppId, catalog: CatalogOpt = DEFAULT_CATALOG, as_user: AsOpt = None
) -> None:
    """One application with its history."""
    from exchange.accounts.service import show

    _act(catalog, as_user, lambda ws, who: show(ws, who, application_id), detail=True)


@app.command("password")
def account_password(
    catalog: CatalogOpt = DEFAULT_CATALOG, as_user: AsOpt = None, at: AtOpt = None
) -> None:
    """Change your own platform password (asked for, never shown): at least 12 characters of
    3 classes, not your login, your department code or a common password; the old one stops
    signing in."""
    from exchange.accounts.rotation import change_password
    from exchange.kernel.errors import BadInput
    from exchange.store.locks import locked_session

    if not as_user:
        raise BadInput("password: name yourself with --as USER (or $EXCHANGE_USER)")
    current = typer.prompt("current password", hide_input=True)
    new = typer.prompt("new password", hide_input=True, confirmation_prompt=True)
    when = parse_time(at)
    with workspace(catalog) as ws, locked_session(ws.store) as s:
        change_password(s, as_user, current, new, when)
    console.print(f"password of {as_user} changed: the old one no longer signs in", markup=False)
