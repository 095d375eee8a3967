"""Scores on the six assessment dimensions of source document 004 §10, per resource and period.

Each is a share in 0..100 (higher is better); None when the period holds nothing to judge.
The formulas are in docs/quality.md; in short, over the runs started in the
period (R runs, N rows extracted in all, bad_d rows failing a rule of dimension d):

* continuity   = slots of the update cycle with a successful run / slots expected
* consistency  = 1 − bad_consistency / N   (cross-field comparisons, unique values)
* normativity  = 1 − bad_normativity / N   (length, regex, code lists, region codes, phones)
* authenticity = 1 − bad_authenticity / N  (check characters, birth dates, ranges, no future)
* completeness = 1 − bad_completeness / N  (required values)
* validity     = runs neither stale nor held back / R

Api resources have no runs: ``resource_scores`` leaves them out, and their own dimensions
(availability, timeliness: exchange.gateway.usage.api_quality) are read from the gateway's
usage rows by the face that shows both, since this layer may not import the gateway.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import sqlalchemy as sa

from exchange.kernel.clock import local_naive, stored_day_start
from exchange.kernel.workdays import WorkCalendar, default_calendar
from exchange.quality.models import QualityRunStat
from exchange.store.models import Run
from exchange.workspace import Workspace
from quality.rules import AUTHENTICITY, COMPLETENESS, CONSISTENCY, NORMATIVITY

#: The resource kind called through the gateway (kinds.RESOURCE_KINDS), not run.
API_KIND = "api"

DIMENSIONS = (
    "continuity",
    "consistency",
    "normativity",
    "authenticity",
    "completeness",
    "validity",
)


@dataclass(frozen=True)
class Score:
    resource: str
    since: dt.date
    until: dt.date
    runs: int
    rows: int
    continuity: float | None
    consistency: float | None
    normativity: float | None
    authenticity: float | None
    completeness: float | None
    validity: float | None

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["since"], d["until"] = self.since.isoformat(), self.until.isoformat()
        return d


_local = local_naive
_utc = stored_day_start  # start of a local day as naive UTC (how the store keeps times)


def _slot(t: dt.datetime, cycle: str) -> object:
    """The update-cycle slot a local time falls in (the unit continuity counts)."""
    m = re.fullmatch(r"every_(\d+)_minutes", cycle)
    if m:
        minutes = int(m.group(1))
        return (t.date(), (t.hour * 60 + t.minute) // minutes)
    if cycle == "hourly":
        return (t.date(), t.hour)
    if cycle == "weekly":
        return t.isocalendar()[:2]
    if cycle == "monthly":
        return (t.year, t.month)
    if cycle == "quarterly":
        return (t.year, (t.month - 1) // 3)
    if cycle == "yearly":
        return t.year
    return t.date()


def _expected_slots(
    start: dt.date, end: dt.date, cycle: str, calendar: WorkCalendar
) -> Iterator[object]:
    """Every slot from ``start`` to ``end`` (local days, inclusive) in which a run is due.
    Daily and finer cycles are due on working days only."""
    day = start
    seen: set[object] = set()
    fine = cycle == "hourly" or cycle.startswith("every_")
    while day <= end:
        if cycle in ("daily",) or fine:
            if calendar.is_working_day(day):
                if fine:
                    step = 60 if cycle == "hourly" else int(cycle.split("_")[1])
                    for minute in range(0, 24 * 60, step):
                        yield _slot(
                            dt.datetime.combine(day, dt.time(minute // 60, minute % 60)), cycle
                        )
                else:
                    yield day
        else:
            slot = _slot(dt.datetime.combine(day, dt.time(0)), cycle)
            if slot not in seen:
                seen.add(slot)
                yield slot
        day += dt.timedelta(days=1)


def _share(bad: int, total: int) -> float | None:
    return None if total == 0 else round(100.0 * (1 - bad / total), 1)


def api_resources(ws: Workspace, resource_code: str | None = None) -> list[str]:
    """The catalog's api resources (or ``resource_code``, if it is one), in code order: those
    scored on availability and timeliness instead (exchange.gateway.usage.api_quality)."""
    if resource_code:
        return [resource_code] if ws.catalog.resource(resource_code).kind == API_KIND else []
    return sorted(c for c, r in ws.catalog.resources.items() if r.kind == API_KIND)


def resource_scores(
    ws: Workspace,
    since: dt.date,
    until: dt.date,
    resource_code: str | None = None,
    calendar: WorkCalendar | None = None,
) -> list[Score]:
    """The six scores of every resource (or one) over local days ``since`` .. ``until``.

    Api resources have no runs to score: they are left out (an api ``resource_code`` gives
    no score); their quality comes from the gateway's usage rows (``api_resources``)."""
    calendar = calendar or default_calendar()
    if resource_code:
        ws.catalog.resource(resource_code)
    codes = [resource_code] if resource_code else sorted(ws.catalog.resources)
    codes = [c for c in codes if ws.catalog.resources[c].kind != API_KIND]
    lo, hi = _utc(since), _utc(until + dt.timedelta(days=1))
    out: list[Score] = []
    with ws.store.session() as s:
        for code in codes:
            resource = ws.catalog.resource(code)
            runs = list(
                s.execute(
                    sa.select(Run).where(
                        Run.resource_code == code, Run.started_at >= lo, Run.started_at < hi
                    )
                ).scalars()
            )
            stats = list(
                s.execute(
                    sa.select(QualityRunStat).where(QualityRunStat.run_id.in_([r.id for r in runs]))
                ).scalars()
            )
            first = s.execute(
                sa.select(sa.func.min(Run.started_at)).where(Run.resource_code == code)
            ).scalar()
            out.append(
                _score(
                    resource.code, resource.update_cycle, since, until, runs, stats, first, calendar
                )
            )
    return out


def _score(
    code: str,
    cycle: str,
    since: dt.date,
    until: dt.date,
    runs: list[Run],
    stats: list[QualityRunStat],
    first_run: dt.datetime | None,
    calendar: WorkCalendar,
) -> Score:
    ok = [r for r in runs if r.status == "succeeded"]
    if cycle == "on_demand":
        # Closed runs only: a failed step leaves its run open and resumable (not yet a miss).
        finished = [r for r in runs if r.finished_at is not None]
        continuity = _share(len(finished) - len(ok), len(finished))
    else:
        # Slots before the resource's first run ever are not held against it.
        start = max(since, _local(first_run).date()) if first_run else since
        expected = set(_expected_slots(start, until, cycle, calendar)) if first_run else set()
        done = {_slot(_local(r.started_at), cycle) for r in ok}
        continuity = _share(len(expected - done), len(expected))
    rows = sum(st.extracted for st in stats)

    def bad(dimension: str) -> int:
        return sum(int(st.by_dimension.get(dimension, 0)) for st in stats)

    unusable = sum(1 for st in stats if st.stale or st.held)
    return Score(
        resource=code,
        since=since,
        until=until,
        runs=len(runs),
        rows=rows,
        continuity=continuity,
        consistency=_share(bad(CONSISTENCY), rows),
        normativity=_share(bad(NORMATIVITY), rows),
        authenticity=_share(bad(AUTHENTICITY), rows),
        completeness=_share(bad(COMPLETENESS), rows),
        validity=_share(unusable, len(stats)),
    )
