"""``exchange``: the root of the command line and its own commands (serve, demo, run, status,
catalog validate, db upgrade, audit verify); every other group lives in a module of its own
(``subscription``, ``user``, ``clock``, ``quality``, ``airflow``), exposes a ``typer.Typer``
named ``app`` and, for top-level commands, a ``register(root)``; all are wired below.

Exit status (``main``): 0 all went well, 1 a subscriber (or a node) failed or a run was held
back, 2 bad input.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup
from typer.models import DefaultPlaceholder

from exchange.cli import account as account_cli
from exchange.cli import airflow, clock, gateway, prune, quality, subscription, upstream, user
from exchange.cli import audit as audit_cli
from exchange.cli import calendar as calendar_cli
from exchange.cli import code as code_cli
from exchange.cli import demand as demand_cli
from exchange.cli import department as department_cli
from exchange.cli import resource as resource_cli
from exchange.cli.options import (
    DEFAULT_CATALOG,
    AsOpt,
    CatalogArg,
    CatalogOpt,
    VersionOpt,
    principal,
    workspace,
)
from exchange.cli.render import (
    ProgressReporter,
    console,
    demo_table,
    errors,
    run_table,
    runs_table,
    subscribers_table,
)
from exchange.kernel.errors import BadInput, CatalogError, ExchangeError

if TYPE_CHECKING:
    from typer._click import Command, Context, HelpFormatter


class _Groups(dict[str, "Command"]):
    """The root's commands: each group a stand-in carrying only its help (what the root's
    help lists) until a command line names the group, which builds its commands then."""

    def __init__(self, built: Mapping[str, Command], apps: Mapping[str, typer.Typer]) -> None:
        super().__init__(built)
        self.update({name: _stand_in(sub) for name, sub in apps.items()})
        self.pending = dict(apps)
        self.listing = False  # while the root's help lists its commands

    def __getitem__(self, name: str) -> Command:
        if not self.listing and name in self.pending:
            self[name] = typer.main.get_group(self.pending.pop(name))
        return super().__getitem__(name)

    def get(self, name: str, default: Any = None) -> Any:
        return self[name] if name in self else default


def _stand_in(sub: typer.Typer) -> TyperGroup:
    def given(value: Any) -> Any:  # a Typer option left at its default is a placeholder
        return value.value if isinstance(value, DefaultPlaceholder) else value

    info = sub.info
    return TyperGroup(name=given(info.name), help=given(info.help), hidden=bool(given(info.hidden)))


class _Root(TyperGroup):
    """``exchange``: its groups are built lazily (``_Groups``). Typer builds the whole tree
    of 60 commands for every command line otherwise: 45 ms of each start."""

    groups: dict[str, typer.Typer] = {}  # name -> the group's app, in the order of --help

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.commands = _Groups(self.commands, self.groups)

    def format_help(self, ctx: Context, formatter: HelpFormatter) -> None:
        assert isinstance(self.commands, _Groups)
        self.commands.listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self.commands.listing = False


app = typer.Typer(
    cls=_Root,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    help="Data-exchange engine for city government front-end machines.",
)
catalog_app = typer.Typer(
    name="catalog",
    no_args_is_help=True,
    help="Validate catalog files; check a resource against the real tables.",
)
db_app = typer.Typer(name="db", no_args_is_help=True, help="The metadata store.")


@app.callback()
def root(version: VersionOpt = False) -> None:
    """Data-exchange engine for city government front-end machines."""


# -- every group, in one place and one way (the order is the order of `exchange --help`) ------

GROUPS = (
    catalog_app,
    db_app,
    subscription.app,
    upstream.app,
    resource_cli.app,
    demand_cli.app,
    audit_cli.app,
    airflow.app,
    quality.app,
    clock.app,
    user.app,
    code_cli.app,
    account_cli.app,
    department_cli.app,
)
_Root.groups = {group.info.name: group for group in GROUPS}  # type: ignore[misc]
clock.register(app)  # exchange sla, exchange tick: listed before the root's own commands
prune.register(app)  # exchange prune
gateway.register(app)  # exchange gateway, exchange usage
calendar_cli.register(clock.app)  # exchange calendar status | load


# -- the root's own commands ------------------------------------------------------------------


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    catalog: CatalogOpt = DEFAULT_CATALOG,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Server processes (about one per core).")
    ] = 1,
) -> None:
    """Run the REST API (OpenAPI at /docs) on loopback unless --host says otherwise."""
    import uvicorn

    from exchange.api import create_app

    with workspace(catalog) as ws:  # checks the catalog and migrates the store, once
        if workers == 1:
            uvicorn.run(create_app(ws), host=host, port=port, log_level="info")
            return
    # each worker process opens its own workspace from the environment at its first call
    os.environ["EXCHANGE_CATALOG"] = str(catalog.resolve())
    uvicorn.run(
        "exchange.api:create_app",
        factory=True,
        workers=workers,
        host=host,
        port=port,
        log_level="info",
    )


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


@app.command()
def run(
    resource: str,
    catalog: CatalogOpt = DEFAULT_CATALOG,
    full: Annotated[
        bool,
        typer.Option(
            "--full",
            help="Re-extract everything and reconcile deletes (a file resource: only with "
            "files.mirror); abandons an unfinished run.",
        ),
    ] = False,
    restart: Annotated[
        bool,
        typer.Option("--restart", help="Abandon an unfinished run and start a new one."),
    ] = False,
) -> None:
    """Exchange one resource now: extract once, validate, deliver to every subscriber. An
    unfinished run of the resource is resumed; a live one elsewhere refuses (exit 1)."""
    from exchange.workspace import arrow_without_pandas

    arrow_without_pandas()  # before the engine's first Arrow value: no pandas on a run's path
    from exchange.flow import run_resource

    with workspace(catalog) as ws:
        with ProgressReporter() as reporter:
            summary = run_resource(ws, resource, full=full, restart=restart, reporter=reporter)
        for note in summary.notes:
            console.print(note, markup=False, highlight=False)
        console.print(run_table(summary, reporter.results))
        console.print(
            f"extracted {summary.extracted:,}, valid {summary.valid:,}, "
            f"quarantined {summary.quarantined:,}"
        )
        if summary.note:
            console.print(summary.note, markup=False, highlight=False)
        for note in quality.quality_notes(summary):
            console.print(note, markup=False, highlight=False)
    if summary.failures or summary.held:
        raise typer.Exit(1)


@app.command()
def status(
    resource: Annotated[str | None, typer.Argument()] = None,
    as_user: AsOpt = None,
    catalog: CatalogOpt = DEFAULT_CATALOG,
) -> None:
    """Last runs, and per subscriber its watermark, rows delivered and last failure (with
    --as or $EXCHANGE_USER: only what that user may see)."""
    from exchange.status import recent_runs, resource_notices, subscriber_status, visible_resources

    with workspace(catalog) as ws:
        who = principal(ws, as_user)
        shown = visible_resources(ws, who)
        console.print(runs_table(recent_runs(ws, resource, resources=shown)))
        console.print(subscribers_table(subscriber_status(ws, resource, who)))
        for notice in resource_notices(ws, resource, shown):  # change and offline notices
            console.print(notice.line(), markup=False, highlight=False, soft_wrap=True)


@app.command("runs")
def runs(
    resource: str,
    catalog: CatalogOpt = DEFAULT_CATALOG,
    limit: Annotated[int, typer.Option(help="How many of the latest runs.")] = 20,
) -> None:
    """A resource's runs: state, last step, lease holder (pid@host, heartbeat age), error."""
    from exchange.cli.render import lifecycle_table
    from exchange.status import recent_runs

    with workspace(catalog) as ws:
        console.print(lifecycle_table(resource, recent_runs(ws, resource, limit)))


@catalog_app.command("validate")
def catalog_validate(path: CatalogArg = DEFAULT_CATALOG) -> None:
    """Check a catalog file; list every problem as file:line key.path: message."""
    from exchange.catalog import load_catalog

    cat = load_catalog(path)
    console.print(f"{path}: valid ({len(cat.nodes)} nodes, {len(cat.resources)} resources)")


@catalog_app.command("list")
def catalog_list(path: CatalogArg = DEFAULT_CATALOG) -> None:
    """Every resource: kind, provider, share and origin (the city's own, or the national or
    provincial platform it is proxied from, with its upstream code and approval)."""
    from exchange.catalog import load_catalog
    from exchange.cli.render import catalog_table

    console.print(catalog_table(load_catalog(path)))


@catalog_app.command("check")
def catalog_check(resource: str, catalog: CatalogOpt = DEFAULT_CATALOG) -> None:
    """Compare a table resource's provider table and every deliverable subscriber's with the
    catalog, moving no data: exit 2 when a run would refuse a subscriber or the source lacks
    declared columns, 1 when a node cannot be reached (warnings change nothing)."""
    from exchange.cli.render import check_table
    from exchange.tables.check import check_resource

    with workspace(catalog) as ws:
        report = check_resource(ws, resource)
    if report.nothing_to_check:
        console.print(report.nothing_to_check, markup=False, highlight=False)
        return
    console.print(check_table(report))
    if report.refused:
        raise typer.Exit(2)
    if report.unreachable:
        raise typer.Exit(1)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the metadata store ($EXCHANGE_DB_URL, default a SQLite file)."""
    from connectors.secrets import safe_url
    from exchange.kernel.settings import Settings
    from exchange.store.db import create_store_engine, upgrade

    engine = create_store_engine(Settings.from_env().db_url)
    changed = upgrade(engine)
    console.print(f"{safe_url(engine.url)}: {'upgraded to' if changed else 'already at'} head")


def main() -> None:
    """Console entry point: map the error hierarchy to exit codes and plain messages.

    A catalog that does not validate lists every problem (2); other bad input (2); every other
    error of the engine (1), a run held back by quality (``RunHeld``) and failed deliveries
    among them. Exit statuses a command raises itself (``typer.Exit``) pass through.
    """
    os.environ.setdefault("SQLALCHEMY_WARN_20", "0")
    leave(_status())


def _status() -> int:
    """Run the command line; its exit status."""
    try:
        app()
    except SystemExit as exc:  # click ends every command line so, 0 included
        if isinstance(exc.code, str):  # sys.exit("message"): the interpreter's own rule
            print(exc.code, file=sys.stderr)
            return 1
        return exc.code or 0
    except CatalogError as exc:
        for problem in exc.problems:
            errors.print(problem, markup=False, highlight=False, soft_wrap=True)
        return 2
    except BadInput as exc:
        errors.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except ExchangeError as exc:  # RunHeld, DeliveryFailed, Forbidden, Retriable, ...
        errors.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return 1
    return 0


def leave(status: int) -> NoReturn:
    """End the process with ``status`` without the interpreter's teardown.

    By now everything a command does is committed or written; what is left is what the
    interpreter would do on its way out: wait for the threads that are not daemons, run the
    ``atexit`` hooks (the audit sealer's last seal, a temporary askpass folder's removal,
    logging's flush), then free every module and object one by one, which after a run that
    held a million rows in Arrow and imported SQLAlchemy, pyarrow and the drivers costs 0.3 to
    0.6 s for nothing (``make bench``: the "exit" step). The first two happen here, the last
    is left to the kernel, which frees the whole process at once."""
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()  # the interpreter's own list of hooks: there is no public runner
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`exchange status | head`)
            pass
    os._exit(status)
