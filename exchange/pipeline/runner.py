"""All steps of one run in this process: what ``exchange run`` does.

Airflow calls the same steps one task at a time."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

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
    deliveries = rd.plan()["deliveries"]

    def load_node(batch: list[dict[str, Any]]) -> list[DeliveryResult]:
        results = []
        for d in batch:
            label = f"load {d['node']}.{d['table']}"
            task = rep.task(label, validated.valid)
            results.append(load_subscriber(ws, run_id, d["subscription_id"], task))
        return results

    # Different nodes load side by side (the work is mostly in the target databases and in
    # Arrow, which release the GIL); one node's subscriptions load one after the other, so
    # that no front-end DB takes concurrent merges from us (and SQLite's one writer is safe).
    by_node: dict[str, list[dict[str, Any]]] = {}
    for d in deliveries:
        by_node.setdefault(d["node"], []).append(d)
    workers = max(1, min(len(by_node), load_workers()))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="exchange-load") as pool:
        done = {r.subscription_id: r for rs in pool.map(load_node, by_node.values()) for r in rs}
    for d in deliveries:  # reported in plan order
        rep.delivered(done[d["subscription_id"]])
    return finish(ws, run_id)


def load_workers() -> int:
    """How many subscribers load at once in this process ($EXCHANGE_LOAD_WORKERS, default 3)."""
    return int(os.environ.get("EXCHANGE_LOAD_WORKERS", "3"))
