"""What the Airflow DAGs need from the engine, without Airflow.

``dags/`` is thin wiring: every task calls one function here with plain values (a catalog path,
a resource code, a run id, a subscription id) and passes on what it returns (ids, paths and
counts, never data). Schedules, pools, time limits and retry policy are derived from the
catalog here too, so they are tested without a scheduler.

A DAG run holds the resource's run lease (``exchange.runs.lease``) under the holder name the
DAG passes, from its plan step to the end of its record step: each later task joins it (its
parallel load tasks side by side) and gives back only its own part, so an ``exchange run`` of
the resource between two tasks is refused too. A plan step meets a live ``exchange run`` with
``RunBusy``, which is not terminal (the scheduler retries later, when the other holder has
finished); a later task whose DAG run lost the lease stops with ``LeaseLost`` (terminal).

The DAG files import this module on every parse and every task start to build their DAGs from
the catalog, so at import it loads only the catalog's model and the kernel: the engine (flow,
runs, workspace, connectors: SQLAlchemy, pyarrow, pandas) is imported by the step that runs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exchange.catalog.model import Catalog, Resource
from exchange.kernel import clock
from exchange.kernel.clock import today
from exchange.kernel.errors import BadInput, DeliveryFailed, RunFailed, RunHeld, is_terminal
from exchange.kernel.kinds import RESOURCE_KINDS

if TYPE_CHECKING:
    from exchange.runs import lease as leases
    from exchange.runs.handle import RunHandle
    from exchange.workspace import Workspace

log = logging.getLogger(__name__)

DAG_PREFIX = "exchange_"
POOL_PREFIX = "exchange_fe_"
HOUSEKEEPING_DAG_ID = "exchange_housekeeping"

Mask = Callable[[str], None]

#: The resource kinds run as a batch, each with its steps in ``exchange.flow.STEPS`` (an api
#: resource is served on each call, never run); ``tests/test_orchestration.py`` checks the two
#: agree.
RUN_KINDS: tuple[str, ...] = tuple(k for k in RESOURCE_KINDS if k != "api")


# --- schedules ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """When a resource's DAG runs: a cron in Asia/Shanghai, a fixed period, or only on demand."""

    cron: str | None = None
    every: dt.timedelta | None = None

    @property
    def manual(self) -> bool:
        return self.cron is None and self.every is None


_EVERY = re.compile(r"^every_([1-9][0-9]{0,3})_minutes$")


def _offset(code: str) -> int:
    """A stable minute in 0..59 per resource, so 200 daily DAGs do not all start at 02:00."""
    return zlib.crc32(code.encode("utf-8")) % 60


def schedule_for(resource: Resource) -> Schedule:
    """The resource's update cycle (更新周期) as a schedule in Asia/Shanghai.

    Calendar cycles run in the night (02:mm, the minute spread by resource code) after the
    providers' day has closed; ``every_N_minutes`` is a cron when N divides the hour or the day
    evenly, otherwise a fixed period.
    """
    cycle, m = resource.update_cycle, _offset(resource.code)
    crons = {
        "hourly": f"{m} * * * *",
        "daily": f"{m} 2 * * *",
        "weekly": f"{m} 2 * * 1",
        "monthly": f"{m} 2 1 * *",
        "quarterly": f"{m} 2 1 1,4,7,10 *",
        "yearly": f"{m} 2 1 1 *",
    }
    if cycle in crons:
        return Schedule(cron=crons[cycle])
    if cycle == "on_demand":
        return Schedule()
    match = _EVERY.match(cycle)
    if match is None:
        raise BadInput(f"resource {resource.code}: unknown update_cycle {cycle!r}")
    n = int(match.group(1))
    if n < 60 and 60 % n == 0:
        return Schedule(cron=f"*/{n} * * * *")
    if n % 60 == 0 and 24 % (n // 60) == 0 and n < 24 * 60:
        return Schedule(cron=f"{m} */{n // 60} * * *")
    if n == 24 * 60:
        return Schedule(cron=f"{m} 2 * * *")
    return Schedule(every=dt.timedelta(minutes=n))


def run_deadline(resource: Resource) -> dt.timedelta:
    """How long a run may take after it was queued before a Deadline Alert fires.

    A run should end before the next one is due: the cycle's period, at least 10 minutes and at
    most 6 hours (a monthly table that takes a day is late even if the month is long).
    """
    sched = schedule_for(resource)
    period = {"hourly": dt.timedelta(hours=1)}.get(resource.update_cycle, dt.timedelta(hours=6))
    match = _EVERY.match(resource.update_cycle)
    if match is not None:
        period = dt.timedelta(minutes=int(match.group(1)))
    elif sched.every is not None:
        period = sched.every
    return max(dt.timedelta(minutes=10), min(period, dt.timedelta(hours=6)))


# --- task policy --------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Retries with exponential backoff: 1, 2, 4 minutes ... at most 30 between tries."""

    retries: int = 3
    delay: dt.timedelta = dt.timedelta(minutes=1)
    backoff: float = 2.0
    max_delay: dt.timedelta = dt.timedelta(minutes=30)


RETRY = RetryPolicy()

# Execution timeouts per step: plan and record touch only the metadata store; extract and load
# move a whole table and are bounded by the slowest front-end DB we accept.
STEP_TIMEOUTS: dict[str, dt.timedelta] = {
    "plan": dt.timedelta(minutes=10),
    "extract": dt.timedelta(hours=3),
    "validate": dt.timedelta(hours=1),
    "load": dt.timedelta(hours=3),
    "record": dt.timedelta(minutes=10),
}


def dag_id(code: str) -> str:
    """The DAG of a resource (codes match ``[A-Za-z0-9][A-Za-z0-9_.-]*``, valid in a dag id)."""
    return f"{DAG_PREFIX}{code}"


def dag_resources(catalog: Catalog) -> list[Resource]:
    """The resources that get a DAG, in code order (a stable DAG list across parses)."""
    return [
        catalog.resources[c]
        for c in sorted(catalog.resources)
        if catalog.resources[c].kind in RUN_KINDS
    ]


def asset_uri(code: str) -> str:
    """The Asset a resource's DAG updates when a run has been recorded."""
    return f"exchange://resource/{code}"


# --- pools --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolSpec:
    """An Airflow pool: at most ``slots`` extracts at once from one provider's front-end DB."""

    name: str
    slots: int
    description: str


def pool_name(node: str) -> str:
    return f"{POOL_PREFIX}{node}"


def pools_for(catalog: Catalog) -> list[PoolSpec]:
    """One pool per front-end node that provides a scheduled resource, sized from the catalog."""
    providers = sorted({r.provider for r in dag_resources(catalog)})
    specs = []
    for name in providers:
        node = catalog.node(name)
        label = node.title or node.department or node.name
        specs.append(
            PoolSpec(
                pool_name(name),
                node.max_concurrent_extracts,
                f"extracts from {label} ({node.name}), at most {node.max_concurrent_extracts}",
            )
        )
    return specs


def pools_import_document(pools: Iterable[PoolSpec]) -> dict[str, dict[str, Any]]:
    """The JSON that ``airflow pools import FILE`` reads (it creates or updates each pool)."""
    return {
        p.name: {"slots": p.slots, "description": p.description, "include_deferred": False}
        for p in pools
    }


# --- steps, one per task ------------------------------------------------------------------


def open_workspace(catalog_path: str | Path) -> Workspace:
    """The workspace a task works in: the catalog file, settings from the environment."""
    from exchange.workspace import Workspace

    return Workspace.open(catalog_path)


def node_secrets(ws: Workspace, nodes: Iterable[str]) -> list[str]:
    """The connection URLs (and their passwords) of ``nodes``, for a log masker to hide.

    A node that cannot be resolved yet is skipped: the step itself reports that, by name.
    """
    from sqlalchemy.engine import make_url

    from connectors.resolve import resolve_url

    found: list[str] = []
    base = Path(ws.catalog.path).parent if ws.catalog.path else Path(".")
    for name in sorted(set(nodes)):
        node = ws.catalog.nodes.get(name)
        if node is None or node.connection.path is not None:
            continue
        try:
            url = resolve_url(node, base)
        except BadInput:
            continue
        found.append(url)
        try:
            password = make_url(url).password
        except Exception:  # not a URL SQLAlchemy parses: masking the whole string suffices
            password = None
        if password:
            found.append(str(password))
    return found


def _mask_nodes(ws: Workspace, nodes: Iterable[str], mask: Mask | None) -> None:
    if mask is not None:
        for secret in node_secrets(ws, nodes):
            mask(secret)


def _holder(name: str | None) -> leases.Holder:
    from exchange.runs import lease as leases

    return leases.this_process(name)


@contextmanager
def _working(
    ws: Workspace, run_id: str, holder: str | None, step: str | None = None
) -> Iterator[tuple[RunHandle, leases.Lease]]:
    """The run's handle while this task holds its resource's lease: a DAG run's task joins
    the lease its plan step took (``LeaseLost`` when another holder has it now). ``step``: one
    that fails the run when it raises (extract, validate); a retry of it shows the run
    ``running`` again. A load or a record never touches the run's status."""
    from exchange import flow
    from exchange.runs.handle import RunHandle, resume_run

    run = RunHandle.open(ws, run_id)
    who = _holder(holder)
    with flow.working(ws, run.code, who, join=who.shared) as lease:
        lease.attach(run_id)
        if step is None:
            yield run, lease
            return
        with flow.failing(ws, lease, step):
            resume_run(ws, run_id)
            yield run, lease


def plan_step(
    catalog_path: str | Path,
    code: str,
    *,
    full: bool = False,
    mask: Mask | None = None,
    holder: str | None = None,
) -> dict[str, Any]:
    """Plan (or resume) a run: its id, its directory and the subscriptions to serve. ``full``
    abandons an unfinished run and plans a full one."""
    from exchange import flow
    from exchange.runs import lease as leases

    with open_workspace(catalog_path) as ws:
        _mask_nodes(ws, [ws.catalog.resource(code).provider], mask)
        flow.steps_for(ws.catalog.resource(code))
        who = _holder(holder)
        try:
            with flow.working(ws, code, who) as lease, flow.failing(ws, lease, "plan"):
                run = flow.plan(ws, code, full=full)
                lease.attach(run.id)
        except Exception:
            leases.release_all(ws, code, who.name)  # no run for the DAG run's other tasks
            raise
        for note in run.notes:
            log.warning("resource %s: %s", code, note)
        return flow.describe(run)


def subscribers_step(catalog_path: str | Path, run_id: str) -> list[int]:
    """The subscription ids the run's plan serves (one mapped load task each)."""
    from exchange.runs.handle import RunHandle

    with open_workspace(catalog_path) as ws:
        return RunHandle.open(ws, run_id).plan.subscription_ids


def extract_step(
    catalog_path: str | Path, run_id: str, mask: Mask | None = None, holder: str | None = None
) -> dict[str, Any]:
    """Extract once from the provider (rows, or new and changed files); what was staged."""
    from exchange import flow

    with (
        open_workspace(catalog_path) as ws,
        _working(ws, run_id, holder, "extract") as (run, lease),
    ):
        _mask_nodes(ws, [run.resource.provider], mask)
        got = flow.extract(ws, run, lease=lease)
    return {
        "run_id": run_id,
        "rows": got.rows,
        "path": got.path,
        "files": got.files,
        "held_back": got.files_held_back,
        "bytes": got.bytes,
    }


def validate_step(
    catalog_path: str | Path, run_id: str, holder: str | None = None
) -> dict[str, Any]:
    """Validate the staged rows; the valid file's path and the counts. A run that quality
    holds back raises ``RunHeld`` (terminal: the task fails without retries)."""
    from exchange import flow

    with open_workspace(catalog_path) as ws, _working(ws, run_id, holder, "validate") as (run, _):
        if run.plan.split:  # the ranges' parts, staged by their tasks, as one extract
            flow.join_ranges(ws, run)
        result = flow.validate(ws, run)
        checked = flow.steps_for(run.resource).has_rows(run)
    if result.held:
        raise RunHeld(run_id, run.code, result.held)
    return {
        "run_id": run_id,
        "valid": result.valid,
        "quarantined": result.quarantined,
        "path": str(run.dir.part("valid")) if checked else None,
    }


def load_step(
    catalog_path: str | Path,
    run_id: str,
    subscription_id: int,
    mask: Mask | None = None,
    holder: str | None = None,
) -> dict[str, Any]:
    """Deliver the run to one subscriber. A failed delivery raises ``DeliveryFailed``, so the
    scheduler retries this subscriber alone (the delivery marker keeps it exactly once)."""
    from exchange import flow

    with open_workspace(catalog_path) as ws, _working(ws, run_id, holder) as (run, lease):
        _mask_nodes(ws, [run.plan.delivery(subscription_id).node], mask)
        result = flow.deliver(ws, run, subscription_id, lease=lease)
    if result.status == "held":
        raise RunHeld(run_id, run.code, result.error or "held back")
    if result.status not in ("delivered", "skipped"):  # skipped: no longer allowed, not retried
        raise DeliveryFailed({subscription_id: result.error or "failed"})
    return {
        "run_id": run_id,
        "subscription_id": subscription_id,
        "node": result.node,
        "table": result.table,
        "rows": result.rows,
        "watermark": result.watermark,
    }


# --- split full extracts: one mapped task per key range (docs/runs.md) --------------------

#: The range number of a run that is not split: one task extracts (and loads) it whole.
WHOLE = -1


def _range_numbers(catalog_path: str | Path, run_id: str) -> tuple[list[int], tuple[int, ...]]:
    """The run's key range numbers (``[WHOLE]`` when it is not split) and its subscriptions."""
    from exchange.runs.handle import RunHandle

    with open_workspace(catalog_path) as ws:
        plan = RunHandle.open(ws, run_id).plan
        return list(range(len(plan.ranges))) or [WHOLE], tuple(plan.subscription_ids)


def ranges_step(catalog_path: str | Path, run_id: str) -> list[int]:
    """The key ranges of the run's extract, one mapped extract task each (``[WHOLE]``: the
    run is not split, e.g. an incremental run of a split resource)."""
    return _range_numbers(catalog_path, run_id)[0]


def extract_range_step(
    catalog_path: str | Path,
    run_id: str,
    k: int,
    mask: Mask | None = None,
    holder: str | None = None,
) -> dict[str, Any]:
    """Extract key range ``k`` of a split run into its own part (any worker: the run's
    directory is shared); ``WHOLE``: the whole extract, as ``extract_step``."""
    if k == WHOLE:
        return extract_step(catalog_path, run_id, mask, holder)
    from exchange import flow

    with (
        open_workspace(catalog_path) as ws,
        _working(ws, run_id, holder, "extract") as (run, lease),
    ):
        _mask_nodes(ws, [run.resource.provider], mask)
        rows = flow.extract_range(ws, run, k, lease=lease)
    return {"run_id": run_id, "range": k, "rows": rows}


def units_step(catalog_path: str | Path, run_id: str) -> list[dict[str, int]]:
    """The loads of the run, one mapped task each: every (subscription, key range) of a split
    run, else every subscription (range ``WHOLE``)."""
    ranges, subscriptions = _range_numbers(catalog_path, run_id)
    return [{"subscription_id": s, "k": k} for s in subscriptions for k in ranges]


def load_range_step(
    catalog_path: str | Path,
    run_id: str,
    subscription_id: int,
    k: int,
    mask: Mask | None = None,
    holder: str | None = None,
) -> dict[str, Any]:
    """Load key range ``k`` of a split run into one subscriber with its range marker (a
    failure raises ``DeliveryFailed``: this range alone is retried); ``WHOLE``: the whole
    delivery, as ``load_step``. The subscriber's ``close_step`` records the delivery."""
    if k == WHOLE:
        return load_step(catalog_path, run_id, subscription_id, mask, holder)
    from exchange import flow

    with open_workspace(catalog_path) as ws, _working(ws, run_id, holder) as (run, lease):
        _mask_nodes(ws, [run.plan.delivery(subscription_id).node], mask)
        try:
            stopped = flow.deliver_range(ws, run, subscription_id, k, lease)
        except Exception as exc:
            if is_terminal(exc):  # held, lost lease, a target that refuses: no retry helps
                raise
            raise DeliveryFailed({subscription_id: flow.error_text(exc)}) from None
    if stopped is not None and stopped.status == "held":
        raise RunHeld(run_id, run.code, stopped.error or "held back")
    return {"run_id": run_id, "subscription_id": subscription_id, "range": k}


def close_step(
    catalog_path: str | Path,
    run_id: str,
    subscription_id: int,
    mask: Mask | None = None,
    holder: str | None = None,
) -> dict[str, Any]:
    """Close a split run's delivery to one subscriber once its ranges' tasks are done (a
    snapshot's deletes once, by the keys of all ranges; the marker; the record). A range not
    in raises ``DeliveryFailed`` (recorded; the next run loads only what is missing). A run
    not split has nothing to close: its load task recorded the delivery."""
    from exchange import flow

    with open_workspace(catalog_path) as ws, _working(ws, run_id, holder) as (run, lease):
        if not run.plan.split:
            return {"run_id": run_id, "subscription_id": subscription_id}
        _mask_nodes(ws, [run.plan.delivery(subscription_id).node], mask)
        lease.check()
        result = flow.close_delivery(ws, run, subscription_id)
    if result.status not in ("delivered", "skipped", "held"):
        raise DeliveryFailed({subscription_id: result.error or "failed"})
    return {
        "run_id": run_id,
        "subscription_id": subscription_id,
        "status": result.status,
        "rows": result.rows,
        "watermark": result.watermark,
    }


def record_step(catalog_path: str | Path, run_id: str, holder: str | None = None) -> dict[str, Any]:
    """Close the run. Raises ``RunHeld`` when quality held it back, else ``DeliveryFailed``
    naming every subscriber that was not served (after its own retries), so the DAG run ends
    failed as the ledger says. A run whose extract or validate step failed is not closed
    (``RunFailed``): it stays ``failed`` with that step's error, and the next run resumes it.
    The DAG run's lease is given back here, whatever the outcome but a retriable error (the
    scheduler retries this step while the DAG run holds the resource)."""
    from exchange import flow
    from exchange.runs import lease as leases
    from exchange.runs.handle import failed_step, resource_of

    with open_workspace(catalog_path) as ws:
        code, who = resource_of(ws, run_id), _holder(holder)
        try:
            error = failed_step(ws, run_id)
            if error is not None:
                raise RunFailed(code, run_id, error)
            with _working(ws, run_id, holder) as (run, lease):
                lease.check()
                summary = flow.record(ws, run)
        except Exception as exc:
            if is_terminal(exc):
                leases.release_all(ws, code, who.name)
            raise
        leases.release_all(ws, code, who.name)
    if summary.held:
        raise RunHeld(run_id, summary.resource, summary.held)
    if summary.failures:
        raise DeliveryFailed(summary.failures)
    return {
        "run_id": run_id,
        "status": summary.status,
        "extracted": summary.extracted,
        "valid": summary.valid,
        "quarantined": summary.quarantined,
        **({"note": summary.note} if summary.note else {}),
    }


# --- Deadline Alert callback (runs in the triggerer) --------------------------------------


def _audit_missed_deadline(resource: str, deadline: str, dag_run: str) -> None:
    from exchange import audit
    from exchange.kernel.settings import Settings
    from exchange.store import Store

    store = Store(Settings.from_env().db_url)
    try:
        with store.session() as s:
            audit.append(
                s,
                "run.deadline_missed",
                f"resource:{resource}",
                {"deadline": deadline, "dag_run": dag_run},
                actor="airflow",
            )
    finally:
        store.close()


async def run_deadline_missed(
    context: dict[str, Any] | None = None, *, resource: str, deadline: str
) -> None:
    """A resource's run is still going past its deadline: log it and leave an audit event.

    Airflow's triggerer awaits this (an ``AsyncCallback`` of the DAG's ``DeadlineAlert``);
    the store write runs in a thread so the triggerer's loop is not blocked.
    """
    dag_run = str((context or {}).get("dag_run", ""))
    log.warning("resource %s: run %s missed its deadline (%s)", resource, dag_run, deadline)
    try:
        await asyncio.to_thread(_audit_missed_deadline, resource, deadline, dag_run)
    except Exception as exc:  # an alert must never crash the triggerer
        log.error("resource %s: could not audit the missed deadline: %s", resource, exc)


# --- housekeeping -------------------------------------------------------------------------


def _plain(value: Any) -> dict[str, Any]:
    """A step's result as JSON-able values for XCom (counts and ids, never data)."""
    import dataclasses
    import json

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if not isinstance(value, dict):
        value = {"result": value}
    return dict(json.loads(json.dumps(value, default=str)))


def housekeeping_step(catalog_path: str | Path, now: dt.datetime) -> dict[str, Any]:
    """One tick of the workflow clock at ``now``: timeouts, reminders, automatic sign-off and
    evaluation, expiry, suspension, ticket deadlines. Idempotent for the same ``now``."""
    from exchange.accounts.service import tick as account_tick
    from exchange.workflow.housekeeping import tick

    at = now.astimezone(dt.UTC).replace(tzinfo=None)  # the store's naive UTC
    with open_workspace(catalog_path) as ws:
        accounts = account_tick(ws.store, at)  # the account applications' clocks (2 working days)
        report = tick(ws, at)
        return {**_plain(report), "accounts": accounts.model_dump(), "summary": str(report)}


def daily_report_step(catalog_path: str | Path, now: dt.datetime) -> str | None:
    """Write yesterday's (Asia/Shanghai) run report unless it exists; its path, or None.
    The api resources called that day get their section from the gateway's usage rows."""
    from exchange.gateway.usage import api_quality
    from exchange.quality.scores import api_resources
    from exchange.run_report import write_daily_run_report

    day = today(now) - dt.timedelta(days=1)
    with open_workspace(catalog_path) as ws:
        if (ws.settings.home / "reports" / f"runs-{day.isoformat()}.json").exists():
            return None
        apis = api_quality(ws.store, api_resources(ws), day, day)
        called = {q.resource: q.figures() for q in apis if q.calls}
        return str(write_daily_run_report(ws, day, called))


def parse_now(value: str | None) -> dt.datetime:
    """``now`` for a housekeeping run: an ISO timestamp (tests, catch-up) or the wall clock."""
    if not value:
        return clock.now()
    try:
        at = dt.datetime.fromisoformat(value)
    except ValueError:
        raise BadInput(f"now: {value!r} is not an ISO 8601 timestamp") from None
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)
