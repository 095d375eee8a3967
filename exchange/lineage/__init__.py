"""OpenLineage run events for every table, file and API delivery (docs/lineage.md).

Off unless OpenLineage is configured the standard way; never raises into a run. The engine
calls ``run_started`` once a run is planned or resumed and ``run_ended`` once it is recorded;
the gateway's flusher calls ``api_calls_delivered`` for each batch of calls it stored; the
Airflow side asks ``run_datasets`` for a run's inputs and outputs.

These are the package's face, and they import the OpenLineage client (a second of start-up)
only when lineage is on: every ``exchange run`` and every Airflow task pass through them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exchange.lineage.config import configured
from exchange.lineage.refs import DatasetRef, RunDatasets

if TYPE_CHECKING:
    from exchange.runs.handle import RunHandle
    from exchange.store import Store
    from exchange.workspace import Workspace

__all__ = [
    "DatasetRef",
    "RunDatasets",
    "api_calls_delivered",
    "configured",
    "replay",
    "run_datasets",
    "run_ended",
    "run_failed",
    "run_started",
]


def run_started(ws: Workspace, run: RunHandle) -> None:
    """START of a run just planned or resumed."""
    if configured():
        from exchange.lineage import runs

        runs.run_started(ws, run)


def run_ended(ws: Workspace, run_id: str) -> None:
    """COMPLETE or FAIL of a run just recorded."""
    if configured():
        from exchange.lineage import runs

        runs.run_ended(ws, run_id)


def run_failed(ws: Workspace, run_id: str) -> None:
    """FAIL of a run whose plan, extract or validate step raised."""
    if configured():
        from exchange.lineage import runs

        runs.run_failed(ws, run_id)


def run_datasets(ws: Workspace, run_id: str) -> RunDatasets:
    """A run's inputs and outputs as OpenLineage names them."""
    from exchange.lineage import runs

    return runs.run_datasets(ws, run_id)


def api_calls_delivered(store: Store, calls: Sequence[Any], **options: Any) -> None:
    """Lineage of a batch of gateway calls just stored."""
    if configured() and calls:
        from exchange.lineage import api

        api.api_calls_delivered(store, calls, **options)


def replay(home: Path) -> int:
    """Send what the spool holds; how many were sent."""
    if not configured():
        return 0
    from exchange.lineage import emit

    return emit.replay(home)
