"""``exchange airflow``: what Airflow needs from the catalog (pools), without importing Airflow.

``exchange airflow pools`` prints one pool per provider front-end node, sized from the
catalog's ``max_concurrent_extracts``; ``--apply`` creates or updates them through the
``airflow pools import`` command of the same environment (run it where ``airflow`` reaches
the metadata DB, e.g. in the init job or after a catalog change).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from exchange.cli.options import DEFAULT_CATALOG, CatalogOpt
from exchange.kernel.errors import ExchangeError

app = typer.Typer(
    name="airflow", no_args_is_help=True, help="Airflow pools and DAG ids from the catalog."
)


def _airflow_command() -> list[str]:
    """The ``airflow`` next to this interpreter (the project's venv), else the one on PATH."""
    beside = Path(sys.executable).with_name("airflow")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("airflow")
    if found is None:
        raise ExchangeError("the airflow command is not installed (pip install '.[airflow]')")
    return [found]


@app.command("pools")
def pools(
    catalog: CatalogOpt = DEFAULT_CATALOG,
    apply: Annotated[
        bool, typer.Option("--apply", help="Create or update them with `airflow pools import`.")
    ] = False,
    out: Annotated[
        Path | None, typer.Option(help="Write the `airflow pools import` JSON to this file.")
    ] = None,
) -> None:
    """One pool per provider front-end node, sized from the catalog."""
    from exchange.catalog import load_catalog
    from exchange.cli.render import console
    from exchange.orchestration import pools_for, pools_import_document

    specs = pools_for(load_catalog(catalog))
    doc = json.dumps(pools_import_document(specs), ensure_ascii=False, indent=1)
    for p in specs:
        console.print(f"{p.name}: {p.slots} slots  ({p.description})", highlight=False)
    if out is not None:
        out.write_text(doc + "\n", encoding="utf-8")
    if not apply:
        return
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8") as fh:
        fh.write(doc)
    try:
        done = subprocess.run(
            [*_airflow_command(), "pools", "import", fh.name],
            capture_output=True,
            text=True,
            env=os.environ.copy(),
        )
    finally:
        os.unlink(fh.name)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise ExchangeError("airflow pools import failed:\n" + "\n".join(tail))
    console.print(f"{len(specs)} pools created or updated in Airflow")


@app.command("dags")
def dags(catalog: CatalogOpt = DEFAULT_CATALOG) -> None:
    """The DAG of each scheduled resource: id, schedule (Asia/Shanghai), pool, run deadline."""
    from exchange.catalog import load_catalog
    from exchange.cli.render import console
    from exchange.orchestration import dag_id, dag_resources, pool_name, run_deadline, schedule_for

    for r in dag_resources(load_catalog(catalog)):
        s = schedule_for(r)
        when = s.cron or (f"every {s.every}" if s.every else "manual")
        console.print(
            f"{dag_id(r.code)}: {when}  pool {pool_name(r.provider)}  deadline {run_deadline(r)}",
            highlight=False,
        )
