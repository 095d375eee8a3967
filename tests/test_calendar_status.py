"""Next year's calendar: from 1 November, while the calendar lacks the coming year, the tick
warns the platform once every working day; ``exchange calendar status`` shows which years are
exact; loading the year's schedule recomputes every provisional deadline across the year
boundary (a review clock and a resource notice)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from exchange.kernel.errors import BadInput, Forbidden
from exchange.kernel.workdays import ENV
from exchange.store.models import AuditEvent
from exchange.workflow import notices
from exchange.workflow import service as svc
from exchange.workflow.housekeeping import tick
from exchange.workflow.models import Notification, SlaClock
from exchange.workflow.notices_models import ResourceNotice
from exchange.workflow.users import Principal
from exchange.workspace import Workspace
from tests import workflow_city
from tests.workflow_setup import form, sh

city = workflow_city.city  # the fixture (SQLite and PostgreSQL stores)
cli = workflow_city.cli
# A schedule for 2027 (the State Council's is not out yet): New Year's Day off through Monday.
SCHEDULE_2027 = "2027:\n  holidays: [2027-01-01..2027-01-04]\n  workdays: []\n"


@pytest.fixture
def calendar_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """$EXCHANGE_CALENDAR named, no year in it yet: the platform's calendar file."""
    path = tmp_path / "calendar.yaml"
    path.write_text("# the platform's calendar: no year added yet\n", encoding="utf-8")
    monkeypatch.setenv(ENV, str(path))
    yield path


def warnings(ws: Workspace) -> list[tuple[str, dict[str, object]]]:
    with ws.store.session() as s:
        rows = s.scalars(
            sa.select(Notification)
            .where(Notification.kind == "calendar.year_missing")
            .order_by(Notification.id)
        )
        return [(n.recipient, n.payload) for n in rows]


def years(shown: str) -> dict[str, tuple[str, str]]:
    """The rows of ``exchange calendar status``: years -> (schedule, from)."""
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in shown.splitlines()]
    return {c[0]: (c[1], c[2]) for c in cells if len(c) == 3 and c[0][:1].isdigit()}


def test_from_1_november_the_tick_warns_the_platform_every_working_day_while_next_year_is_missing(
    city: tuple[Workspace, dict[str, Principal]], calendar_file: Path
) -> None:
    ws, _ = city
    assert tick(ws, sh("2026-10-30T10:00")).calendar_warnings == 0  # before 1 November

    first = tick(ws, sh("2026-11-02T10:00"))  # Monday
    again = tick(ws, sh("2026-11-02T16:00"))
    weekend = tick(ws, sh("2026-11-08T10:00"))  # Sunday
    monday = tick(ws, sh("2026-11-09T10:00"))

    assert (first.calendar_warnings, again.calendar_warnings) == (1, 0)
    assert "warned the platform: the calendar lacks next year's official schedule" in str(first)
    assert (weekend.calendar_warnings, monday.calendar_warnings) == (0, 1)
    [(to, body), _] = warnings(ws)
    assert to == "platform" and body["missing"] == [2027]
    assert "deadlines after 31 December are provisional until the State Council's schedule " \
           "is loaded" in str(body["message"])  # fmt: skip

    calendar_file.write_text(SCHEDULE_2027, encoding="utf-8")
    assert tick(ws, sh("2026-11-10T10:00")).calendar_warnings == 0  # loaded: no more


def test_calendar_status_shows_which_years_are_exact_and_which_provisional(
    city: tuple[Workspace, dict[str, Principal]], calendar_file: Path
) -> None:
    ws, _ = city
    before = cli(ws, "calendar", "status").output

    calendar_file.write_text(SCHEDULE_2027, encoding="utf-8")
    after = cli(ws, "calendar", "status").output

    assert years(before) == {
        "2004–2026": ("exact", "chinese-calendar"),
        "2027": ("provisional", "weekends and 1 Jan, 1 May, 1–3 Oct only"),
    }
    assert "warning: the calendar lacks the official schedule of 2027" in before
    assert years(after)["2027"] == ("exact", f"calendar file {calendar_file}")
    assert "warning" not in after


def test_loading_next_years_schedule_recomputes_every_provisional_deadline_across_the_year_end(
    city: tuple[Workspace, dict[str, Principal]], calendar_file: Path, tmp_path: Path
) -> None:
    ws, people = city
    noticed = sh("2026-12-28T10:00")  # Dec 29, 30, 31, then 2027 provisionally Jan 4, 5
    sub = svc.apply(ws, people["tax"], form(), now=noticed)
    notice = notices.announce(
        ws, people["market"], "change", "COND", dt.date(2027, 1, 5), "口径调整",
        description="name 改为 varchar(200)", now=noticed,
    )  # fmt: skip
    assert {d.kind: d.due for d in sub.deadlines}["review"] == (
        "2027-01-05T23:59:59+08:00 (provisional)"
    )
    assert (notice.earliest_on, notice.earliest_provisional) == (dt.date(2027, 1, 5), True)
    schedule = tmp_path / "guowuyuan-2027.yaml"
    schedule.write_text(SCHEDULE_2027, encoding="utf-8")

    refused = cli(ws, "calendar", "load", str(schedule), "--as", "tax")
    loaded = cli(ws, "calendar", "load", str(schedule))

    assert isinstance(refused.exception, Forbidden)
    assert "only a platform admin may" in str(refused.exception)
    assert loaded.exit_code == 0, loaded.output
    assert "schedule of 2027 loaded; 2 deadline(s) recomputed" in loaded.output
    with ws.store.session() as s:
        clock = s.scalars(sa.select(SlaClock).where(SlaClock.kind == "review")).one()
        row = s.get_one(ResourceNotice, notice.id)
        postponed = s.scalars(
            sa.select(AuditEvent.payload).where(AuditEvent.kind == "resource.notice_postponed")
        ).all()
    assert (clock.due_at, clock.provisional) == (sh("2027-01-06T23:59:59"), False)
    assert (row.earliest_on, row.earliest_provisional, row.effective_on) == (
        dt.date(2027, 1, 6), False, dt.date(2027, 1, 6),
    )  # fmt: skip
    assert [(p["from"], p["to"]) for p in postponed] == [("2027-01-05", "2027-01-06")]
    assert years(cli(ws, "calendar", "status").output)["2027"][0] == "exact"
    assert tick(ws, sh("2026-12-29T10:00")).deadlines_recomputed == 0  # nothing left to redo


def test_loading_needs_the_calendar_file_named(
    city: tuple[Workspace, dict[str, Principal]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws, _ = city
    monkeypatch.delenv(ENV, raising=False)
    schedule = tmp_path / "guowuyuan-2027.yaml"
    schedule.write_text(SCHEDULE_2027, encoding="utf-8")

    refused = cli(ws, "calendar", "load", str(schedule))

    assert isinstance(refused.exception, BadInput)
    assert "$EXCHANGE_CALENDAR is not set" in str(refused.exception)
