"""The daily run report: per resource, how its runs and deliveries of one local day went.

The housekeeping DAG writes it once a day (``$EXCHANGE_HOME/reports/runs-YYYY-MM-DD.json``);
platform engineers read it next to the workflow's SLA breaches. Api resources have no runs:
their day (calls, 429s, refusals, availability, timeliness) is a section of its own,
``api_resources``, read from the gateway's usage rows by the caller (exchange.orchestration).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from exchange.kernel.clock import TIMEZONE, stored_day_start
from exchange.runs.rundir import RunDir
from exchange.store.models import AuditEvent, Delivery, Run
from exchange.workspace import Workspace


@dataclass
class ResourceDay:
    """One resource's day: runs by outcome, deliveries, rows and missed run deadlines."""

    runs: dict[str, int] = field(default_factory=dict)
    deliveries_failed: int = 0
    deliveries_ok: int = 0
    rows_delivered: int = 0
    deadlines_missed: int = 0


def _utc_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = stored_day_start(day)  # stored timestamps are naive UTC
    return start, start + dt.timedelta(days=1)


def daily_run_report(ws: Workspace, day: dt.date) -> dict[str, ResourceDay]:
    """Runs started on ``day`` (Asia/Shanghai), by resource code."""
    start, end = _utc_bounds(day)
    report: dict[str, ResourceDay] = {}
    with ws.store.session() as s:
        for run in s.execute(
            sa.select(Run).where(Run.started_at >= start, Run.started_at < end)
        ).scalars():
            r = report.setdefault(run.resource_code, ResourceDay())
            r.runs[run.status] = r.runs.get(run.status, 0) + 1
        rows = s.execute(
            sa.select(Run.resource_code, Delivery.status, Delivery.rows)
            .join(Delivery, Delivery.run_id == Run.id)
            .where(Run.started_at >= start, Run.started_at < end)
        )
        for code, status, n in rows:
            r = report.setdefault(code, ResourceDay())
            if status == "delivered":
                r.deliveries_ok += 1
                r.rows_delivered += n or 0
            elif status != "skipped":  # no longer allowed to receive it: not a failure
                r.deliveries_failed += 1
        for subject in s.execute(
            sa.select(AuditEvent.subject).where(
                AuditEvent.kind == "run.deadline_missed",
                AuditEvent.at >= start,
                AuditEvent.at < end,
            )
        ).scalars():
            code = subject.removeprefix("resource:")
            report.setdefault(code, ResourceDay()).deadlines_missed += 1
    return dict(sorted(report.items()))


def write_daily_run_report(
    ws: Workspace, day: dt.date, api_resources: Mapping[str, Mapping[str, Any]] | None = None
) -> Path:
    """Write the day's report as JSON under ``$EXCHANGE_HOME/reports`` and return its path.

    ``api_resources``: the day's figures of each api resource called through the gateway
    (``exchange.gateway.usage.api_quality``), written as the section ``api_resources``. They
    are passed in, not read here: this layer may not import the gateway (.importlinter)."""
    report = daily_run_report(ws, day)
    doc: dict[str, Any] = {
        "day": day.isoformat(),
        "timezone": TIMEZONE,
        "resources": {code: asdict(r) for code, r in report.items()},
    }
    if api_resources is not None:
        doc["api_resources"] = {code: dict(api_resources[code]) for code in sorted(api_resources)}
    path = ws.settings.home / "reports" / f"runs-{day.isoformat()}.json"
    RunDir(path.parent).write_json(path, doc)
    return path
