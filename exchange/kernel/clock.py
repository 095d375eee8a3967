"""The one clock: Asia/Shanghai, and "now" and "today" as the rest of the project needs them.

Times are kept in the metadata store as naive UTC and shown in Asia/Shanghai; usage periods,
deadlines and score periods end on Shanghai calendar days; "in the future" is judged against
the Shanghai wall clock, which is what a provider's naive timestamps are written in.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

TIMEZONE = "Asia/Shanghai"
SHANGHAI = ZoneInfo(TIMEZONE)


def now() -> dt.datetime:
    """The current instant, aware (UTC)."""
    return dt.datetime.now(dt.UTC)


def utcnow() -> dt.datetime:
    """Naive UTC: how every time is kept in the metadata store."""
    return now().replace(tzinfo=None)


def local_now() -> dt.datetime:
    """Wall-clock time in Asia/Shanghai, naive: what source timestamps are compared with."""
    return now().astimezone(SHANGHAI).replace(tzinfo=None)


def today(at: dt.datetime | None = None) -> dt.date:
    """The calendar day in Asia/Shanghai of ``at`` (aware, or naive UTC), by default now."""
    return in_shanghai(at if at is not None else now()).date()


def in_shanghai(t: dt.datetime) -> dt.datetime:
    """An aware time in Asia/Shanghai; a naive ``t`` is a stored (UTC) time."""
    return (t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)).astimezone(SHANGHAI)


def local_naive(t: dt.datetime) -> dt.datetime:
    """A stored (naive UTC) time as naive Asia/Shanghai wall-clock time."""
    return in_shanghai(t).replace(tzinfo=None)


def stored(t: dt.datetime) -> dt.datetime:
    """Any time as the store keeps it (naive UTC); a naive ``t`` is Asia/Shanghai wall time."""
    aware = t if t.tzinfo is not None else t.replace(tzinfo=SHANGHAI)
    return aware.astimezone(dt.UTC).replace(tzinfo=None)


def day_start(day: dt.date) -> dt.datetime:
    """00:00 Asia/Shanghai of ``day``, aware."""
    return dt.datetime.combine(day, dt.time(0), SHANGHAI)


def stored_day_start(day: dt.date) -> dt.datetime:
    """00:00 Asia/Shanghai of ``day`` as a stored (naive UTC) time."""
    return stored(day_start(day))


def day_end(day: dt.date) -> dt.datetime:
    """23:59:59 Asia/Shanghai of ``day``, aware (where deadlines fall)."""
    return dt.datetime.combine(day, dt.time(23, 59, 59), SHANGHAI)


def shown(t: dt.datetime | None) -> str:
    """A stored time as people read it: ``YYYY-MM-DD HH:MM:SS`` in Asia/Shanghai."""
    return "-" if t is None else in_shanghai(t).strftime("%Y-%m-%d %H:%M:%S")
