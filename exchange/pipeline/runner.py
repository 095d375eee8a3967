"""All steps of one run in this process: what ``exchange run`` does.

Airflow calls the same steps one task at a time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from exchange.pipeline.extract import extract
from exchange.pipeline.load import DeliveryResult, load_subscriber
from exchange.pipeline.plan import plan, run_dir_of
from exchange.pipeline.record import RunSummary, finish
from exchange.pipeline.validate import validate
from exchange.workspace import Workspace


class Reporter(Protocol):
    """Where progress goes (a rich progress bar in the CLI, nothing in tests)."""

    def task(self, label: str, total: int | None) -> Callable[[int], None]: ...

    def delivered(self, result: DeliveryResult) -> None: ...


class QuietReporter:
    def task(self, label: str, total: int | None) -> Callable[[int], None]:
        return lambda n: None

    def delivered(self, result: DeliveryResult) -> None:
        pass


def run_resource(
    ws: Workspace, resource_code: str, *, full: bool = False, reporter: Reporter | None = None
) -> RunSummary:
    """Plan (or resume), extract, validate, load every subscriber, record."""
    rep = reporter or QuietReporter()
    if ws.catalog.resource(resource_code).files is not None:  # file and folder resources
        from exchange.files.runner import run_files

        return run_files(ws, resource_code, full=full, reporter=rep)
    run_id = plan(ws, resource_code, full=full)
    extract(ws, run_id, rep.task(f"extract {resource_code}", None))
    validated = validate(ws, run_id)
    _, rd = run_dir_of(ws, run_id)
    for d in rd.plan()["deliveries"]:
        label = f"load {d['node']}.{d['table']}"
        result = load_subscriber(ws, run_id, d["subscription_id"], rep.task(label, validated.valid))
        rep.delivered(result)
    return finish(ws, run_id)
