"""SLA clocks: the deadlines of DESIGN.md ("Deadlines") started and stopped by transitions.

| clock | party | length | on timeout |
| --- | --- | --- | --- |
| review | provider | 5 working days from the request | platform policy: approve or reject |
| delivery | platform | 3 working days from the request (unconditional) or approval | breach |
| sign_off | requester | 1 natural day | auto-complete |
| evaluation | requester | 1 natural day | auto-complete |
| effectiveness | requester | 90 natural days from closing | breach, department suspended |

Times are naive UTC in the store and shown in Asia/Shanghai.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.orm import Session

from exchange import audit
from exchange.kernel.clock import day_end, in_shanghai
from exchange.kernel.workdays import Deadline, WorkCalendar, default_calendar
from exchange.workflow import notifications
from exchange.workflow.models import SlaClock

REVIEW_WORKING_DAYS = 5  # 001, 003 §14
DELIVERY_WORKING_DAYS = 3  # 001
SIGN_OFF_PERIOD = dt.timedelta(days=1)  # 000: 1 natural day
EVALUATION_PERIOD = dt.timedelta(days=1)
EFFECTIVENESS_PERIOD = dt.timedelta(days=90)  # 000
REMINDER_INTERVAL = {  # 000: reminders to a pending reviewer, by urgency
    "normal": dt.timedelta(hours=24),
    "urgent": dt.timedelta(hours=12),
    "critical": dt.timedelta(hours=6),
}
URGENCIES = tuple(REMINDER_INTERVAL)


local = in_shanghai  # a stored (naive UTC) time in Asia/Shanghai


def local_day(t: dt.datetime) -> dt.date:
    """The Asia/Shanghai calendar day of a stored time."""
    return local(t).date()


def end_of_local_day(day: dt.date) -> dt.datetime:
    """23:59:59 Asia/Shanghai of ``day`` as a stored (naive UTC) time."""
    return Deadline(day_end(day)).utc


def show(t: dt.datetime | None, provisional: bool = False) -> str:
    """A stored time as users see it: ISO 8601 in Asia/Shanghai, marked when provisional."""
    if t is None:
        return ""
    if t.tzinfo is None:
        return _shown_naive(t, provisional)
    return local(t).replace(microsecond=0).isoformat() + (" (provisional)" if provisional else "")


# A page of subscriptions shows the same few hundred stored times on every read; converting
# each to Asia/Shanghai again was a tenth of its cost. Naive times only: an aware one is
# converted each time (its key would also need its zone).
@functools.lru_cache(maxsize=8192)
def _shown_naive(t: dt.datetime, provisional: bool) -> str:
    return local(t).replace(microsecond=0).isoformat() + (" (provisional)" if provisional else "")


def start_clock(
    s: Session,
    subscription_id: int,
    kind: str,
    party_kind: str,
    party: str,
    start: dt.datetime,
    *,
    working_days: int | None = None,
    period: dt.timedelta | None = None,
    calendar: WorkCalendar | None = None,
) -> SlaClock:
    """Start a clock (once per subscription and kind: starting it again returns the first)."""
    existing = get_clock(s, subscription_id, kind)
    if existing is not None:
        return existing
    if working_days is not None:
        deadline = (calendar or default_calendar()).add_working_days(start, working_days)
        due, provisional = deadline.utc, deadline.provisional
    else:
        assert period is not None
        due, provisional = start + period, False
    clock = SlaClock(
        subscription_id=subscription_id,
        kind=kind,
        party_kind=party_kind,
        party=party,
        started_at=start,
        due_at=due,
        working_days=working_days,
        provisional=provisional,
        reminders_sent=0,
    )
    s.add(clock)
    s.flush()
    return clock


def get_clock(s: Session, subscription_id: int, kind: str) -> SlaClock | None:
    return s.execute(
        sa.select(SlaClock).where(
            SlaClock.subscription_id == subscription_id, SlaClock.kind == kind
        )
    ).scalar()


def stop_clock(
    s: Session, subscription_id: int, kind: str, at: dt.datetime, *, cancelled: bool = False
) -> SlaClock | None:
    """Stop a running clock: met on time, late, or cancelled (the step is no longer due)."""
    clock = get_clock(s, subscription_id, kind)
    if clock is None or clock.stopped_at is not None:
        return clock
    clock.stopped_at = at
    if cancelled:
        clock.outcome = "cancelled"
    elif at > clock.due_at:
        clock.outcome = "late"
        record_breach(s, clock)
    else:
        clock.outcome = "met"
    return clock


def record_breach(s: Session, clock: SlaClock) -> bool:
    """Record once that ``clock`` passed its deadline: audit event and a notification."""
    if clock.breached_at is not None:
        return False
    clock.breached_at = clock.due_at
    audit.append(
        s,
        "sla.breached",
        f"subscription:{clock.subscription_id}",
        {"deadline": clock.kind, "party": f"{clock.party_kind} {clock.party}",
         "due": clock.due_at, "provisional": clock.provisional},
        actor="housekeeping",
    )  # fmt: skip
    notifications.notify(
        s,
        "sla.breached",
        f"{clock.party_kind}:{clock.party}",
        {"deadline": clock.kind, "due": show(clock.due_at, clock.provisional)},
        key=f"sla.breached:{clock.subscription_id}:{clock.kind}",
        subscription_id=clock.subscription_id,
    )
    return True


def open_clocks(s: Session, subscription_id: int) -> list[SlaClock]:
    return list(
        s.execute(
            sa.select(SlaClock).where(
                SlaClock.subscription_id == subscription_id, SlaClock.stopped_at.is_(None)
            )
        ).scalars()
    )


class ClockColumns(Protocol):
    """What a view reads of a clock: an ``SlaClock`` or the plain row a page reads."""

    @property
    def subscription_id(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def party_kind(self) -> str: ...
    @property
    def party(self) -> str: ...
    @property
    def started_at(self) -> dt.datetime: ...
    @property
    def due_at(self) -> dt.datetime: ...
    @property
    def provisional(self) -> bool: ...
    @property
    def stopped_at(self) -> dt.datetime | None: ...
    @property
    def outcome(self) -> str | None: ...


@dataclass(frozen=True)
class ClockView:
    """A clock as the CLI and the API show it."""

    subscription_id: int
    kind: str
    party_kind: str
    party: str
    started_at: str
    due_at: str
    provisional: bool
    status: str  # running | overdue | met | late | auto | cancelled
    late_hours: float | None

    @classmethod
    def of(cls, clock: ClockColumns, now: dt.datetime) -> ClockView:
        if clock.stopped_at is None:
            status = "overdue" if now > clock.due_at else "running"
        else:
            status = clock.outcome or "met"
        end = clock.stopped_at or now
        late = (end - clock.due_at).total_seconds() / 3600 if end > clock.due_at else None
        if status in ("cancelled", "auto"):
            late = None
        return cls(
            clock.subscription_id,
            clock.kind,
            clock.party_kind,
            clock.party,
            show(clock.started_at),
            show(clock.due_at, clock.provisional),
            clock.provisional,
            status,
            round(late, 2) if late is not None else None,
        )


def refresh_provisional(s: Session, calendar: WorkCalendar | None = None) -> int:
    """Recompute provisional working-day deadlines: a calendar file may now know their year."""
    cal = calendar or default_calendar()
    changed = 0
    for clock in s.execute(
        sa.select(SlaClock).where(SlaClock.provisional.is_(True), SlaClock.stopped_at.is_(None))
    ).scalars():
        assert clock.working_days is not None
        deadline = cal.add_working_days(clock.started_at, clock.working_days)
        if (deadline.utc, deadline.provisional) != (clock.due_at, clock.provisional):
            clock.due_at, clock.provisional = deadline.utc, deadline.provisional
            changed += 1
    return changed
