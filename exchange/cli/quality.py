"""``exchange quality``: quarantine, tickets, error reports, scores, GX suites and reports.

Thin faces over ``exchange.quality``; times are shown in Asia/Shanghai. Answering, closing and
filing are done as the user named by ``--as`` (or ``$EXCHANGE_USER``), checked as
``exchange.quality.access`` says; without one, as the platform operator (``platform:<OS
user>``), like every other command.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from exchange.cli.options import (
    DEFAULT_CATALOG,
    AsOpt,
    CatalogOpt,
    principal,
    split_list,
    workspace,
)
from exchange.cli.render import console, local
from exchange.kernel.errors import BadInput
from exchange.kernel.text import plural

if TYPE_CHECKING:
    from exchange.gateway.usage import ApiQuality
    from exchange.runs.record import RunSummary
    from exchange.workspace import Workspace

app = typer.Typer(
    name="quality",
    no_args_is_help=True,
    help="Data quality: quarantine, tickets, error reports, scores, GX.",
)
ticket_app = typer.Typer(
    name="ticket", no_args_is_help=True, help="Answer and close quality tickets."
)
report_app = typer.Typer(
    name="error-report", no_args_is_help=True, help="Error reports (纠错) from requesters."
)
app.add_typer(ticket_app)
app.add_typer(report_app)

RESOLUTION_HELP = "fixed_at_source | accepted | will_not_fix"


def quality_notes(summary: RunSummary) -> list[str]:
    """Lines ``exchange run`` adds under its table: a held-back delivery, stale data."""
    notes = []
    if summary.held:
        notes.append(f"HELD BACK, nothing delivered: {summary.held}")
    if summary.stale:
        notes.append(summary.stale)
    if summary.quarantined:
        notes.append(
            f"{plural(summary.quarantined, 'row')} quarantined: "
            f"exchange quality quarantine {summary.resource}"
        )
    return notes


def _keys(ws: Workspace, resource_code: str, keys: list[str]) -> list[str]:
    """Row keys as they may be shown: ID and phone numbers in them masked."""
    from exchange.quality.quarantine import mask_key_text

    resource = ws.catalog.resources.get(resource_code)
    return mask_key_text(resource, keys) if resource is not None else keys


def _deadline(at: dt.datetime, provisional: bool) -> str:
    return local(at) + (" (provisional)" if provisional else "")


@app.command("quarantine")
def quarantine(
    resource: str,
    catalog: CatalogOpt = DEFAULT_CATALOG,
    all_rows: Annotated[
        bool, typer.Option("--all", help="Include rows released by a later run.")
    ] = False,
    limit: Annotated[int, typer.Option(help="Rows shown at most.")] = 50,
) -> None:
    """Rows of RESOURCE held in quarantine, with every reason (newest first)."""
    from exchange.quality.quarantine import list_quarantine

    with workspace(catalog) as ws:
        total, rows = list_quarantine(ws, resource, include_released=all_rows, limit=limit)
    t = Table(title=f"quarantine of {resource}: {total:,} rows held")
    for col in ("run", "row key", "reasons", "since", "released by"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(r.run_id, r.row_key, r.reasons, local(r.created_at), r.released_run_id or "")
    console.print(t)


@app.command("tickets")
def tickets(
    resource: Annotated[str | None, typer.Argument()] = None,
    catalog: CatalogOpt = DEFAULT_CATALOG,
    status: Annotated[str | None, typer.Option(help="open | answered | closed")] = None,
    overdue_only: Annotated[
        bool, typer.Option("--overdue", help="Only open tickets past their deadline.")
    ] = False,
) -> None:
    """Quality tickets for providers: counts by rule, sample keys, deadline."""
    from exchange.kernel.clock import utcnow
    from exchange.quality.tickets import list_tickets, overdue

    with workspace(catalog) as ws:
        now = utcnow()
        with ws.store.session() as s:
            found = list_tickets(
                s, resource, status=status, overdue_at=now if overdue_only else None
            )
    t = Table(title="quality tickets")
    for col in ("id", "resource", "provider", "status", "due (Asia/Shanghai)", "rows",
                "by rule", "sample keys", "findings", "answer"):  # fmt: skip
        t.add_column(col, overflow="fold")
    for k in found:
        state = "[red]OVERDUE" if overdue(k, now) else k.status
        t.add_row(
            str(k.id),
            k.resource_code,
            k.provider,
            state,
            _deadline(k.due_at, k.due_provisional),
            f"{k.rows:,}",
            ", ".join(f"{rule} {n:,}" for rule, n in sorted(k.counts.items())),
            ", ".join(k.sample_keys),
            "; ".join(k.findings),
            f"{k.resolution}: {k.answer}" if k.resolution else "",
        )
    console.print(t)
    late = sum(1 for k in found if overdue(k, now))
    if late:
        console.print(f"{late} ticket(s) overdue")


@ticket_app.command("answer")
def ticket_answer(
    ticket_id: int,
    resolution: Annotated[str, typer.Option(help=RESOLUTION_HELP)],
    reason: Annotated[str, typer.Option(help="Why: what was fixed, or why it stays.")],
    as_user: AsOpt = None,
    catalog: CatalogOpt = DEFAULT_CATALOG,
) -> None:
    """The provider's answer to a ticket (its resource's provider department, or an admin)."""
    from exchange.quality.tickets import answer_as

    with workspace(catalog) as ws:
        k = answer_as(ws, principal(ws, as_user), ticket_id, resolution, reason)
        late = k.answered_at is not None and k.answered_at > k.due_at
    console.print(
        f"ticket {ticket_id}: answered ({resolution}){' after its deadline' if late else ''}"
    )


@ticket_app.command("close")
def ticket_close(
    ticket_id: int, as_user: AsOpt = None, catalog: CatalogOpt = DEFAULT_CATALOG
) -> None:
    """Close an answered ticket (the platform's review of the answer: an admin)."""
    from exchange.quality.tickets import close_as

    with workspace(catalog) as ws:
        close_as(ws, principal(ws, as_user), ticket_id)
    console.print(f"ticket {ticket_id}: closed")


@report_app.command("add")
def report_add(
    resource: str,
    keys: Annotated[
        str,
        typer.Option(
            help="Row keys (primary key values), comma-separated; a composite key's values "
            "joined by '|' in its columns' order (a key of (uscc, year) is 91410400MA|2026)."
        ),
    ],
    fields: Annotated[str, typer.Option(help="The wrong fields, comma-separated.")],
    description: Annotated[str, typer.Option(help="What is wrong.")],
    subscription: Annotated[
        int | None, typer.Option(help="The reporter's subscription id.")
    ] = None,
    reporter: Annotated[
        str | None, typer.Option(help="Who reports (an admin filing on a requester's behalf).")
    ] = None,
    discovered: Annotated[
        dt.datetime | None, typer.Option(formats=["%Y-%m-%d"], help="When it was found.")
    ] = None,
    as_user: AsOpt = None,
    catalog: CatalogOpt = DEFAULT_CATALOG,
) -> None:
    """File an error report on rows a requester received (a requester whose department
    subscribes to RESOURCE, or an admin)."""
    from exchange.quality.error_reports import file_report

    with workspace(catalog) as ws:
        r = file_report(
            ws,
            resource,
            split_list(keys),
            split_list(fields),
            description,
            subscription_id=subscription,
            reporter=reporter,
            discovered_on=discovered.date() if discovered else None,
            who=principal(ws, as_user),
        )
    console.print(
        f"error report {r.id} on {resource} ({len(r.row_keys)} rows): the provider answers by "
        f"{_deadline(r.due_at, r.due_provisional)}"
        + (" — reported later than 1 working day after discovery" if r.late else "")
    )


@report_app.command("answer")
def report_answer(
    report_id: int,
    resolution: Annotated[str, typer.Option(help=RESOLUTION_HELP)],
    reason: Annotated[str, typer.Option(help="What was done, or why not.")],
    as_user: AsOpt = None,
    catalog: CatalogOpt = DEFAULT_CATALOG,
) -> None:
    """The provider's answer to an error report (its resource's provider department, or an
    admin)."""
    from exchange.quality.error_reports import answer_report

    with workspace(catalog) as ws:
        r = answer_report(ws, report_id, resolution, reason, principal(ws, as_user))
    late = r.answered_at is not None and r.answered_at > r.due_at
    console.print(f"error report {report_id}: answered ({resolution}){' late' if late else ''}")


@report_app.command("close")
def report_close(
    report_id: int, as_user: AsOpt = None, catalog: CatalogOpt = DEFAULT_CATALOG
) -> None:
    """Close an answered error report (the department it was filed for, or an admin)."""
    from exchange.quality.error_reports import close_report

    with workspace(catalog) as ws:
        close_report(ws, report_id, principal(ws, as_user))
    console.print(f"error report {report_id}: closed")


@report_app.command("list")
def report_list(
    resource: Annotated[str | None, typer.Argument()] = None,
    catalog: CatalogOpt = DEFAULT_CATALOG,
) -> None:
    """Error reports, their deadlines, and how far their fix has reached."""
    from exchange.kernel.clock import utcnow
    from exchange.quality.error_reports import list_reports

    with workspace(catalog) as ws:
        views = list_reports(ws, resource)
        shown = {v.report.id: _keys(ws, v.report.resource_code, v.report.row_keys) for v in views}
    now = utcnow()
    t = Table(title="error reports")
    for col in ("id", "resource", "reporter", "rows", "fields", "status", "answer by",
                "answer", "fix reached", "carried by"):  # fmt: skip
        t.add_column(col, overflow="fold")
    for v in views:
        r = v.report
        status = "[red]OVERDUE" if r.status == "open" and now > r.due_at else r.status
        t.add_row(
            str(r.id),
            r.resource_code,
            r.reporter,
            ", ".join(shown[r.id][:5]) + (" …" if len(r.row_keys) > 5 else ""),
            ", ".join(r.fields),
            status,
            _deadline(r.due_at, r.due_provisional),
            f"{r.resolution}: {r.answer}" if r.resolution else "",
            f"{len(v.reached)}/{len(v.subscribers)} subscribers",
            ", ".join(f"{d.run_id}→sub {d.subscription_id}" for d in v.fix_deliveries),
        )
    console.print(t)


@report_app.command("show")
def report_show(report_id: int, catalog: CatalogOpt = DEFAULT_CATALOG) -> None:
    """One error report and every delivery that carried its fix."""
    from exchange.quality.error_reports import show_report

    with workspace(catalog) as ws:
        v = show_report(ws, report_id)
        rows = _keys(ws, v.report.resource_code, v.report.row_keys)
        carried = {d.id: _keys(ws, v.report.resource_code, d.keys) for d in v.fix_deliveries}
    r = v.report
    console.print(
        f"error report {r.id} on {r.resource_code} by {r.reporter}: {r.status}\n"
        f"rows {', '.join(rows)}; fields {', '.join(r.fields)}\n{r.description}\n"
        f"answer by {_deadline(r.due_at, r.due_provisional)}"
        + (f"; answered {local(r.answered_at)}: {r.resolution}: {r.answer}" if r.resolution else "")
    )
    t = Table(title=f"deliveries that carried the fix: {len(v.reached)}/{len(v.subscribers)}")
    for col in ("run", "subscription", "rows carried"):
        t.add_column(col)
    for d in v.fix_deliveries:
        t.add_row(d.run_id, str(d.subscription_id), ", ".join(carried[d.id]))
    console.print(t)


def _period(
    since: dt.datetime | None, until: dt.datetime | None, period: str | None
) -> tuple[dt.date, dt.date]:
    from exchange.kernel.clock import today

    if period:
        try:
            start = dt.date.fromisoformat(period + "-01")
        except ValueError:
            raise BadInput(f"--period must be a month like 2026-11, not {period!r}") from None
        nxt = (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
        return start, nxt - dt.timedelta(days=1)
    end = until.date() if until else today()
    start = since.date() if since else end - dt.timedelta(days=29)
    if start > end:
        raise BadInput(f"--since {start} is after --until {end}")
    return start, end


#: The columns of the api resources' scores (after the table resources' in a CSV).
API_COLUMNS = ("calls", "ok", "4xx", "429", "refused", "failed", "unavailable",
               "availability", "timeliness", "p95_ms")  # fmt: skip


def _api_cells(q: ApiQuality) -> list[str]:
    counts = (q.calls, q.ok, q.answered_4xx, q.quota, q.refused, q.failed, q.unavailable)
    shares = ("-" if v is None else f"{v:.1f}" for v in (q.availability, q.timeliness))
    return [
        *(f"{n:,}" for n in counts),
        *shares,
        "-" if q.p95_ms is None else f"{q.p95_ms:g}",
    ]


def _api_csv_row(q: ApiQuality) -> dict[str, object]:
    counts = (q.calls, q.ok, q.answered_4xx, q.quota, q.refused, q.failed, q.unavailable)
    figures = (*counts, q.availability, q.timeliness, q.p95_ms)
    return {
        "resource": q.resource,
        "since": q.since.isoformat(),
        "until": q.until.isoformat(),
        "kind": "api",
        **dict(zip(API_COLUMNS, figures, strict=True)),
    }


@app.command("scores")
def scores(
    resource: Annotated[str | None, typer.Argument()] = None,
    catalog: CatalogOpt = DEFAULT_CATALOG,
    since: Annotated[dt.datetime | None, typer.Option(formats=["%Y-%m-%d"])] = None,
    until: Annotated[dt.datetime | None, typer.Option(formats=["%Y-%m-%d"])] = None,
    period: Annotated[str | None, typer.Option(help="A month, e.g. 2026-11.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table | csv | json")] = "table",
    output: Annotated[Path | None, typer.Option(help="Write CSV/JSON here.")] = None,
) -> None:
    """The six assessment scores (document 004 §10) per resource (default: the last 30 days);
    api resources, from their gateway calls: availability, timeliness and the call counts."""
    from exchange.gateway.usage import TIMELY_MS, api_quality
    from exchange.quality.scores import DIMENSIONS, api_resources, resource_scores

    if fmt not in ("table", "csv", "json"):
        raise BadInput(f"--format must be table, csv or json, not {fmt!r}")
    start, end = _period(since, until, period)
    with workspace(catalog) as ws:
        found = resource_scores(ws, start, end, resource)
        apis = api_quality(ws.store, api_resources(ws, resource), start, end)
    if fmt == "table":
        if found or not apis:
            t = Table(title=f"quality scores {start} .. {end} (0-100)")
            for col in ("resource", "runs", "rows", *DIMENSIONS):
                t.add_column(col, justify="right" if col != "resource" else "left")
            for sc in found:
                values = [getattr(sc, d) for d in DIMENSIONS]
                t.add_row(
                    sc.resource,
                    str(sc.runs),
                    f"{sc.rows:,}",
                    *("-" if v is None else f"{v:.1f}" for v in values),
                )
            console.print(t)
        if apis:
            t = Table(
                title=f"API resources {start} .. {end}: availability, timeliness "
                f"(answered within {TIMELY_MS:g} ms) 0-100"
            )
            for col in ("resource", *API_COLUMNS):
                t.add_column(col, justify="right" if col != "resource" else "left")
            for q in apis:
                t.add_row(q.resource, *_api_cells(q))
            console.print(t)
        if output is None:
            return
        fmt = "json" if output.suffix == ".json" else "csv"
    if fmt == "json":
        docs = [sc.as_dict() for sc in found] + [q.as_dict() for q in apis]
        text = json.dumps(docs, ensure_ascii=False, indent=1)
    else:
        buf = io.StringIO()
        names = ["resource", "since", "until", "runs", "rows", *DIMENSIONS]
        # Api columns only when there are api resources: a CSV of tables stays as it was.
        writer = csv.DictWriter(buf, fieldnames=names + (["kind", *API_COLUMNS] if apis else []))
        writer.writeheader()
        for sc in found:
            writer.writerow({**sc.as_dict(), **({"kind": "table"} if apis else {})})
        for q in apis:
            writer.writerow(_api_csv_row(q))
        text = buf.getvalue()
    if output is not None:
        output.write_text(text, encoding="utf-8")
        console.print(f"scores of {len(found) + len(apis)} resource(s) written to {output}")
    else:
        print(text, end="" if text.endswith("\n") else "\n")


@app.command("export")
def export(resource: str, catalog: CatalogOpt = DEFAULT_CATALOG) -> None:
    """Write RESOURCE's rules as a Great Expectations suite into $EXCHANGE_HOME/gx."""
    from exchange.quality.gx import export_suite

    with workspace(catalog) as ws:
        path = export_suite(ws, resource)
    console.print(f"suite written to {path}")


@app.command("report")
def report(
    resource: str,
    catalog: CatalogOpt = DEFAULT_CATALOG,
    limit: Annotated[int, typer.Option(help="Rows GX checks at most (sampled above).")] = 200_000,
) -> None:
    """Run GX on the last run's staged data of RESOURCE and build Data Docs."""
    from exchange.quality.gx import run_report

    with workspace(catalog) as ws:
        rep = run_report(ws, resource, limit)
    sampled = f" (sample of {rep.rows_checked:,})" if rep.rows_checked < rep.rows_staged else ""
    t = Table(
        title=f"GX report of {rep.resource}, run {rep.run_id}: {rep.rows_staged:,} rows{sampled}"
    )
    for col in ("expectation", "column", "rule", "result", "unexpected"):
        t.add_column(col, overflow="fold")
    for o in rep.outcomes:
        t.add_row(
            o.expectation,
            o.column,
            o.rule,
            "[green]pass" if o.success else "[red]fail",
            "" if o.unexpected is None else f"{o.unexpected:,}",
        )
    console.print(t)
    console.print(f"suite: {rep.suite}")
    console.print(f"Data Docs: {rep.docs}")
