"""One run of any resource: the one place that decides which kind a resource is.

plan → extract → validate → deliver (each subscriber) → record, for every kind. ``exchange
run`` calls ``run_resource``; each Airflow task (``exchange.orchestration``) calls one step;
the demo and the benchmarks call the same. Each kind supplies its steps (``KindSteps``):

* table: extract once from the provider's front-end DB, validate, merge into each
  subscriber's table (``exchange.tables``).
* file / folder: pull each new or changed file once, parse tabular files into rows, validate
  those, then push files to file subscribers and merge rows into table subscribers
  (``exchange.files`` for the files, ``exchange.tables`` for the rows: composed here, so the
  two never import each other and the tabular-file → table delivery exists once).

A run held back by quality ends the same way on every path: every planned subscriber is
recorded ``held`` (nothing delivered, watermarks stay), the run's status is ``held``; the CLI
exits 1 and Airflow fails the task without retrying (``RunHeld`` is terminal).

Whoever works on a run holds the resource's lease (``exchange.runs.lease``) meanwhile: a second
process is refused (``RunBusy``) while the first is alive, and a holder that lost the lease
stops at the next batch or step (``LeaseLost``). Only plan, extract and validate fail the run:
one of them that raises leaves the run ``failed`` with the error (``failing``), and the next run
resumes it; ``--full`` and ``--restart`` abandon it instead, and so does a run whose directory
is gone. A delivery that raises is that subscriber's failed delivery, never the run's.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Protocol

import pyarrow as pa

from exchange import lineage
from exchange.catalog.model import Resource
from exchange.files import plan as file_plan
from exchange.files import pull as file_pull
from exchange.files import push as file_push
from exchange.files import tabular
from exchange.kernel.errors import (
    BadInput,
    DeliveryFailed,
    ExchangeError,
    LeaseLost,
    RunDirGone,
    RunFailed,
    RunHeld,
)
from exchange.quality.record import after_deliveries
from exchange.runs import lease as leases
from exchange.runs import staged
from exchange.runs.allowed import refused_delivery
from exchange.runs.handle import (
    FAILING,
    RunHandle,
    abandon_run,
    fail_run,
    resume_run,
    unfinished_run,
    was_full,
)
from exchange.runs.plan import Delivery, FolderDelivery, TableDelivery
from exchange.runs.record import RunSummary, finish
from exchange.runs.results import DeliveryResult, record_delivery, recorded
from exchange.tables import extract as table_extract
from exchange.tables import load as table_load
from exchange.tables import plan as table_plan
from exchange.tables.plan import split_workers
from exchange.tables.validate import ValidationResult
from exchange.tables.validate import validate as validate_rows
from exchange.workflow import notices
from exchange.workspace import Workspace
from quality.mask import mask_text

Progress = Callable[[int], None]


class Reporter(Protocol):
    """Where progress goes (a rich progress bar in the CLI, nothing in tests)."""

    def task(self, label: str, total: int | None) -> Progress: ...

    def delivered(self, result: DeliveryResult) -> None: ...


class QuietReporter:
    def task(self, label: str, total: int | None) -> Progress:
        return lambda n: None

    def delivered(self, result: DeliveryResult) -> None:
        pass


@dataclass(frozen=True)
class Extracted:
    """What the extract step staged: rows (tables, parsed files) and files pulled."""

    rows: int
    path: str
    files: int = 0
    files_held_back: int = 0
    bytes: int = 0


# --- the kinds ----------------------------------------------------------------------------


class KindSteps(Protocol):
    """What one kind of resource does at each step (adding a kind: a class and a line)."""

    def plan(self, ws: Workspace, resource: Resource, full: bool) -> RunHandle: ...

    def resume(self, ws: Workspace, run: RunHandle) -> RunHandle: ...

    def extract(self, ws: Workspace, run: RunHandle, progress: Progress) -> Extracted: ...

    def extract_total(self, run: RunHandle) -> int | None: ...

    def has_rows(self, run: RunHandle) -> bool: ...

    def deliver(
        self, ws: Workspace, run: RunHandle, d: Delivery, progress: Progress | None
    ) -> DeliveryResult: ...


class TableSteps:
    def plan(self, ws: Workspace, resource: Resource, full: bool) -> RunHandle:
        return table_plan.plan_table(ws, resource, full=full)

    def resume(self, ws: Workspace, run: RunHandle) -> RunHandle:
        return run  # the extract step starts over from the plan's cursor when not done

    def extract(self, ws: Workspace, run: RunHandle, progress: Progress) -> Extracted:
        rows = table_extract.extract(ws, run, progress)
        return Extracted(rows, str(run.dir.part("extract")))

    def extract_total(self, run: RunHandle) -> int | None:
        return None  # the source's row count is not asked for (a COUNT(*) would cost a scan)

    def has_rows(self, run: RunHandle) -> bool:
        return True

    def deliver(
        self, ws: Workspace, run: RunHandle, d: Delivery, progress: Progress | None
    ) -> DeliveryResult:
        assert isinstance(d, TableDelivery), "a table resource plans table deliveries only"
        if run.plan.split:
            return deliver_split(ws, run, d, progress)
        return table_load.load_subscriber(ws, run, d, progress)


def deliver_split(
    ws: Workspace, run: RunHandle, d: TableDelivery, progress: Progress | None
) -> DeliveryResult:
    """A split run's delivery to one subscriber: every key range not in its target yet, side
    by side (one at a time into SQLite, which has one writer), each with its range marker;
    then the close (a snapshot's deletes once, the marker, the record). A range that fails is
    named in the failed delivery; the next run loads only the ranges still missing."""
    ranges = range(len(run.plan.ranges))
    failed: dict[int, str] = {}

    def one(k: int) -> None:
        try:
            table_load.load_range(ws, run, d, k, progress)
        except LeaseLost:
            raise
        except Exception as exc:
            failed[k] = error_text(exc)

    one_writer = ws.catalog.node(d.node).kind == "sqlite"
    workers = 1 if one_writer else min(len(ranges), split_workers(len(ranges)))
    with ThreadPoolExecutor(workers, thread_name_prefix="exchange-range") as pool:
        list(pool.map(one, ranges))
    return table_load.close_split(ws, run, d, failed)


class FileSteps:
    def plan(self, ws: Workspace, resource: Resource, full: bool) -> RunHandle:
        return file_plan.plan_files(ws, resource, full=full)

    def resume(self, ws: Workspace, run: RunHandle) -> RunHandle:
        return file_pull.refresh(ws, run)  # a staged file whose source changed is pulled again

    def extract(self, ws: Workspace, run: RunHandle, progress: Progress) -> Extracted:
        got = file_pull.pull(ws, run, progress)
        rows = tabular.to_table(ws, run) if self.has_rows(run) else 0
        return Extracted(rows, str(run.dir.path / "files"), got.pulled, got.held_back, got.bytes)

    def extract_total(self, run: RunHandle) -> int | None:
        return sum(f.size for f in run.plan.files)

    def has_rows(self, run: RunHandle) -> bool:
        """Rows to validate and load: only when some subscriber takes a tabular file's rows."""
        return bool(run.plan.tables())

    def deliver(
        self, ws: Workspace, run: RunHandle, d: Delivery, progress: Progress | None
    ) -> DeliveryResult:
        if isinstance(d, FolderDelivery):
            return file_push.push_subscriber(ws, run, d, progress)
        # A tabular file's rows, merged by the table steps; then each file version is in the
        # ledger for this subscriber as if it had been put (it reaches it once either way).
        unpulled = file_pull.not_pulled(run.dir, run.plan.files_for(d.subscription_id))
        if d.delete_missing and unpulled:  # their rows are not staged: not gone at the source
            d = replace(d, delete_missing=False)
        result = table_load.load_subscriber(ws, run, d, progress)
        if unpulled and run.plan.full and result.status == "delivered":
            result = replace(result, notes=(*result.notes, not_reconciled(unpulled)))
        if result.status == "delivered":
            tabular.record_parsed(ws, run, d.subscription_id)
        return result


def not_reconciled(unpulled: list[str]) -> str:
    return (
        f"deleted nothing: {len(unpulled)} file(s) not pulled this run ("
        + ", ".join(unpulled)
        + "), so the rows gone from the source are unknown; the next --full run reconciles"
    )


STEPS: dict[str, KindSteps] = {"table": TableSteps(), "file": FileSteps(), "folder": FileSteps()}


def steps_for(resource: Resource) -> KindSteps:
    """The steps of the resource's kind: the one place that asks which kind it is."""
    try:
        return STEPS[resource.kind]
    except KeyError:
        raise BadInput(
            f"resource {resource.code} (kind {resource.kind}) is served on request, not run"
        ) from None


# --- the steps, for every kind ------------------------------------------------------------


def plan(ws: Workspace, code: str, *, full: bool = False, restart: bool = False) -> RunHandle:
    """Create a run and its plan; an unfinished run of the resource is resumed instead, unless
    ``full`` or ``restart`` asks for a new one (the unfinished run is abandoned first). The
    caller holds the resource's lease (``working``)."""
    resource = ws.catalog.resource(code)
    steps = steps_for(resource)
    previous = unfinished_run(ws, code)
    notes: list[str] = []
    if previous is not None:
        why = "--full asks for a full run" if full else "--restart" if restart else None
        if why is None:
            try:
                run = RunHandle.open(ws, previous)
            except RunDirGone as exc:
                why = f"its directory {exc.directory} is gone"
                full = was_full(ws, previous)  # its replacement keeps the full run's intent
            else:
                try:
                    run = steps.resume(ws, run)
                    run, _ = staged.repair(ws, run)  # a damaged staged file: its step is redone
                except Exception as exc:
                    fail_run(ws, previous, error_text(exc), "plan")
                    raise
                resume_run(ws, previous)
                lineage.run_started(ws, run)  # never raises: lineage never fails a run
                return run
        abandon_run(ws, previous, why)
        kind = "a full one" if full else "a new one"
        notes.append(f"abandoned the unfinished run {previous} ({why}); started {kind}")
    offline = notices.run_note(ws, code)  # its plan finds no subscriber: say why
    run = steps.plan(ws, resource, full).noting(*notes, *([offline] if offline else []))
    lineage.run_started(ws, run)
    return run


@contextmanager
def working(
    ws: Workspace, code: str, holder: leases.Holder | None = None, *, join: bool = False
) -> Iterator[leases.Lease]:
    """Hold the resource's lease for the block (``join``: a DAG run's later task joins the
    lease its plan step took, ``LeaseLost`` when it is gone)."""
    with leases.holding(ws, code, holder, join=join) as lease:
        yield lease


#: The steps whose error is the run's: a held run, a failed subscriber or a failed record is
#: an outcome or a retry of its own, not a failure of the run's data.
FAILING_STEPS = FAILING


@contextmanager
def failing(ws: Workspace, lease: leases.Lease, step: str) -> Iterator[None]:
    """One of ``FAILING_STEPS``: when it raises, the run the lease names is ``failed`` with the
    error (and resumable); a lost lease leaves the run to its new holder untouched."""
    assert step in FAILING_STEPS, step
    lease.check()
    try:
        yield
    except (RunHeld, DeliveryFailed, LeaseLost):
        raise
    except Exception as exc:
        if lease.run_id is not None and not lease.lost.is_set():
            fail_run(ws, lease.run_id, error_text(exc), step)
            lineage.run_failed(ws, lease.run_id)  # FAIL now; a resumed run STARTs again
        raise
    lease.check()
    lease.finished(step)


def error_text(exc: Exception) -> str:
    """A failed step's error as the run keeps it: the engine's own message, or the exception's
    type and message for anything else (``RunFailed``: its error, without how to go on)."""
    if isinstance(exc, RunFailed):
        return exc.error
    text = str(exc) if isinstance(exc, ExchangeError) else f"{type(exc).__name__}: {exc}"
    return mask_text(text)  # a driver's message may quote a row's ID or mobile number


def extract(
    ws: Workspace,
    run: RunHandle,
    progress: Progress | None = None,
    lease: leases.Lease | None = None,
) -> Extracted:
    """Stage what the plan asks for, once: the provider's rows, or its new and changed files
    (stopping between batches when the ``lease`` is lost)."""
    report = progress or (lambda n: None)
    return steps_for(run.resource).extract(ws, run, lease.guard(report) if lease else report)


def extract_range(
    ws: Workspace,
    run: RunHandle,
    k: int,
    progress: Progress | None = None,
    lease: leases.Lease | None = None,
) -> int:
    """Stage key range ``k`` of a split run (one Airflow task each, on any worker); its rows."""
    report = progress or (lambda n: None)
    return table_extract.extract_range(ws, run, k, lease.guard(report) if lease else report)


def join_ranges(ws: Workspace, run: RunHandle) -> int:
    """The split run's ranges, staged, as its one extract (before validate); its rows."""
    return table_extract.join_ranges(ws, run)


def deliver_range(
    ws: Workspace,
    run: RunHandle,
    subscription_id: int,
    k: int,
    lease: leases.Lease | None = None,
) -> DeliveryResult | None:
    """Load key range ``k`` of a split run into one subscriber (an Airflow task each): None
    when it is in, else the subscriber's outcome that stops it (held, skipped). Raises when
    the range fails (its task is retried; the close records the failure)."""
    d = run.plan.delivery(subscription_id)
    assert isinstance(d, TableDelivery), "a split run plans table deliveries only"
    if not run.dir.is_done("validate"):
        raise BadInput(
            f"run {run.id}: validate it before delivering to subscription {d.subscription_id}"
        )
    held = run.dir.read_done("validate").get("held")
    if held:
        return hold(ws, run, d, held)
    refused = refused_delivery(ws, run.id, d)
    if refused is not None:
        return refused
    if lease is not None:
        lease.check()
    table_load.load_range(ws, run, d, k, lease.guard(lambda n: None) if lease else None)
    return None


def close_delivery(ws: Workspace, run: RunHandle, subscription_id: int) -> DeliveryResult:
    """Close a split run's delivery to one subscriber once its ranges are in (an Airflow task
    each): deletes, marker, record; an outcome recorded already (held, skipped) stays."""
    d = run.plan.delivery(subscription_id)
    assert isinstance(d, TableDelivery), "a split run plans table deliveries only"
    done = recorded(ws, run.id, subscription_id)
    if done is not None and done.status in ("held", "skipped"):
        return replace(done, node=d.node, table=d.table)
    refused = refused_delivery(ws, run.id, d)
    return refused if refused is not None else table_load.close_split(ws, run, d, {})


def validate(ws: Workspace, run: RunHandle) -> ValidationResult:
    """Check the staged rows; quarantine bad ones. When quality holds the run back, every
    planned subscriber is recorded ``held`` (nothing goes out, watermarks stay)."""
    if not steps_for(run.resource).has_rows(run) or not run.plan.deliveries:
        return ValidationResult()  # plain files, or nobody to deliver to: nothing to check
    try:
        result = validate_rows(ws, run)
    except (pa.ArrowException, OSError):  # a staged file damaged after its step?
        damaged = staged.unreadable(ws, run)
        if damaged is None:
            raise
        raise damaged from None
    if result.held:
        for d in run.plan.deliveries:
            hold(ws, run, d, result.held)
    return result


def held_result(d: Delivery, why: str) -> DeliveryResult:
    since = d.since if isinstance(d, TableDelivery) else None
    return DeliveryResult(
        d.subscription_id, d.node, d.table, "held", 0, 0.0, since, f"held back: {why}"
    )


def hold(ws: Workspace, run: RunHandle, d: Delivery, why: str) -> DeliveryResult:
    """Record that ``d`` gets nothing of this held-back run (once; watermark unchanged)."""
    result = held_result(d, why)
    done = recorded(ws, run.id, d.subscription_id)
    if done is None or done.status != "held":
        record_delivery(ws, result, run.id)
    return result


def deliver(
    ws: Workspace,
    run: RunHandle,
    subscription_id: int,
    progress: Progress | None = None,
    lease: leases.Lease | None = None,
) -> DeliveryResult:
    """Deliver the run to one subscriber, exactly once; a failure is recorded and returned
    (stopping between batches when the ``lease`` is lost)."""
    d = run.plan.delivery(subscription_id)
    steps = steps_for(run.resource)
    held = None
    if run.dir.is_done("validate"):
        held = run.dir.read_done("validate").get("held")
    elif isinstance(d, TableDelivery) and steps.has_rows(run):  # never rows nobody checked
        raise BadInput(
            f"run {run.id}: validate it before delivering to subscription {d.subscription_id}"
        )
    if held:  # quality held the whole run back: this subscriber gets nothing either
        return hold(ws, run, d, held)
    # Asked again now, not only at the plan: a resumed run may be days old (skipped: why).
    refused = refused_delivery(ws, run.id, d)
    return refused if refused is not None else _deliver_one(ws, run, d, progress, lease)


def _deliver_one(
    ws: Workspace,
    run: RunHandle,
    d: Delivery,
    progress: Progress | None,
    lease: leases.Lease | None,
) -> DeliveryResult:
    """The kind's delivery; whatever it raises is this subscriber's failed delivery (recorded,
    the others go on), never the run's: only a lost lease stops the process."""
    if lease is not None:
        lease.check()
        progress = lease.guard(progress or (lambda n: None))
    try:
        result = steps_for(run.resource).deliver(ws, run, d, progress)
    except LeaseLost:
        raise
    except Exception as exc:
        since = d.since if isinstance(d, TableDelivery) else None
        result = DeliveryResult(
            d.subscription_id, d.node, d.table, "failed", 0, 0.0, since, error_text(exc)
        )
        record_delivery(ws, result, run.id)
    if lease is not None:
        lease.check()
        lease.finished(f"the delivery to subscription {d.subscription_id}")
    return result


def deliver_total(run: RunHandle, d: Delivery, validated: ValidationResult) -> int:
    """What a delivery's progress counts to: rows for a table, bytes for files."""
    if isinstance(d, FolderDelivery):
        return sum(f.size for f in run.plan.files_for(d.subscription_id))
    return validated.valid


def record(ws: Workspace, run: RunHandle) -> RunSummary:
    """Close the run: quality learns what was delivered, then the run's outcome is recorded."""
    after_deliveries(ws, run)
    summary = finish(ws, run)
    lineage.run_ended(ws, run.id)  # COMPLETE or FAIL, once the outcome is in the store
    return summary


# --- all of them, in this process ---------------------------------------------------------


def run_resource(
    ws: Workspace,
    code: str,
    *,
    full: bool = False,
    restart: bool = False,
    reporter: Reporter | None = None,
) -> RunSummary:
    """Plan (or resume), extract, validate, deliver to every subscriber, record, holding the
    resource's lease throughout (``RunBusy`` when a live process holds it)."""
    rep = reporter or QuietReporter()
    steps_for(ws.catalog.resource(code))  # an api resource is refused before any lease
    with working(ws, code) as lease:
        with failing(ws, lease, "plan"):
            run = plan(ws, code, full=full, restart=restart)
            lease.attach(run.id)
        steps = steps_for(run.resource)
        label = "pull" if isinstance(steps, FileSteps) else "extract"
        with failing(ws, lease, "extract"):
            extract(ws, run, rep.task(f"{label} {code}", steps.extract_total(run)), lease)
        with failing(ws, lease, "validate"):
            validated = validate(ws, run)
        if validated.held:
            for d in run.plan.deliveries:
                rep.delivered(held_result(d, validated.held))
        else:
            deliver_all(ws, run, validated, rep, lease)
        lease.check()
        return record(ws, run)


def deliver_all(
    ws: Workspace,
    run: RunHandle,
    validated: ValidationResult,
    rep: Reporter,
    lease: leases.Lease | None = None,
) -> list[DeliveryResult]:
    """Every planned delivery, reported in plan order.

    Different nodes load side by side (the work is mostly in the target databases, the
    transports and Arrow, which release the GIL); one node's subscriptions go one after the
    other, so that no front-end DB takes concurrent merges from us (and SQLite's one writer
    is safe).
    """

    def one_node(batch: list[Delivery]) -> list[DeliveryResult]:
        out = []
        for d in batch:
            total = deliver_total(run, d, validated)
            verb = "push" if isinstance(d, FolderDelivery) else "load"
            unit = " (bytes)" if isinstance(d, FolderDelivery) else ""
            task = rep.task(f"{verb} {d.target}{unit}", total)
            out.append(deliver(ws, run, d.subscription_id, task, lease))
        return out

    by_node: dict[str, list[Delivery]] = {}
    for d in run.plan.deliveries:
        by_node.setdefault(d.node, []).append(d)
    workers = max(1, min(len(by_node), load_workers()))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="exchange-load") as pool:
        done = {r.subscription_id: r for rs in pool.map(one_node, by_node.values()) for r in rs}
    results = [done[d.subscription_id] for d in run.plan.deliveries]
    for r in results:
        rep.delivered(r)
    return results


def load_workers() -> int:
    """How many nodes are delivered to at once in this process ($EXCHANGE_LOAD_WORKERS, 3)."""
    return int(os.environ.get("EXCHANGE_LOAD_WORKERS", "3"))


def describe(run: RunHandle) -> dict[str, Any]:
    """A run as tasks pass it on: ids and paths, never data."""
    return {
        "run_id": run.id,
        "run_dir": str(run.dir.path),
        "subscriptions": run.plan.subscription_ids,
    }
