"""Resource-level rules: the hold-back threshold, row-count bounds and freshness.

They judge a whole run from its counts and its newest cursor value: plain values in, a
finding (a sentence) or None out.
"""

from __future__ import annotations

import datetime as dt
import re

from exchange.catalog.quality_spec import ResourceQuality
from exchange.kernel.clock import SHANGHAI

# How old the newest row may be for each update cycle (003 §9: a daily mount is refreshed
# the same day the business data changes, so its newest row is at most a day old).
CYCLE_ALLOWANCE = {
    "hourly": dt.timedelta(hours=1),
    "daily": dt.timedelta(days=1),
    "weekly": dt.timedelta(days=7),
    "monthly": dt.timedelta(days=31),
    "quarterly": dt.timedelta(days=92),
    "yearly": dt.timedelta(days=366),
}
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def bad_ratio_hold(extracted: int, quarantined: int, spec: ResourceQuality) -> str | None:
    """Why the run's delivery is held back for too many bad rows, or None."""
    if spec.max_bad_ratio is None or extracted == 0:
        return None
    ratio = quarantined / extracted
    if ratio <= spec.max_bad_ratio:
        return None
    return (
        f"{quarantined:,} of {extracted:,} rows bad ({ratio:.1%}), "
        f"more than the resource allows ({spec.max_bad_ratio:.1%})"
    )


def row_count_hold(extracted: int, full_extract: bool, spec: ResourceQuality) -> str | None:
    """Why a full extract's row count is implausible, or None (increments are not judged)."""
    if not full_extract:
        return None
    if spec.row_count_min is not None and extracted < spec.row_count_min:
        return f"{extracted:,} rows extracted, fewer than the minimum {spec.row_count_min:,}"
    if spec.row_count_max is not None and extracted > spec.row_count_max:
        return f"{extracted:,} rows extracted, more than the maximum {spec.row_count_max:,}"
    return None


def freshness_allowance(spec: ResourceQuality, update_cycle: str) -> dt.timedelta | None:
    """How old the newest cursor value may be; None when freshness is not checked."""
    if not spec.freshness:
        return None
    if spec.freshness != "cycle":
        number, unit = int(spec.freshness[:-1]), spec.freshness[-1]
        return dt.timedelta(**{_UNITS[unit]: number})
    m = re.fullmatch(r"every_(\d+)_minutes", update_cycle)
    if m:
        return dt.timedelta(minutes=int(m.group(1)))
    return CYCLE_ALLOWANCE.get(update_cycle)  # on_demand: never stale


def staleness(
    newest: dt.datetime | dt.date | None, now: dt.datetime, allowance: dt.timedelta | None
) -> str | None:
    """Why the data is stale (its newest cursor value older than allowed), or None."""
    if allowance is None:
        return None
    if newest is None:
        return "stale: the source has no rows with a cursor value"
    if not isinstance(newest, dt.datetime):
        newest = dt.datetime.combine(newest, dt.time(23, 59, 59))
    elif newest.tzinfo is not None:  # a timestamptz cursor: its Shanghai wall-clock time
        newest = newest.astimezone(SHANGHAI).replace(tzinfo=None)
    age = now - newest
    if age <= allowance:
        return None
    return (
        f"stale: newest row {newest:%Y-%m-%d %H:%M:%S} is {_age(age)} old "
        f"(allowed {_age(allowance)})"
    )


def _age(d: dt.timedelta) -> str:
    hours = d.total_seconds() / 3600
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} h"
