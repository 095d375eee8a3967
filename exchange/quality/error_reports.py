"""Error reports (纠错): a requester reports rows it received as wrong; the provider answers
within 3 working days (003 §10, 001); once the provider fixes the source (the fix moves the
rows' cursor), the next run delivers the corrected rows to every subscriber, and the report
records each delivery that carried them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.orm import Session

from exchange import audit
from exchange.catalog.model import Resource
from exchange.kernel.clock import SHANGHAI, today, utcnow
from exchange.kernel.errors import BadInput, NotFound
from exchange.kernel.workdays import add_working_days
from exchange.quality.models import ErrorReport, ErrorReportDelivery
from exchange.quality.quarantine import row_keys
from exchange.quality.tickets import checked_answer
from exchange.runs import watermark
from exchange.runs.plan import Plan
from exchange.runs.rundir import RunDir
from exchange.store.models import Delivery, Subscription
from exchange.workspace import Workspace

ANSWER_DAYS = 3  # the provider answers within 3 working days (001, 003 §10)
REPORT_DAYS = 1  # a requester reports within 1 working day of discovering the error (001)
MAX_KEYS = 1000


def file_report(
    ws: Workspace,
    resource_code: str,
    keys: Sequence[str],
    fields: Sequence[str],
    description: str,
    *,
    subscription_id: int | None = None,
    reporter: str | None = None,
    discovered_on: dt.date | None = None,
) -> ErrorReport:
    """Record a requester's report and its answer deadline."""
    resource = ws.catalog.resource(resource_code)
    keys = [k.strip() for k in keys if k.strip()]
    if not keys:
        raise BadInput("an error report names at least one row key")
    if len(keys) > MAX_KEYS:
        raise BadInput(f"an error report names at most {MAX_KEYS} row keys, not {len(keys)}")
    unknown = [f for f in fields if f not in resource.field_names]
    if unknown:
        raise BadInput(f"resource {resource_code} has no field {', '.join(map(repr, unknown))}")
    if not description.strip():
        raise BadInput("an error report needs a description")
    now = utcnow()
    with ws.store.session() as s:
        if subscription_id is not None:
            sub = s.get(Subscription, subscription_id)
            if sub is None or sub.resource_code != resource_code:
                raise NotFound(f"no subscription {subscription_id} to {resource_code}")
            reporter = reporter or sub.subscriber_node
        due = add_working_days(now, ANSWER_DAYS)
        late = False
        if discovered_on is not None:
            found = dt.datetime.combine(discovered_on, dt.time(12), SHANGHAI)
            late = now > add_working_days(found, REPORT_DAYS).utc
        report = ErrorReport(
            resource_code=resource_code,
            subscription_id=subscription_id,
            reporter=reporter or "requester",
            row_keys=keys,
            fields=list(fields),
            description=description.strip(),
            discovered_on=discovered_on,
            late=late,
            reported_at=now,
            due_at=due.utc,
            due_provisional=due.provisional,
            status="open",
        )
        s.add(report)
        s.flush()
        audit.append(
            s,
            "quality.error_report.filed",
            f"error_report:{report.id}",
            {"resource": resource_code, "keys": keys, "fields": list(fields), "due": due.utc},
            report.reporter,
        )
        return report


def _report(s: Session, report_id: int, status: str, hint: str) -> ErrorReport:
    """The report, which must be in ``status`` (else ``hint`` says what to do)."""
    report = s.get(ErrorReport, report_id)
    if report is None:
        raise NotFound(f"no error report {report_id}")
    if report.status != status:
        raise BadInput(f"error report {report_id} is {report.status}; {hint}")
    return report


def answer_report(
    ws: Workspace, report_id: int, resolution: str, reason: str, actor: str = "provider"
) -> ErrorReport:
    """The provider's answer: fixed at the source, accepted as correct, or will not fix."""
    reason = checked_answer(resolution, reason)
    with ws.store.session() as s:
        report = _report(s, report_id, "open", "only an open report is answered")
        now = utcnow()
        report.status, report.resolution, report.answer = "answered", resolution, reason
        report.answered_at = now
        audit.append(
            s,
            "quality.error_report.answered",
            f"error_report:{report.id}",
            {"resolution": resolution, "reason": reason, "late": now > report.due_at},
            actor,
        )
        return report


def close_report(ws: Workspace, report_id: int, actor: str = "requester") -> ErrorReport:
    """Close an answered report (the requester accepts the answer or the delivered fix)."""
    with ws.store.session() as s:
        report = _report(s, report_id, "answered", "answer it first")
        report.status, report.closed_at = "closed", utcnow()
        audit.append(s, "quality.error_report.closed", f"error_report:{report.id}", {}, actor)
        return report


def record_fix_deliveries(ws: Workspace, run_id: str, resource: Resource, rd: RunDir) -> int:
    """After a run's deliveries: for each report still awaiting its fix, record the
    deliveries of this run that carried any of its rows. Idempotent; returns rows added."""
    with ws.store.session() as s:
        reports = list(
            s.execute(
                sa.select(ErrorReport).where(
                    ErrorReport.resource_code == resource.code,
                    ErrorReport.status != "closed",
                    sa.or_(
                        ErrorReport.resolution.is_(None),
                        ErrorReport.resolution == "fixed_at_source",
                    ),
                )
            ).scalars()
        )
        deliveries = {
            d.subscription_id: d
            for d in s.execute(
                sa.select(Delivery).where(
                    Delivery.run_id == run_id, Delivery.status == "delivered", Delivery.rows > 0
                )
            ).scalars()
        }
    if not reports or not deliveries:
        return 0
    wanted = pa.array(sorted({k for r in reports for k in r.row_keys}), pa.string())
    carried = _delivered_keys(rd, resource, wanted, deliveries)
    added = 0
    with ws.store.session() as s:
        for report in reports:
            mine = set(report.row_keys)
            for sid, keys in carried.items():
                delivery = deliveries[sid]
                hit = sorted(mine.intersection(keys))
                if not hit or delivery.finished_at < report.reported_at:
                    continue
                exists = s.execute(
                    sa.select(ErrorReportDelivery.id).where(
                        ErrorReportDelivery.report_id == report.id,
                        ErrorReportDelivery.delivery_id == delivery.id,
                    )
                ).scalar()
                if exists is not None:
                    continue
                s.add(
                    ErrorReportDelivery(
                        report_id=report.id,
                        delivery_id=delivery.id,
                        run_id=run_id,
                        subscription_id=sid,
                        keys=hit,
                    )
                )
                audit.append(
                    s,
                    "quality.error_report.fix_delivered",
                    f"error_report:{report.id}",
                    {"run": run_id, "subscription": sid, "keys": hit},
                )
                added += 1
    return added


def _delivered_keys(
    rd: RunDir, resource: Resource, wanted: pa.Array, deliveries: dict[int, Delivery]
) -> dict[int, set[str]]:
    """Which of ``wanted`` keys each subscription received in this run (the valid rows at
    or past its own watermark, as the load step sent them)."""
    plan = Plan.from_json(rd.plan())
    since_of = {d.subscription_id: d.since for d in plan.tables()}
    cursor = resource.field(resource.cursor) if resource.cursor else None
    columns = list(resource.primary_key)
    if cursor is not None and cursor.name not in columns:
        columns.append(cursor.name)
    out: dict[int, set[str]] = {sid: set() for sid in deliveries}
    for batch in rd.batches("valid", columns=columns, batch_size=resource.batch_size):
        keys = row_keys(batch, resource.primary_key)
        hit = pc.is_in(keys, value_set=wanted)
        if not pc.any(hit).as_py():
            continue
        for sid in deliveries:
            since = since_of.get(sid)
            mask = hit
            if since is not None and cursor is not None:
                col = batch.column(cursor.name)
                bound = pa.scalar(watermark.decode(since, cursor), type=col.type)
                mask = pc.and_(mask, pc.fill_null(pc.greater_equal(col, bound), False))
            out[sid].update(keys.filter(mask).to_pylist())
    return out


@dataclass(frozen=True)
class ReportView:
    """A report with the deliveries that carried its fix, and whom it has reached."""

    report: ErrorReport
    fix_deliveries: list[ErrorReportDelivery]
    subscribers: list[int]

    @property
    def reached(self) -> list[int]:
        """Subscribers that received every reported row since the report."""
        got: dict[int, set[str]] = {}
        for d in self.fix_deliveries:
            got.setdefault(d.subscription_id, set()).update(d.keys)
        want = set(self.report.row_keys)
        return sorted(sid for sid, keys in got.items() if want <= keys)


def list_reports(ws: Workspace, resource_code: str | None = None) -> list[ReportView]:
    """Reports, newest first, each with its fix deliveries."""
    from exchange.runs.handle import active_subscriptions

    with ws.store.session() as s:
        q = sa.select(ErrorReport).order_by(ErrorReport.id.desc())
        if resource_code:
            q = q.where(ErrorReport.resource_code == resource_code)
        reports = list(s.execute(q).scalars())
        fixes: dict[int, list[ErrorReportDelivery]] = {}
        ids = [r.id for r in reports]
        for d in s.execute(
            sa.select(ErrorReportDelivery)
            .where(ErrorReportDelivery.report_id.in_(ids))
            .order_by(ErrorReportDelivery.id)
        ).scalars():
            fixes.setdefault(d.report_id, []).append(d)
    subs: dict[str, list[int]] = {}
    day = today()
    for r in reports:
        if r.resource_code not in subs:
            subs[r.resource_code] = [x.id for x in active_subscriptions(ws, r.resource_code, day)]
    return [ReportView(r, fixes.get(r.id, []), subs[r.resource_code]) for r in reports]


def show_report(ws: Workspace, report_id: int) -> ReportView:
    with ws.store.session() as s:
        report = s.get(ErrorReport, report_id)
    if report is None:
        raise NotFound(f"no error report {report_id}")
    for view in list_reports(ws, report.resource_code):
        if view.report.id == report_id:
            return view
    raise NotFound(f"no error report {report_id}")
