"""Error reports (纠错): a requester reports rows it received as wrong; the provider answers
within 3 working days (003 §10, 001); once the provider fixes the source (the fix moves the
rows' cursor), the next run delivers the corrected rows to every subscriber, and the report
records each delivery that carried them.
"""

from __future__ import annotations

import datetime as dt
import re
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
from exchange.kernel.text import a_or_an
from exchange.kernel.workdays import add_working_days
from exchange.quality.access import (
    PLATFORM,
    reporting_subscription,
    require_provider,
    require_reporter,
)
from exchange.quality.models import ErrorReport, ErrorReportDelivery
from exchange.quality.quarantine import (
    KEY_SEPARATOR,
    hex_digests,
    key_digests,
    mask_key_text,
    masked_secret,
    row_keys,
)
from exchange.quality.tickets import checked_answer
from exchange.runs import watermark
from exchange.runs.plan import Plan
from exchange.runs.rundir import RunDir
from exchange.store.models import Delivery, Subscription
from exchange.workflow.users import Principal
from exchange.workspace import Workspace

ANSWER_DAYS = 3  # the provider answers within 3 working days (001, 003 §10)
REPORT_DAYS = 1  # a requester reports within 1 working day of discovering the error (001)
MAX_KEYS = 1000
_TEXT_TYPES = ("varchar", "char", "text")
_INTEGER_TYPES = ("smallint", "integer", "bigint")
_INTEGER = re.compile(r"-?[0-9]+")


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
    who: Principal = PLATFORM,
) -> ErrorReport:
    """Record a requester's report and its answer deadline. ``who`` files it: a requester
    under its department's subscription to the resource, or an admin (for a ``reporter``);
    checked first, and the audit event is ``who``'s."""
    sub = reporting_subscription(ws, who, resource_code, subscription_id)
    if who.role != "admin":
        reporter = who.name  # a requester reports as itself
    resource = ws.catalog.resource(resource_code)
    keys = [k.strip() for k in keys if k.strip()]
    if not keys:
        raise BadInput("an error report names at least one row key")
    if len(keys) > MAX_KEYS:
        raise BadInput(f"an error report names at most {MAX_KEYS} row keys, not {len(keys)}")
    check_keys(resource, keys)
    unknown = [f for f in fields if f not in resource.field_names]
    if unknown:
        raise BadInput(f"resource {resource_code} has no field {', '.join(map(repr, unknown))}")
    if not description.strip():
        raise BadInput("an error report needs a description")
    now = utcnow()
    if sub is not None:
        reporter = reporter or sub.subscriber_node
    # ID and phone numbers in a key are kept masked; the digests find the deliveries
    secret = masked_secret(ws, resource)
    digests = hex_digests(secret, keys) if secret is not None else None
    with ws.store.session() as s:
        due = add_working_days(now, ANSWER_DAYS)
        late = False
        if discovered_on is not None:
            found = dt.datetime.combine(discovered_on, dt.time(12), SHANGHAI)
            late = now > add_working_days(found, REPORT_DAYS).utc
        report = ErrorReport(
            resource_code=resource_code,
            subscription_id=sub.id if sub is not None else None,
            reporter=reporter or who.name,
            row_keys=mask_key_text(resource, keys),
            key_digests=digests,
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
            {"resource": resource_code, "keys": report.row_keys,
             "fields": list(fields), "due": due.utc, "reporter": report.reporter},
            who.name,
        )  # fmt: skip
        return report


def _key_problem(resource: Resource, key: str) -> str | None:
    """What is wrong with one row key's shape, or ``None``.

    A key is written as quarantine shows it: the primary key's values in its columns' order,
    joined by '|'. A single text column may hold a '|' itself; any other key has exactly one
    part per column, and a part of an integer column is an integer.
    """
    pk = resource.primary_key
    columns = [resource.field(c) for c in pk]
    if len(pk) == 1 and columns[0].type in _TEXT_TYPES:
        return None
    parts = key.split(KEY_SEPARATOR)
    if len(parts) != len(pk):
        return f"has {len(parts)} part{'s' if len(parts) != 1 else ''}, not {len(pk)}"
    for column, part in zip(columns, parts, strict=True):
        if column.type in _INTEGER_TYPES and not _INTEGER.fullmatch(part):
            return f"has {part!r} for {column.name}, {a_or_an(column.type)}"
    return None


def check_keys(resource: Resource, keys: Sequence[str]) -> None:
    """Refuse row keys that cannot name a row of ``resource``, naming them and the key's
    columns (a report on such a key would wait for a fix that no delivery can carry)."""
    pk = resource.primary_key
    if not pk:
        raise BadInput(
            f"resource {resource.code} has no primary key: an error report names rows by it"
        )
    wrong = [(k, why) for k in keys if (why := _key_problem(resource, k)) is not None]
    if not wrong:
        return
    # An ID or phone number in a key is never echoed in full (a problem names only the
    # number of parts, or an integer column's part).
    masked = mask_key_text(resource, [k for k, _ in wrong[:5]])
    shown = "; ".join(f"{k!r} {why}" for k, (_, why) in zip(masked, wrong[:5], strict=True))
    more = f" (and {len(wrong) - 5} more)" if len(wrong) > 5 else ""
    if len(pk) > 1:
        shape = f"is ({', '.join(pk)}): write each key as {KEY_SEPARATOR.join(pk)}"
    else:
        shape = f"is {pk[0]} ({resource.field(pk[0]).type}): write each key as one {pk[0]} value"
    plural = "s" if len(wrong) > 1 else ""
    raise BadInput(
        f"resource {resource.code}: row key{plural} {shown}{more} — its primary key {shape}"
    )


def _found(s: Session, report_id: int) -> ErrorReport:
    report = s.get(ErrorReport, report_id)
    if report is None:
        raise NotFound(f"no error report {report_id}")
    return report


def _report(s: Session, report_id: int, status: str, hint: str) -> ErrorReport:
    """The report, which must be in ``status`` (else ``hint`` says what to do)."""
    report = _found(s, report_id)
    if report.status != status:
        raise BadInput(f"error report {report_id} is {report.status}; {hint}")
    return report


def answer_report(
    ws: Workspace, report_id: int, resolution: str, reason: str, who: Principal = PLATFORM
) -> ErrorReport:
    """The provider's answer: fixed at the source, accepted as correct, or will not fix.
    ``who`` is of the resource's provider department (or an admin), checked first."""
    with ws.store.session() as s:
        found = _found(s, report_id)
        require_provider(ws, who, found.resource_code, f"answer error report {report_id}")
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
            who.name,
        )
        return report


def close_report(ws: Workspace, report_id: int, who: Principal = PLATFORM) -> ErrorReport:
    """Close an answered report (the requester accepts the answer or the delivered fix):
    ``who`` is of the department it was filed for, or an admin, checked first."""
    with ws.store.session() as s:
        found = _found(s, report_id)
        sub = s.get(Subscription, found.subscription_id) if found.subscription_id else None
        require_reporter(who, sub, report_id)
        report = _report(s, report_id, "answered", "answer it first")
        report.status, report.closed_at = "closed", utcnow()
        audit.append(s, "quality.error_report.closed", f"error_report:{report.id}", {}, who.name)
        return report


def record_fix_deliveries(ws: Workspace, run_id: str, resource: Resource, rd: RunDir) -> int:
    """After a run's deliveries: for each report still awaiting its fix, record the
    deliveries of this run that carried any of its rows. Idempotent; returns rows added. A
    masked key is matched by its digest, and a delivery keeps it masked."""
    secret = masked_secret(ws, resource)
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
    wanted = pa.array(sorted({k for r in reports for k in _matched_by(r)}), pa.string())
    carried = _delivered_keys(rd, resource, wanted, deliveries, secret)
    added = 0
    with ws.store.session() as s:
        for report in reports:
            shown_of = dict(zip(_matched_by(report), report.row_keys, strict=True))
            for sid, keys in carried.items():
                delivery = deliveries[sid]
                hit = sorted(set(shown_of).intersection(keys))
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
                        keys=[shown_of[k] for k in hit],
                        key_digests=hit if report.key_digests is not None else None,
                    )
                )
                audit.append(
                    s,
                    "quality.error_report.fix_delivered",
                    f"error_report:{report.id}",
                    {"run": run_id, "subscription": sid,
                     "keys": mask_key_text(resource, [shown_of[k] for k in hit])},
                )  # fmt: skip
                added += 1
    return added


def _matched_by(report: ErrorReport | ErrorReportDelivery) -> list[str]:
    """What a report's (or a fix delivery's) rows are matched by: the digests of masked
    keys, else the keys."""
    if report.key_digests is not None:
        return list(report.key_digests)
    return list(report.row_keys if isinstance(report, ErrorReport) else report.keys)


def _delivered_keys(
    rd: RunDir,
    resource: Resource,
    wanted: pa.Array,
    deliveries: dict[int, Delivery],
    secret: bytes | None,
) -> dict[int, set[str]]:
    """Which of ``wanted`` keys (hex digests when ``secret`` is given) each subscription
    received in this run (the valid rows at or past its own watermark, as the load step
    sent them)."""
    plan = Plan.from_json(rd.plan())
    since_of = {d.subscription_id: d.since for d in plan.tables()}
    cursor = resource.field(resource.cursor) if resource.cursor else None
    columns = list(resource.primary_key)
    if cursor is not None and cursor.name not in columns:
        columns.append(cursor.name)
    out: dict[int, set[str]] = {sid: set() for sid in deliveries}
    for batch in rd.batches("valid", columns=columns, batch_size=resource.batch_size):
        keys = row_keys(batch, resource.primary_key)
        if secret is not None:
            digests = key_digests(secret, keys.to_pylist())
            keys = pa.array([None if d is None else d.hex() for d in digests], pa.string())
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
            got.setdefault(d.subscription_id, set()).update(_matched_by(d))
        want = set(_matched_by(self.report))
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
