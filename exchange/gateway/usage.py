"""Usage statistics of the gateway (调用类型、数量、频次): calls per day or hour, refusals,
429s, errors and latency percentiles, grouped by code, department, operation or resource,
over a period of Asia/Shanghai days.

Pure queries over ``api_usage``: the percentiles are computed here from the rows (nearest
rank), so every dialect gives the same figures. Who sees what: the platform (admin) every
call, a requester its department's calls, a provider the calls of its department's
resources (``scope_of``).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from exchange.gateway.models import ApiCall
from exchange.kernel.clock import in_shanghai, stored_day_start, today
from exchange.kernel.errors import BadInput
from exchange.store import Store
from exchange.workflow.service import provider_department
from exchange.workflow.users import Principal
from exchange.workspace import Workspace

GROUPS = ("code", "department", "operation", "resource")
PERIODS = ("day", "hour")
DEFAULT_DAYS = 7
MAX_DAYS = 366
#: Outcomes counted as errors: the gateway or the upstream failed the caller (but for an
#: upstream's 4xx passed on: answered).
ERRORS = frozenset({"upstream", "unavailable", "interrupted"})
_PERIOD = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:\.\.(\d{4}-\d{2}-\d{2}))?$")
NONE_KEY = "-"  # a refused call whose code (or department) is unknown


@dataclass(frozen=True)
class Period:
    """Asia/Shanghai days ``start`` to ``end``, both included."""

    start: dt.date
    end: dt.date

    def __str__(self) -> str:
        return f"{self.start}..{self.end}"


def parse_period(text: str | None, where: str = "--period") -> Period:
    """``2026-12-01..2026-12-07``, one day ``2026-12-01``, or (none) the last seven days to
    today in Asia/Shanghai."""
    if not text:
        end = today()
        return Period(end - dt.timedelta(days=DEFAULT_DAYS - 1), end)
    match = _PERIOD.fullmatch(text.strip())
    if match is None:
        raise BadInput(
            f"{where}: {text!r} is not a period; write FIRST..LAST days, e.g. "
            "2026-12-01..2026-12-07, or one day"
        )
    try:
        start = dt.date.fromisoformat(match.group(1))
        end = dt.date.fromisoformat(match.group(2) or match.group(1))
    except ValueError as exc:
        raise BadInput(f"{where}: {text!r}: {exc}") from None
    if end < start:
        raise BadInput(f"{where}: {text!r} ends before it starts")
    if (end - start).days >= MAX_DAYS:
        raise BadInput(f"{where}: {text!r} is longer than {MAX_DAYS} days")
    return Period(start, end)


@dataclass(frozen=True)
class UsageScope:
    """The calls a principal may see: ``None`` is no restriction."""

    departments: frozenset[str] | None = None  # the calling departments
    resources: frozenset[str] | None = None  # the resources called


def scope_of(ws: Workspace, who: Principal) -> UsageScope:
    """Admin (and the platform's own principals): everything; a requester: its department's
    calls; a provider: its department's resources' calls."""
    if who.role in ("admin", "system", "engine"):
        return UsageScope()
    if who.role == "provider":
        mine = frozenset(
            r.code
            for r in ws.catalog.resources.values()
            if who.department and provider_department(ws, r) == who.department
        )
        return UsageScope(resources=mine)
    return UsageScope(departments=frozenset([who.department] if who.department else []))


@dataclass(frozen=True)
class UsageRow:
    """The calls of one group in one day (``hour`` set: one hour of it; ``day`` None: the
    whole period). Latencies in milliseconds over the answered calls (None: none)."""

    key: str
    day: dt.date | None
    hour: int | None
    calls: int
    ok: int  # answered: the granted fields, or the upstream's 4xx passed on (``answered``)
    refused: int  # code, resource, subscription or params refused (400, 401, 403-405, 410)
    quota: int  # 429
    errors: int  # upstream failed (502, 504), Redis down, interrupted
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None

    def as_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["day"] = self.day.isoformat() if self.day else None
        return doc


@dataclass(frozen=True)
class UsageReport:
    """Rows per group and day (or hour), in key then time order, and each group's totals."""

    by: str
    per: str
    period: Period
    rows: tuple[UsageRow, ...]
    totals: tuple[UsageRow, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "per": self.per,
            "period": {"start": self.period.start.isoformat(), "end": self.period.end.isoformat()},
            "rows": [r.as_dict() for r in self.rows],
            "totals": [r.as_dict() for r in self.totals],
        }


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q`` percentile (0 < q <= 1) of ascending values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values)))
    return round(sorted_values[rank - 1], 3)


def answered(outcome: str, status: int) -> bool:
    """Whether a call was answered: with the granted fields (``ok``), or with the upstream's
    own 4xx to the caller's request, passed on (a record that does not exist, say: the
    upstream is up). A refusal of the city's credential is recorded as 502: an error."""
    return outcome == "ok" or (outcome == "upstream" and 400 <= status < 500)


@dataclass
class _Tally:
    calls: int = 0
    ok: int = 0
    refused: int = 0
    quota: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)

    def add(self, outcome: str, status: int, latency_ms: float) -> None:
        self.calls += 1
        if answered(outcome, status):
            self.ok += 1
            # Only the answered calls' latencies: a refusal takes microseconds, and a flood
            # of them would drag the percentiles toward zero.
            self.latencies.append(latency_ms)
        elif outcome == "quota":
            self.quota += 1
        elif outcome in ERRORS:
            self.errors += 1
        else:
            self.refused += 1

    def row(self, key: str, day: dt.date | None, hour: int | None) -> UsageRow:
        lat = sorted(self.latencies)
        return UsageRow(
            key, day, hour, self.calls, self.ok, self.refused, self.quota, self.errors,
            percentile(lat, 0.50), percentile(lat, 0.95), percentile(lat, 0.99),
        )  # fmt: skip


def _key_columns(by: str) -> list[Any]:
    if by == "code":
        return [ApiCall.code_id]
    if by == "department":
        return [ApiCall.department_code]
    if by == "operation":
        return [ApiCall.resource_code, ApiCall.operation]
    return [ApiCall.resource_code]


def _key(by: str, values: Sequence[Any]) -> str:
    if by == "operation":
        return f"{values[0]}/{values[1]}"
    return NONE_KEY if values[0] is None else str(values[0])


def usage(
    store: Store,
    by: str = "resource",
    period: Period | None = None,
    *,
    per: str = "day",
    scope: UsageScope = UsageScope(),
) -> UsageReport:
    """The usage report of ``period`` (default: the last seven days) grouped ``by`` one of
    ``GROUPS``, a row per ``per`` (``day`` or ``hour``) with calls."""
    if by not in GROUPS:
        raise BadInput(f"--by must be one of {', '.join(GROUPS)}, not {by!r}")
    if per not in PERIODS:
        raise BadInput(f"--per must be one of {', '.join(PERIODS)}, not {per!r}")
    period = period or parse_period(None)
    keys = _key_columns(by)
    query = sa.select(ApiCall.at, ApiCall.outcome, ApiCall.status, ApiCall.latency_ms, *keys).where(
        ApiCall.at >= stored_day_start(period.start),
        ApiCall.at < stored_day_start(period.end + dt.timedelta(days=1)),
    )
    if scope.departments is not None:
        query = query.where(ApiCall.department_code.in_(sorted(scope.departments)))
    if scope.resources is not None:
        query = query.where(ApiCall.resource_code.in_(sorted(scope.resources)))
    cells: dict[tuple[str, dt.date, int | None], _Tally] = defaultdict(_Tally)
    totals: dict[str, _Tally] = defaultdict(_Tally)
    with store.session() as s:
        for at, outcome, status, latency, *values in s.execute(
            query.execution_options(yield_per=5000)
        ):
            key = _key(by, values)
            local = in_shanghai(at)
            cell = cells[(key, local.date(), local.hour if per == "hour" else None)]
            cell.add(outcome, status, latency)
            totals[key].add(outcome, status, latency)
    rows = tuple(cells[k].row(*k) for k in sorted(cells, key=_order))
    return UsageReport(
        by, per, period, rows, tuple(totals[k].row(k, None, None) for k in sorted(totals))
    )


def _order(k: tuple[str, dt.date, int | None]) -> tuple[str, dt.date, int]:
    return (k[0], k[1], -1 if k[2] is None else k[2])


def usage_for(
    ws: Workspace,
    who: Principal,
    by: str = "resource",
    period: str | None = None,
    *,
    per: str = "day",
    where: str = "--period",
) -> UsageReport:
    """``usage`` as ``who`` may see it (``scope_of``); ``where`` names the period's source in
    a refusal (the CLI's option, the API's parameter)."""
    return usage(ws.store, by, parse_period(period, where), per=per, scope=scope_of(ws, who))


def columns(report: UsageReport) -> list[str]:
    """The column names of a flat rendering (csv, table)."""
    time_cols = ["day", "hour"] if report.per == "hour" else ["day"]
    return [report.by, *time_cols, "calls", "ok", "refused", "429", "errors",
            "p50_ms", "p95_ms", "p99_ms"]  # fmt: skip


def flat(report: UsageReport, rows: Iterable[UsageRow] | None = None) -> list[list[str]]:
    """The report's rows as text cells in ``columns`` order."""
    out = []
    for r in report.rows if rows is None else rows:
        time_cells = [r.day.isoformat() if r.day else "total"]
        if report.per == "hour":
            time_cells.append("" if r.hour is None else f"{r.hour:02d}")
        lat = ["" if v is None else f"{v:g}" for v in (r.p50_ms, r.p95_ms, r.p99_ms)]
        out.append(
            [
                r.key,
                *time_cells,
                *(str(n) for n in (r.calls, r.ok, r.refused, r.quota, r.errors)),
                *lat,
            ]
        )
    return out


# -- quality of api resources ------------------------------------------------------------------

#: An answered call within this bound is timely (docs/quality.md, "API resources"): the
#: upstream's own timeout is no measure, a call past it is an upstream failure already.
TIMELY_MS = 1000.0


def _answered() -> sa.ColumnElement[bool]:
    """Calls the upstream answered: ``ok``, and its own 4xx to the caller's request (a record
    that does not exist, say), passed on with the upstream's status. A refusal of the city's
    credential or quota (401, 403, 407, 429 at the upstream) is recorded as 502: a failure."""
    return sa.or_(
        ApiCall.outcome == "ok",
        sa.and_(ApiCall.outcome == "upstream", ApiCall.status >= 400, ApiCall.status < 500),
    )


@dataclass(frozen=True)
class ApiQuality:
    """The quality of one api resource over Asia/Shanghai days ``since`` .. ``until``, from
    its usage rows. Admitted calls (code and quota passed) were answered by the upstream or
    failed (upstream error, or interrupted); availability = answered / admitted; timeliness
    = answered within ``bound_ms`` / answered; each a share in 0..100, None when there is
    nothing to judge."""

    resource: str
    since: dt.date
    until: dt.date
    calls: int
    ok: int  # answered with the granted fields
    answered_4xx: int  # answered by the upstream with a 4xx to the caller's request, passed on
    refused: int  # code, subscription or parameters refused
    quota: int  # 429
    failed: int  # admitted, and the upstream failed or the gateway died before answering
    unavailable: int  # refused while the gateway could not count or record (503)
    availability: float | None
    timeliness: float | None
    p95_ms: float | None  # of the answered calls
    bound_ms: float

    def figures(self) -> dict[str, Any]:
        """The counts and shares alone (a report keyed by resource and day)."""
        doc = asdict(self)
        for key in ("resource", "since", "until"):
            del doc[key]
        return doc

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": "api",
            "resource": self.resource,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            **self.figures(),
        }


def _share(part: int, whole: int) -> float | None:
    return None if whole == 0 else round(100.0 * part / whole, 1)


def api_quality(
    store: Store,
    resources: Sequence[str],
    since: dt.date,
    until: dt.date,
    *,
    bound_ms: float = TIMELY_MS,
) -> list[ApiQuality]:
    """The quality of each of ``resources`` (in that order, one entry each, a resource
    without calls too) over local days ``since`` .. ``until``. Counted in the store (one
    grouped query, and one ordered read per resource for its p95), so a long period holds
    no rows in memory."""
    lo, hi = stored_day_start(since), stored_day_start(until + dt.timedelta(days=1))
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    timely: dict[str, int] = defaultdict(int)
    with store.session() as s:
        # Grouped by plain columns (classified below): a CASE in GROUP BY with bound
        # parameters is not the select's own expression to PostgreSQL's server-side binding.
        for code, outcome, status, n, fast in s.execute(
            sa.select(
                ApiCall.resource_code,
                ApiCall.outcome,
                ApiCall.status,
                sa.func.count(),
                sa.func.sum(sa.case((ApiCall.latency_ms <= bound_ms, 1), else_=0)),
            )
            .where(ApiCall.resource_code.in_(list(resources)), ApiCall.at >= lo, ApiCall.at < hi)
            .group_by(ApiCall.resource_code, ApiCall.outcome, ApiCall.status)
        ):
            what = "answered_4xx" if outcome == "upstream" and 400 <= status < 500 else outcome
            counts[code][what] += int(n)
            if what in ("ok", "answered_4xx"):
                timely[code] += int(fast or 0)
        out = []
        for code in resources:
            by = counts.get(code, {})
            ok, answered_4xx = by.get("ok", 0), by.get("answered_4xx", 0)
            failed = by.get("upstream", 0) + by.get("interrupted", 0)
            quota, unavailable = by.get("quota", 0), by.get("unavailable", 0)
            calls = sum(by.values())
            out.append(
                ApiQuality(
                    resource=code,
                    since=since,
                    until=until,
                    calls=calls,
                    ok=ok,
                    answered_4xx=answered_4xx,
                    refused=calls - ok - answered_4xx - failed - quota - unavailable,
                    quota=quota,
                    failed=failed,
                    unavailable=unavailable,
                    availability=_share(ok + answered_4xx, ok + answered_4xx + failed),
                    timeliness=_share(timely[code], ok + answered_4xx),
                    p95_ms=_answered_p95(s, code, lo, hi, ok + answered_4xx),
                    bound_ms=bound_ms,
                )
            )
    return out


def _answered_p95(
    s: Session, resource: str, lo: dt.datetime, hi: dt.datetime, answered: int
) -> float | None:
    """The nearest-rank 95th percentile latency of the resource's answered calls."""
    if answered == 0:
        return None
    rank = max(1, math.ceil(0.95 * answered))
    value = s.execute(
        sa.select(ApiCall.latency_ms)
        .where(ApiCall.resource_code == resource, ApiCall.at >= lo, ApiCall.at < hi, _answered())
        .order_by(ApiCall.latency_ms)
        .offset(rank - 1)
        .limit(1)
    ).scalar()
    return None if value is None else round(float(value), 3)
