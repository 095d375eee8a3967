"""The workflow's clock: ``exchange sla`` (deadlines and breaches), ``exchange tick``
(housekeeping, then the webhook) and ``exchange calendar deadline`` (the working-day calendar).

``sla`` and ``tick`` are top-level commands (``register``); ``calendar`` is this module's group.
Times are given and shown in Asia/Shanghai.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Annotated

import typer

from exchange.cli.options import (
    DEFAULT_CATALOG,
    AsOpt,
    CatalogOpt,
    parse_time,
    principal,
    workspace,
)
from exchange.cli.render import console, errors
from exchange.kernel.errors import BadInput

if TYPE_CHECKING:
    from exchange.workflow.views import SlaReport

app = typer.Typer(name="calendar", no_args_is_help=True, help="The statutory working-day calendar.")


def sla(
    as_user: AsOpt = None,
    at: Annotated[str | None, typer.Option("--at", help="As of this time (Asia/Shanghai).")] = None,
    catalog: CatalogOpt = DEFAULT_CATALOG,
) -> None:
    """Open deadlines, breaches, and counts per provider, platform and requester."""
    from exchange.workflow import service

    with workspace(catalog) as ws:
        _print_sla(service.sla_overview(ws, principal(ws, as_user), parse_time(at)))


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


PERMANENT = (
    "what a tick decides is permanent (reviews rejected or approved on timeout, subscriptions "
    "signed off, evaluated or expired, departments suspended, notifications sent): "
    "the real clock does not undo it when it gets there"
)


def future_tick(now: str, at: dt.datetime, yes: bool) -> str:
    """The warning for a ``--now`` later than the real clock; without ``yes`` a refusal."""
    from exchange.kernel.clock import shown, utcnow

    clock = utcnow()
    ahead = at - clock
    hours = ahead.total_seconds() / 3600
    said = (
        f"--now {now} is {hours:,.1f} h later than the clock ({shown(clock)} Asia/Shanghai): "
        f"{PERMANENT}"
    )
    if not yes:
        raise BadInput(f"{said}; add --yes to tick at that time anyway")
    return said


def tick(
    now: Annotated[
        str | None,
        typer.Option(
            help="Pretend it is this time (Asia/Shanghai); a time later than the clock needs "
            "--yes, for what the tick changes is permanent."
        ),
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", help="Tick at a --now later than the clock.")
    ] = False,
    catalog: CatalogOpt = DEFAULT_CATALOG,
) -> None:
    """Housekeeping: timeouts, reminders, auto sign-off/evaluation, expiry, suspensions; then
    send the notifications outbox to $EXCHANGE_WEBHOOK_URL."""
    from exchange import lineage
    from exchange.accounts.service import tick as account_tick
    from exchange.kernel.clock import utcnow
    from exchange.workflow.housekeeping import housekeep

    at = parse_time(now, "--now")
    if now is not None and at is not None and at > utcnow():
        errors.print(f"warning: {future_tick(now, at, yes)}", markup=False, highlight=False)
    with workspace(catalog) as ws:
        accounts = account_tick(ws.store, at)  # first: its reminders leave with the outbox below
        report, sent = housekeep(ws, at)
        replayed = lineage.replay(ws.settings.home)  # lineage events a receiver missed
    console.print(f"tick: {report}", markup=False)
    if accounts.reminders or accounts.breaches or accounts.rotation_reminders:
        console.print(
            f"accounts: {accounts.reminders} reminder(s), {accounts.breaches} breach(es), "
            f"{accounts.rotation_reminders} rotation reminder(s)",
            markup=False,
        )
    console.print(f"notifications: {sent}", markup=False)
    if replayed:
        console.print(f"lineage: {replayed} spooled event(s) sent", markup=False)


@app.command("deadline")
def calendar_deadline(
    start: Annotated[str, typer.Option("--from", help="Event time (Asia/Shanghai unless offset).")],
    working_days: Annotated[int, typer.Option(min=1, help="Within N working days.")],
) -> None:
    """The deadline N working days after an event: 23:59:59 Asia/Shanghai of that day."""
    from exchange.kernel.workdays import add_working_days

    at = parse_time(start, "--from")
    assert at is not None
    d = add_working_days(at.replace(tzinfo=dt.UTC), working_days)
    console.print(str(d), markup=False, highlight=False)


def register(root: typer.Typer) -> None:
    """The top-level commands of this module: ``exchange sla`` and ``exchange tick``."""
    root.command("sla")(sla)
    root.command("tick")(tick)
