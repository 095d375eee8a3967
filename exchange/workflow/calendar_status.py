"""Which years the working-day calendar knows, the warning when next year's is missing, and
loading a year's official schedule.

The statutory schedule of a year comes from ``chinese-calendar`` or from the platform's
calendar file (``$EXCHANGE_CALENDAR``, ``exchange.kernel.workdays``); a year neither knows is
*provisional*: its days are judged on weekends and the fixed-date holidays, and every deadline
counted into it is marked so. The State Council publishes the next year's schedule late in the
year, so from 1 November, while the coming year is missing, the housekeeping tick raises a
warning to the platform once every working day (``warn_missing_years``). ``load`` merges a
schedule file into the calendar file and recomputes every provisional deadline at once
(subscription clocks, upstream forward deadlines, the earliest dates of resource notices).
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml
from sqlalchemy.orm import Session

from exchange import audit
from exchange.kernel.clock import today
from exchange.kernel.errors import BadInput, Forbidden
from exchange.kernel.workdays import ENV, WorkCalendar, default_calendar, library_years
from exchange.store import Store
from exchange.store.locks import serialize
from exchange.workflow import notices, notifications, sla, upstream
from exchange.workflow.users import Principal

WARN_FROM = (11, 1)  # 1 November: the next year's schedule is due from the State Council
PROVISIONAL = (
    "deadlines after 31 December are provisional until the State Council's schedule is loaded"
)


@dataclass(frozen=True)
class YearStatus:
    """One year of the calendar: exact (and from where) or provisional."""

    years: str  # "2004–2026" or "2027"
    exact: bool
    source: str  # chinese-calendar | the calendar file's path | provisional's rule


@dataclass(frozen=True)
class CalendarStatus:
    years: list[YearStatus]
    file: str | None  # $EXCHANGE_CALENDAR
    missing: list[int]  # this year, and from 1 November the next, when not exact
    warning: str | None


def missing_years(day: dt.date, calendar: WorkCalendar | None = None) -> list[int]:
    """The years around ``day`` that deadlines reach and the calendar does not know: the
    current year, and from 1 November the next one."""
    cal = calendar or default_calendar()
    years = [day.year]
    if (day.month, day.day) >= WARN_FROM:
        years.append(day.year + 1)
    return [y for y in years if not cal.knows(y)]


def warning_text(missing: list[int]) -> str | None:
    if not missing:
        return None
    which = " and ".join(map(str, missing))
    return (
        f"the calendar lacks the official schedule of {which}: {PROVISIONAL} "
        "(add it with `exchange calendar load FILE`)"
    )


def status(day: dt.date | None = None, calendar: WorkCalendar | None = None) -> CalendarStatus:
    """The years the calendar knows, by source, and the years around ``day`` it lacks."""
    cal = calendar or default_calendar()
    day = day or today()
    first, last = library_years()
    rows = [YearStatus(f"{first}–{last}", True, "chinese-calendar")]
    path = os.environ.get(ENV) or None
    for year in sorted(cal.holidays):
        rows.append(YearStatus(str(year), True, f"calendar file {path}"))
    missing = missing_years(day, cal)
    for year in sorted({day.year, day.year + 1} - {y for y in range(first, last + 1)}):
        if not cal.knows(year):
            rows.append(YearStatus(str(year), False, "weekends and 1 Jan, 1 May, 1–3 Oct only"))
    return CalendarStatus(rows, path, missing, warning_text(missing))


def warn_missing_years(s: Session, now: dt.datetime, calendar: WorkCalendar | None = None) -> int:
    """The tick: on a working day from 1 November while the coming year (or, in January, the
    current one) is missing, one warning to the platform that day. Returns 1 when queued."""
    cal = calendar or default_calendar()
    day = today(now)
    missing = missing_years(day, cal)
    if not missing or not cal.is_working_day(day):
        return 0
    text = warning_text(missing)
    new = notifications.notify(
        s, "calendar.year_missing", "platform",
        {"missing": missing, "day": str(day), "message": text},
        key=f"calendar.year_missing:{day}",
    )  # fmt: skip
    if new:
        audit.append(
            s, "calendar.year_missing", "calendar", {"missing": missing, "day": day},
            actor="housekeeping",
        )  # fmt: skip
    return int(new)


@dataclass(frozen=True)
class LoadReport:
    file: str
    years: list[int]
    recomputed: int

    def __str__(self) -> str:
        years = ", ".join(map(str, self.years))
        return f"{self.file}: schedule of {years} loaded; {self.recomputed} deadline(s) recomputed"


def load(store: Store, source: str | Path, who: Principal) -> LoadReport:
    """Merge the years of ``source`` (a calendar file) into ``$EXCHANGE_CALENDAR`` and
    recompute every provisional deadline against it (a platform admin's step)."""
    if who.role != "admin":
        raise Forbidden(f"{who.describe()} may not load the calendar: only a platform admin may")
    target = os.environ.get(ENV)
    if not target:
        raise BadInput(
            f"${ENV} is not set: point it to the platform's calendar file (every process of "
            f"the platform reads it), then load {source} into it"
        )
    given = WorkCalendar.from_file(source)  # BadInput names a bad line
    if not given.holidays:
        raise BadInput(f"calendar file {source}: no year in it")
    merged = WorkCalendar.from_file(target) if Path(target).exists() else WorkCalendar()
    if Path(source).resolve() != Path(target).resolve():
        merged.holidays.update(given.holidays)
        merged.workdays.update(given.workdays)
        _write(Path(target), merged)
    cal = WorkCalendar.from_file(target)  # as every process reads it from now on
    with store.session() as s:
        serialize(s)
        recomputed = sla.refresh_provisional(s, cal)
        recomputed += upstream.refresh_provisional(s, cal)
        recomputed += notices.refresh_provisional(s, cal)
        audit.append(
            s, "calendar.loaded", "calendar",
            {"file": target, "from": str(source), "years": sorted(given.holidays),
             "recomputed": recomputed},
            actor=who.name,
        )  # fmt: skip
    return LoadReport(target, sorted(given.holidays), recomputed)


def _ranges(days: set[dt.date]) -> list[str]:
    """Dates as the file writes them: runs of consecutive days as ``a..b``."""
    out: list[str] = []
    run: list[dt.date] = []
    for d in sorted(days):
        if run and d != run[-1] + dt.timedelta(days=1):
            out.append(_span(run))
            run = []
        run.append(d)
    if run:
        out.append(_span(run))
    return out


def _span(run: list[dt.date]) -> str:
    return str(run[0]) if len(run) == 1 else f"{run[0]}..{run[-1]}"


def _write(path: Path, cal: WorkCalendar) -> None:
    """The calendar file, written whole and atomically (a reader never sees half of it)."""
    doc = {
        year: {"holidays": _ranges(cal.holidays[year]), "workdays": _ranges(cal.workdays[year])}
        for year in sorted(cal.holidays)
    }
    text = (
        "# The platform's working-day calendar: each year's official schedule\n"
        "# (holidays and make-up workdays), written by `exchange calendar load`.\n"
        + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", delete=False
    ) as tmp:
        tmp.write(text)
    os.replace(tmp.name, path)
