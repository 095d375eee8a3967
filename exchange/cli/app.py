"""``exchange``: demo, catalog validate, db upgrade, run, status, subscription, audit verify.

Exit status: 0 all went well, 1 a subscriber (or a node) failed, 2 bad input.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from exchange.cli.airflow import airflow_app
from exchange.cli.quality import quality_app, quality_notes
from exchange.cli.render import (
    ProgressReporter,
    console,
    demo_table,
    errors,
    run_table,
    runs_table,
    subscribers_table,
)
from exchange.cli.workflow import register as register_workflow
from exchange.kernel.errors import BadInput, CatalogError, ExchangeError

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    help="Data-exchange engine for city government front-end machines.",
)
catalog_app = typer.Typer(no_args_is_help=True, help="Validate catalog files.")
db_app = typer.Typer(no_args_is_help=True, help="The metadata store.")
sub_app = typer.Typer(no_args_is_help=True, help="Subscriptions to resources.")
audit_app = typer.Typer(no_args_is_help=True, help="The hash-chained audit log.")
app.add_typer(catalog_app, name="catalog")
app.add_typer(db_app, name="db")
app.add_typer(sub_app, name="subscription")
app.add_typer(audit_app, name="audit")
app.add_typer(airflow_app, name="airflow")
app.add_typer(quality_app, name="quality")
register_workflow(app, sub_app)  # subscription apply/review/..., sla, tick, calendar, user, serve

CatalogOpt = Annotated[
    Path,
    typer.Option("--catalog", "-c", envvar="EXCHANGE_CATALOG", help="Catalog YAML file."),
]


def _workspace(catalog: Path):  # type: ignore[no-untyped-def]
    from exchange.workspace import Workspace

    return Workspace.open(catalog)


@app.command()
def demo(
    rows: Annotated[int, typer.Option(help="Rows in the provider's table.")] = 100_000,
    home: Annotated[Path, typer.Option(help="Where the demo's databases go.")] = Path(
        ".exchange/demo"
    ),
) -> None:
    """Run a whole exchange on embedded SQLite front-end DBs and print what reached whom."""
    from exchange.demo.run import GRANTS, run_demo

    reporter = ProgressReporter()
    with reporter:
        result = run_demo(home.resolve(), rows, reporter, say=console.print)
    fields = {i + 1: f for i, f in enumerate(GRANTS.values())}
    start = 0
    for label, summary, seconds in result.runs:
        n = len(GRANTS)
        console.print(
            demo_table(label, summary, reporter.results[start : start + n], fields, seconds)
        )
        start += n
    for node, ok in result.verified.items():
        mark = "[green]matches" if ok else "[red]DIFFERS FROM"
        console.print(f"{node}: target table {mark}[/] the source projection of its granted fields")
    for note in result.notes:
        console.print(note, markup=False, highlight=False)
    if result.folder is not None:
        from exchange.cli.render import folder_demo_table

        for label, summary, results, seconds in result.folder.runs:
            console.print(folder_demo_table(label, summary, results, seconds))
        for node, ok in result.folder.verified.items():
            mark = "[green]matches" if ok else "[red]DIFFERS FROM"
            console.print(f"{node}: folder {mark}[/] the provider's, file by file (sha256)")
    console.print(f"Catalog, databases and staged runs are in {result.home}")
    folder_ok = result.folder is None or (
        all(result.folder.verified.values())
        and all(s.status == "succeeded" for _, s, _, _ in result.folder.runs)
    )
    if not all(result.verified.values()) or any(s.status != "succeeded" for _, s, _ in result.runs):
        raise typer.Exit(1)
    if not folder_ok:
        raise typer.Exit(1)


@catalog_app.command("validate")
def catalog_validate(path: Path) -> None:
    """Check a catalog file; list every problem as file:line key.path: message."""
    from exchange.catalog import load_catalog

    cat = load_catalog(path)
    console.print(f"{path}: valid ({len(cat.nodes)} nodes, {len(cat.resources)} resources)")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the metadata store ($EXCHANGE_DB_URL, default a SQLite file)."""
    from connectors.secrets import safe_url
    from exchange.kernel.settings import Settings
    from exchange.store.db import create_store_engine, upgrade

    engine = create_store_engine(Settings.from_env().db_url)
    changed = upgrade(engine)
    console.print(f"{safe_url(engine.url)}: {'upgraded to' if changed else 'already at'} head")


@app.command()
def run(
    resource: str,
    catalog: CatalogOpt = Path("catalog.yaml"),
    full: Annotated[
        bool, typer.Option("--full", help="Re-extract everything and reconcile.")
    ] = False,
) -> None:
    """Exchange one resource now: extract once, validate, deliver to every subscriber."""
    from exchange.pipeline.runner import run_resource

    ws = _workspace(catalog)
    try:
        with ProgressReporter() as reporter:
            summary = run_resource(ws, resource, full=full, reporter=reporter)
        console.print(run_table(summary, reporter.results))
        console.print(
            f"extracted {summary.extracted:,}, valid {summary.valid:,}, "
            f"quarantined {summary.quarantined:,}"
        )
        for note in quality_notes(summary):
            console.print(note, markup=False, highlight=False)
    finally:
        ws.close()
    if summary.failures or summary.held:
        raise typer.Exit(1)


@app.command()
def status(
    resource: Annotated[str | None, typer.Argument()] = None,
    catalog: CatalogOpt = Path("catalog.yaml"),
) -> None:
    """Last runs, and per subscriber its watermark, rows delivered and last failure."""
    from exchange.status import recent_runs, subscriber_status

    ws = _workspace(catalog)
    try:
        console.print(runs_table(recent_runs(ws, resource)))
        console.print(subscribers_table(subscriber_status(ws, resource)))
    finally:
        ws.close()


@sub_app.command("add")
def subscription_add(
    resource: str,
    node: Annotated[str, typer.Option(help="The requester's front-end node.")],
    until: Annotated[dt.datetime, typer.Option(formats=["%Y-%m-%d"], help="Last day of use.")],
    fields: Annotated[str, typer.Option(help="Granted fields, comma-separated.")] = "",
    table: Annotated[str | None, typer.Option(help="Target table (default: source name).")] = None,
    schema: Annotated[str | None, typer.Option(help="Target schema.")] = None,
    target_dir: Annotated[
        str | None, typer.Option("--dir", help="Target directory on a file node.")
    ] = None,
    catalog: CatalogOpt = Path("catalog.yaml"),
) -> None:
    """Add a subscription approved outside the workflow: it starts in implementation."""
    from exchange.subscriptions import add_subscription

    ws = _workspace(catalog)
    try:
        names = [f.strip() for f in fields.split(",") if f.strip()]
        sub = add_subscription(
            ws, resource, node, names, until.date(), target_table=table, target_schema=schema,
            target_dir=target_dir,
        )  # fmt: skip
        if target_dir is not None or not sub.fields:
            from exchange.files.status import describe_target

            console.print(
                f"subscription {sub.id}: {resource} -> {describe_target(ws, sub)} "
                f"until {sub.valid_until}"
            )
            return
        console.print(
            f"subscription {sub.id}: {resource} -> {node}.{sub.target_table} "
            f"({', '.join(sub.fields)}) until {sub.valid_until}"
        )
    finally:
        ws.close()


@sub_app.command("list")
def subscription_list(
    resource: Annotated[str | None, typer.Argument()] = None,
    catalog: CatalogOpt = Path("catalog.yaml"),
) -> None:
    """List subscriptions."""
    from rich.table import Table

    from exchange.subscriptions import list_subscriptions

    ws = _workspace(catalog)
    try:
        t = Table(title="subscriptions")
        for col in ("id", "resource", "node.table", "fields", "status", "valid until"):
            t.add_column(col, overflow="fold")
        for s in list_subscriptions(ws, resource):
            t.add_row(
                str(s.id),
                s.resource_code,
                f"{s.subscriber_node}.{s.target_table}",
                ", ".join(s.fields),
                s.status,
                str(s.valid_until),
            )
        console.print(t)
    finally:
        ws.close()


@audit_app.command("verify")
def audit_verify() -> None:
    """Recompute the audit chain; name the first broken link."""
    from exchange import audit
    from exchange.kernel.settings import Settings
    from exchange.store import Store

    store = Store(Settings.from_env().db_url)
    with store.session() as s:
        check = audit.verify(s)
    if check.broken_id is not None:
        errors.print(f"audit chain broken at event {check.broken_id}: {check.reason}")
        raise typer.Exit(1)
    console.print(f"audit chain intact: {check.events} events")


def main() -> None:
    """Console entry point: map the error hierarchy to exit codes and plain messages."""
    os.environ.setdefault("SQLALCHEMY_WARN_20", "0")
    try:
        app()
    except CatalogError as exc:
        for problem in exc.problems:
            errors.print(problem, markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except BadInput as exc:
        errors.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except ExchangeError as exc:
        errors.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(1)
