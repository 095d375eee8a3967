"""The one working-day calendar of the project (SLA clocks, ticket and error-report deadlines).

"Within N working days" of an event: the event's own day is not counted; the deadline is
23:59:59 Asia/Shanghai of the Nth working day after it. A working day is Monday to Friday that
is not a statutory holiday, plus the make-up workdays (调休) on weekends.

The statutory schedule comes from ``chinese-calendar`` (2004–2026) and from a calendar file in
which the platform adds each new year's official schedule (``EXCHANGE_CALENDAR``)::

    2027:
      holidays: [2027-01-01, 2027-02-05..2027-02-11]
      workdays: [2027-02-13]

A year that neither knows is never a crash: its days are judged on weekends plus the fixed-date
holidays (1 Jan, 1 May, 1–3 Oct) and every deadline touching it is marked ``provisional``.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import chinese_calendar
import yaml

from exchange.kernel.clock import SHANGHAI, in_shanghai
from exchange.kernel.errors import BadInput

FIXED_HOLIDAYS = {(1, 1), (5, 1), (10, 1), (10, 2), (10, 3)}
ENV = "EXCHANGE_CALENDAR"


@dataclass(frozen=True)
class Deadline:
    """A deadline instant (aware, Asia/Shanghai) and whether an unknown year went into it."""

    at: dt.datetime
    provisional: bool = False

    def isoformat(self) -> str:
        return self.at.isoformat()

    def __str__(self) -> str:
        return self.isoformat() + (" (provisional)" if self.provisional else "")

    @property
    def utc(self) -> dt.datetime:
        """Naive UTC, as the metadata store keeps times."""
        return self.at.astimezone(dt.UTC).replace(tzinfo=None)


def _dates(items: list[Any], where: str) -> set[dt.date]:
    out: set[dt.date] = set()
    for item in items or []:
        text = str(item)
        try:
            if ".." in text:
                a, b = (dt.date.fromisoformat(p.strip()) for p in text.split(".."))
                out.update(a + dt.timedelta(days=i) for i in range((b - a).days + 1))
            else:
                out.add(dt.date.fromisoformat(text))
        except ValueError:
            raise BadInput(f"{where}: {text!r} is not a date or a 'date..date' range") from None
    return out


@dataclass
class WorkCalendar:
    """Working days on the Chinese statutory calendar, extended by the platform's file."""

    holidays: dict[int, set[dt.date]] = field(default_factory=dict)
    workdays: dict[int, set[dt.date]] = field(default_factory=dict)

    @classmethod
    def from_file(cls, path: str | Path | None) -> WorkCalendar:
        """Load the platform's calendar file (none: the library alone)."""
        cal = cls()
        if not path:
            return cal
        p = Path(path)
        try:
            doc = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError, ValueError) as exc:
            # ValueError: YAML parses 2027-02-30 as a date and fails on the impossible day
            raise BadInput(f"calendar file {p}: {exc}") from None
        if not isinstance(doc, dict):
            raise BadInput(f"calendar file {p}: expected years as keys (2027: {{holidays: …}})")
        for year, spec in doc.items():
            try:
                y = int(year)
            except (TypeError, ValueError):
                raise BadInput(f"calendar file {p}: {year!r} is not a year") from None
            if spec is not None and not isinstance(spec, dict):
                raise BadInput(f"calendar file {p} {y}: expected holidays and workdays lists")
            where = f"{p.name} {y}"
            cal.holidays[y] = _dates((spec or {}).get("holidays", []), f"{where}.holidays")
            cal.workdays[y] = _dates((spec or {}).get("workdays", []), f"{where}.workdays")
            stray = {d for d in cal.holidays[y] | cal.workdays[y] if d.year != y}
            if stray:
                raise BadInput(f"{where}: {sorted(stray)[0]} is not in {y}")
        return cal

    def knows(self, year: int) -> bool:
        """Whether the official schedule of ``year`` is known (not provisional)."""
        return year in self.holidays or _library_knows(year)

    def is_working_day(self, day: dt.date) -> bool:
        if day.year in self.holidays:
            if day in self.workdays[day.year]:
                return True
            return day.weekday() < 5 and day not in self.holidays[day.year]
        if _library_knows(day.year):
            return bool(chinese_calendar.is_workday(day))
        return day.weekday() < 5 and (day.month, day.day) not in FIXED_HOLIDAYS

    def add_working_days(self, start: dt.datetime, n: int) -> Deadline:
        """End (23:59:59 Asia/Shanghai) of the ``n``-th working day after ``start``'s day."""
        if n < 1:
            raise ValueError("n must be at least 1")
        local = _as_shanghai(start)
        day = local.date()
        provisional = False
        counted = 0
        while counted < n:
            day += dt.timedelta(days=1)
            provisional |= not self.knows(day.year)
            if self.is_working_day(day):
                counted += 1
        return Deadline(dt.datetime.combine(day, dt.time(23, 59, 59), SHANGHAI), provisional)


@functools.cache
def _library_knows(year: int) -> bool:
    try:
        chinese_calendar.is_workday(dt.date(year, 6, 1))
    except NotImplementedError:
        return False
    return True


@functools.cache
def library_years() -> tuple[int, int]:
    """The first and last year whose schedule ``chinese-calendar`` knows."""
    known = [y for y in range(1990, 2100) if _library_knows(y)]
    return known[0], known[-1]


def _as_shanghai(t: dt.datetime) -> dt.datetime:
    """Aware times are converted; naive ones are UTC, as everywhere in the store."""
    return in_shanghai(t)


_default: tuple[tuple[str, int], WorkCalendar] | None = None


def default_calendar() -> WorkCalendar:
    """The calendar of this process: the library plus ``$EXCHANGE_CALENDAR`` if set.

    Reloaded when the variable or the file changes: a long-running API server or Airflow
    worker sees the year a platform engineer adds without a restart.
    """
    global _default
    path = os.environ.get(ENV) or ""
    try:
        key = (path, Path(path).stat().st_mtime_ns if path else 0)
    except OSError:
        key = (path, -1)  # a missing file is reported by from_file
    if _default is None or _default[0] != key:
        _default = (key, WorkCalendar.from_file(path or None))
    return _default[1]


def add_working_days(start: dt.datetime, n: int) -> Deadline:
    """``n`` working days after ``start`` on the default calendar."""
    return default_calendar().add_working_days(start, n)
