"""``exchange audit export`` and ``exchange audit who``: the log as an outside auditor checks it,
and who received or called what, when.

Times are given in Asia/Shanghai (ISO 8601, or a date: ``--since`` its 00:00, ``--until`` the
end of that day) and shown in Asia/Shanghai.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from exchange.cli.options import DEFAULT_CATALOG, CatalogOpt, parse_time, store
from exchange.cli.render import console, errors
from exchange.kernel.errors import BadInput

if TYPE_CHECKING:  # only annotations: importing the CLI must not load the engine
    from exchange.audit.who import WhoReport

#: ``who`` without ``--since``: this many days before ``--until``.
WHO_DAYS = 30

SinceOpt = Annotated[
    str | None,
    typer.Option("--since", help="From this time on (Asia/Shanghai ISO 8601; a date: its 00:00)."),
]
UntilOpt = Annotated[
    str | None,
    typer.Option(
        "--until",
        help="Before this time (Asia/Shanghai ISO 8601; a date: up to the end of that day).",
    ),
]


def window_bound(text: str, what: str) -> dt.datetime:
    """A ``--since``/``--until`` as a stored (naive UTC) time: a bare date is 00:00 of that day
    for ``--since`` and 00:00 of the next for ``--until`` (the day is included)."""
    if what == "--until" and len(text.strip()) == 10:
        try:
            day = dt.date.fromisoformat(text.strip())
        except ValueError:
            pass
        else:
            text = (day + dt.timedelta(days=1)).isoformat()
    at = parse_time(text, what)
    assert at is not None
    return at


def window(
    since: str | None, until: str | None, days: int | None
) -> tuple[dt.datetime, dt.datetime]:
    """The stored bounds of ``[since, until)``; an omitted ``--until`` is now and an omitted
    ``--since`` ``days`` before it (``None``: it is required)."""
    from exchange.kernel.clock import utcnow

    end = window_bound(until, "--until") if until else utcnow()
    if since:
        start = window_bound(since, "--since")
    elif days is not None:
        start = end - dt.timedelta(days=days)
    else:
        raise BadInput("give --since: the export covers a window of the log")
    if start >= end:
        raise BadInput(f"--since {since} is not before --until {until or 'now'}")
    return start, end


def audit_export(
    since: SinceOpt = None,
    until: UntilOpt = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the export here (default: stdout).")
    ] = None,
) -> None:
    """Export the events of a window with their signed checkpoints as JSON lines, for an
    auditor to verify with docs/tools/verify_audit_export.py (format: docs/audit.md)."""
    from exchange.audit import keys
    from exchange.audit.export import export, has_checkpoints
    from exchange.audit.settings import AuditSettings
    from exchange.kernel.settings import Settings

    start, end = window(since, until, None)
    config = AuditSettings.from_env(Settings.from_env())
    with store() as st:
        installation = st.installation_id
        with st.session() as s:
            sealed = has_checkpoints(s)
        # No checkpoint yet: no key may exist yet either (it is made for the first one).
        public = keys.public_key(config) if sealed else None
        if out is None:
            with st.session() as s:
                summary = export(
                    s, sys.stdout, since=start, until=end, installation=installation,
                    public_key=public,
                )  # fmt: skip
            sys.stdout.flush()
        else:
            tmp = out.with_name(out.name + ".part")
            with tmp.open("w", encoding="utf-8") as f, st.session() as s:
                summary = export(
                    s, f, since=start, until=end, installation=installation, public_key=public
                )
            tmp.replace(out)  # a half-written export never carries the name asked for
    said = (
        f"exported {summary.events:,} events and {summary.checkpoints:,} checkpoints"
        + (f" (seq {summary.first_seq:,}-{summary.last_seq:,})" if summary.first_seq else "")
        + (f", to {out}" if out else "")
    )
    errors.print(said, markup=False, highlight=False)
    if summary.unsealed:
        errors.print(
            f"note: the last {summary.unsealed:,} events are not sealed by a checkpoint yet "
            "(exchange audit seal signs one)",
            markup=False,
            highlight=False,
        )
    if summary.unchained:
        errors.print(
            f"note: {summary.unchained:,} events of the window are not chained yet and are not "
            "in the export (exchange audit seal chains them)",
            markup=False,
            highlight=False,
        )


def audit_who(
    subject: Annotated[
        str,
        typer.Argument(
            metavar="SUBJECT",
            help="A resource code, subscription:N (or N), or a department (code or name).",
        ),
    ],
    since: SinceOpt = None,
    until: UntilOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines, one per row.")] = False,
    catalog: CatalogOpt = DEFAULT_CATALOG,
) -> None:
    """Who received or called what, when: the deliveries and gateway calls of a resource,
    a subscription or a department (default: the last 30 days)."""
    from exchange.audit.who import parse_subject, who

    departments = _departments(catalog)
    start, end = window(since, until, WHO_DAYS)
    asked = parse_subject(subject, departments)
    with store() as st, st.session() as s:
        report = who(s, asked, start, end, departments)
    if as_json:
        for r in report.receipts:
            typer.echo(json.dumps(r.to_json(), ensure_ascii=False))
        return
    _print_who(report)


def _departments(catalog: Path) -> dict[str, str]:
    """The catalog's department names, if the catalog is at hand (``who`` needs only the
    store: the subscriptions keep their department's name too)."""
    if not catalog.exists():
        return {}
    from exchange.catalog import load_catalog

    return dict(load_catalog(catalog).departments)


def _print_who(report: WhoReport) -> None:
    from rich.table import Table

    from exchange.cli.render import local

    t = Table(
        title=f"{report.subject}: {local(report.since)} – {local(report.until)} (Asia/Shanghai)"
    )
    for col in ("when", "who", "what", "how"):
        t.add_column(col, overflow="fold")
    for r in report.receipts:
        when = local(r.at) if r.last_at == r.at else f"{local(r.at)} – {local(r.last_at)}"
        dept = (
            f"{r.department_name} ({r.department})"
            if r.department_name and r.department_name != r.department
            else r.department or "-"
        )
        by = f"code {r.code_id}" if r.code_id is not None else _landed(r.node, r.target)
        what = (
            f"{r.resource} / subscription {r.subscription_id}" if r.subscription_id else r.resource
        )
        t.add_row(when, f"{dept}\n{by}" if by else dept, what, r.how)
    console.print(t)
    if not report.receipts:
        console.print(f"nothing delivered to or called by {report.subject} in this window")


def _landed(node: str, target: str) -> str:
    """Where a delivery landed: ``node.table`` or ``node:/dir``."""
    if not target:
        return node
    return f"{node}:{target}" if target.startswith("/") else f"{node}.{target}"


def register(app: typer.Typer) -> None:
    """Add the trail's commands to the ``audit`` group."""
    app.command("export")(audit_export)
    app.command("who")(audit_who)
