"""The lineage of api deliveries: each batch of calls the gateway's flusher stored is one run
of the job ``api:<code>`` per resource called.

Its inputs are the upstream operations called (``https://host`` + the operation's path), its
outputs one dataset per calling subscription (``api/<code>/subscription/<id>`` in the job's
namespace: a caller has no database of ours to name), with the subscription's granted fields,
their lineage from the upstream's fields, the calls answered (``rowCount``) and the bytes sent.
A batch whose calls the upstream failed ends FAIL (with how many); refused calls (quota, a bad
code) delivered nothing and are left out. START and the closing event are sent together.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import sqlalchemy as sa
from openlineage.client.event_v2 import RunEvent, RunState

from exchange.catalog import Catalog, load_catalog
from exchange.catalog.model import Field
from exchange.kernel.settings import Settings
from exchange.lineage import emit
from exchange.lineage.events import EventSpec, Output, build, job_name, job_namespace, run_uuid
from exchange.lineage.naming import DatasetRef, api_dataset
from exchange.store import Store
from exchange.store.models import Subscription

log = logging.getLogger(__name__)

OK = "ok"
UPSTREAM = "upstream"  # the upstream failed to answer: a failed delivery


class CallLine(Protocol):
    """What a stored call tells (the gateway's spool line): ids and counts, never a code."""

    id: str
    res: str
    op: str
    sub: int | None
    dept: str | None
    out: str
    b: int


@dataclass(frozen=True)
class _Sub:
    fields: tuple[str, ...]


_catalogs: dict[str, Catalog] = {}
_lock = threading.Lock()


def _catalog() -> Catalog | None:
    """The gateway's catalog (``$EXCHANGE_CATALOG``), loaded once per process."""
    path = os.environ.get("EXCHANGE_CATALOG")
    if not path:
        return None
    with _lock:
        if path not in _catalogs:
            _catalogs[path] = load_catalog(path)
        return _catalogs[path]


def subscriber_dataset(resource: str, subscription_id: int | None) -> DatasetRef:
    return DatasetRef(job_namespace(), f"api/{resource}/subscription/{subscription_id}")


def _operation_dataset(catalog: Catalog | None, resource: str, op: str) -> DatasetRef:
    if catalog is not None and resource in catalog.resources:
        r = catalog.resources[resource]
        try:
            return api_dataset(catalog.node(r.provider), r.operation(op))
        except Exception:
            pass
    return DatasetRef(f"http://{resource}", op)


def _granted(store: Store, ids: Iterable[int]) -> dict[int, _Sub]:
    with store.session() as s:
        return {
            sub.id: _Sub(tuple(sub.fields or ()))
            for sub in s.execute(
                sa.select(Subscription).where(Subscription.id.in_(list(ids)))
            ).scalars()
        }


def batch_events(
    store: Store, calls: Sequence[CallLine], catalog: Catalog | None = None
) -> list[RunEvent]:
    """START and COMPLETE/FAIL for each resource the delivered (or upstream-failed) calls of
    one stored batch called."""
    catalog = catalog if catalog is not None else _catalog()
    served = [c for c in calls if c.out in (OK, UPSTREAM)]
    if not served:
        return []
    grants = _granted(store, {c.sub for c in served if c.sub is not None})
    events: list[RunEvent] = []
    for code in sorted({c.res for c in served}):
        mine = [c for c in served if c.res == code]
        resource = catalog.resources.get(code) if catalog is not None else None
        fields = resource.fields if resource is not None else ()
        ops = sorted({c.op for c in mine})
        source = _operation_dataset(catalog, code, ops[0])
        outputs, fields_of = [], {}
        for sub in sorted({c.sub for c in mine if c.sub is not None}):
            got = [c for c in mine if c.sub == sub and c.out == OK]
            target = subscriber_dataset(code, sub)
            granted = _fields(fields, grants.get(sub))
            fields_of[target] = granted
            columns = {f.name: f.name for f in granted}
            outputs.append(Output(target, columns, rows=len(got), size=sum(c.b for c in got)))
        failed = sum(1 for c in mine if c.out == UPSTREAM)
        run_id = run_uuid(store.installation_id, f"api/{code}/{mine[0].id}/{mine[-1].id}")
        common = {
            "run_id": run_id,
            "job": f"api:{code}" if resource is None else job_name(resource),
            "source": source,
            "source_fields": tuple(fields),
            "outputs": tuple(outputs),
            "fields_of": fields_of,
        }
        events.append(build(EventSpec(state=RunState.START, **common)))  # type: ignore[arg-type]
        error = f"the upstream failed {failed} of {len(mine)} call(s)" if failed else None
        state = RunState.FAIL if failed else RunState.COMPLETE
        events.append(build(EventSpec(state=state, error=error, closing=True, **common)))  # type: ignore[arg-type]
    return events


def _fields(fields: Sequence[Field], sub: _Sub | None) -> tuple[Field, ...]:
    if sub is None:
        return ()
    wanted = set(sub.fields)
    return tuple(f for f in fields if f.name in wanted)


def api_calls_delivered(
    store: Store,
    calls: Sequence[CallLine],
    *,
    catalog: Catalog | None = None,
    home: Path | None = None,
) -> None:
    """Lineage of a batch of calls the flusher has just stored. Never raises."""
    if not emit.configured() or not calls:
        return
    try:
        events = batch_events(store, calls, catalog)
    except Exception as exc:
        log.warning("lineage: no events for %d api call(s) (%s)", len(calls), type(exc).__name__)
        return
    if events:
        emit.send(home or Settings.from_env().home, events)
