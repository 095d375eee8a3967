"""``exchange gateway``: run the API gateway (uvicorn, uvloop + httptools, one process per
``--workers``, and one flusher process beside them storing their spools); ``exchange usage``:
its usage statistics as a table, CSV or JSON (``exchange.gateway.usage``)."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import threading
import time
from typing import Annotated

import typer
from rich.table import Table

from exchange.cli.options import DEFAULT_CATALOG, AsOpt, CatalogOpt, principal, workspace
from exchange.cli.render import console
from exchange.kernel.errors import BadInput

FORMATS = ("table", "csv", "json")


def gateway(
    catalog: CatalogOpt = DEFAULT_CATALOG,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Server processes (about one per core).")
    ] = 1,
) -> None:
    """Run the API gateway: GET|POST /{resource_code}/{operation} with an authorization code
    (Authorization: Bearer <code>), proxied to the upstream with the platform's credential."""
    from exchange.gateway.app import HEALTH, client_of, routes
    from exchange.gateway.keys import gateway_key
    from exchange.gateway.quota import counter_namespace
    from exchange.gateway.settings import GatewaySettings
    from exchange.gateway.spool import FlusherConfig, FlusherProcess

    with workspace(catalog) as ws:  # checks the catalog and migrates the store, once
        # Every node's credential resolves, and the key exists, before a worker starts: a
        # missing one is one message here (exit 2), not a worker dying at each restart.
        nodes = {r.node for ops in routes(ws.catalog).values() for r in ops.values()}
        for node in sorted(nodes):
            client_of(ws.catalog, node)
        gateway_key(ws.settings, ws.store)
        served = len(routes(ws.catalog))
        settings = GatewaySettings.from_env(ws.settings)
        config = FlusherConfig(
            db_url=ws.settings.db_url,
            spool_dir=str(settings.spool_dir),
            redis_url=settings.redis_url,
            # the serving processes' quota keys, where their calls' marks are
            namespace=counter_namespace(settings.namespace, ws.installation_id),
            interval_s=settings.flush_s,
        )
    what = (
        f"{served} api resource{'' if served == 1 else 's'}, "
        f"{workers} worker{'' if workers == 1 else 's'}"
    )
    console.print(f"gateway starting: {what}", markup=False, highlight=False)
    # "gateway on" only once a call is answered: a script that waits for it calls at once.
    threading.Thread(
        target=_announce, args=(host, port, HEALTH, what), name="gateway-announce", daemon=True
    ).start()
    # each worker process opens its own workspace from the environment at startup
    os.environ["EXCHANGE_CATALOG"] = str(catalog.resolve())
    # The workers only append their calls to their spools; the flusher process stores them
    # all (and adopts the files of workers that died): a store transaction never holds the
    # interpreter of a process serving calls.
    # (EXCHANGE_GATEWAY_FLUSHER=thread keeps a flusher thread in each worker instead: the
    # benchmark's comparison.)
    if os.environ.get("EXCHANGE_GATEWAY_FLUSHER") == "thread":  # checked by from_env above
        _serve(host, port, workers)
        return
    os.environ["EXCHANGE_GATEWAY_FLUSHER"] = "process"
    flusher = FlusherProcess(config)
    flusher.start()
    # uvicorn shuts down on SIGTERM, then raises the signal again to end the process: under
    # the default handler this process died there, its flusher left behind still storing,
    # and `exchange usage` right after the stop missed the last calls. This handler turns
    # that second SIGTERM into an exit that first waits for the flusher (exit status 143).
    signal.signal(signal.SIGTERM, _terminated)
    try:
        _serve(host, port, workers)
    finally:
        flusher.stop()  # after the workers: their last calls are stored before it exits


def _terminated(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _announce(host: str, port: int, health: str, what: str, *, within_s: float = 600.0) -> None:
    """Print ``gateway on http://host:port`` once its health path answers (a worker has
    started and the port accepts); nothing if it never does (the server's error says why)."""
    import http.client  # here: every command's start would pay for ssl and email

    target = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection(target, port, timeout=1.0)
        try:
            conn.request("GET", health)
            if conn.getresponse().status == 200:
                shown = f"[{host}]" if ":" in host else host
                typer.echo(f"gateway on http://{shown}:{port}: {what}")
                return
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.05)


def _serve(host: str, port: int, workers: int) -> None:
    import uvicorn

    uvicorn.run(
        "exchange.gateway.app:create_app",
        factory=True,
        workers=workers,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,  # a line per call costs more than the call; usage rows say it all
        log_level="warning",
    )


def usage(
    by: Annotated[
        str, typer.Option(help="Group by code | department | operation | resource.")
    ] = "resource",
    period: Annotated[
        str | None,
        typer.Option(help="Asia/Shanghai days FIRST..LAST, or one day (default: last 7 days)."),
    ] = None,
    per: Annotated[str, typer.Option(help="A row per day | hour.")] = "day",
    fmt: Annotated[str, typer.Option("--format", help="table | csv | json")] = "table",
    as_user: AsOpt = None,
    catalog: CatalogOpt = DEFAULT_CATALOG,
) -> None:
    """Gateway calls per day (or hour): counts, refusals, 429s, errors, latency p50/p95/p99;
    with --as or $EXCHANGE_USER only what that user may see."""
    from exchange.gateway.usage import columns, flat, usage_for

    if fmt not in FORMATS:
        raise BadInput(f"--format must be table, csv or json, not {fmt!r}")
    with workspace(catalog) as ws:
        report = usage_for(ws, principal(ws, as_user), by, period, per=per)
    if fmt == "json":
        typer.echo(json.dumps(report.as_dict(), ensure_ascii=False, indent=1))
        return
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns(report))
        writer.writerows(flat(report))
        typer.echo(out.getvalue(), nl=False)
        return
    table = Table(title=f"gateway usage {report.period}, by {report.by}")
    for i, name in enumerate(columns(report)):
        table.add_column(name, justify="left" if i == 0 else "right")
    for cells in flat(report):
        table.add_row(*cells)
    if report.totals:
        table.add_section()
        for cells in flat(report, report.totals):
            table.add_row(*cells)
    if not report.rows:
        console.print(f"no gateway calls in {report.period}", markup=False, highlight=False)
        return
    console.print(table)


def register(root: typer.Typer) -> None:
    """The top-level commands of this module: ``exchange gateway`` and ``exchange usage``."""
    root.command("gateway")(gateway)
    root.command("usage")(usage)
