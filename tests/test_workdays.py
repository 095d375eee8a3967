"""Deadlines on the Chinese statutory calendar: holidays, make-up workdays, unknown years.

"Within N working days" of an event: the event's own day does not count; the deadline is
23:59:59 Asia/Shanghai of the Nth working day after it.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

from exchange.kernel import workdays
from exchange.kernel.clock import SHANGHAI
from exchange.kernel.errors import BadInput
from exchange.kernel.workdays import WorkCalendar


def sh(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)


LIBRARY = WorkCalendar()

# (event in Asia/Shanghai, working days, deadline day, why)
CASES_2026 = [
    # National Day 2026: Oct 1-7 off; Sat Oct 10 is a make-up workday (DESIGN.md's example).
    ("2026-09-30T10:00", 3, "2026-10-10", "Oct 8, Oct 9 and the make-up Saturday Oct 10"),
    ("2026-09-30T23:59", 1, "2026-10-08", "the holiday week is skipped"),
    ("2026-10-01T09:00", 5, "2026-10-13", "made during the holiday: Oct 8, 9, 10, 12, 13"),
    ("2026-09-28T09:00", 5, "2026-10-10", "Sep 29, 30, Oct 8, 9 and the make-up Oct 10"),
    # Spring Festival 2026: Feb 15-23 off; Sat Feb 14 and Sat Feb 28 are make-up workdays.
    ("2026-02-13T16:00", 1, "2026-02-14", "the make-up Saturday before the holiday counts"),
    ("2026-02-13T16:00", 2, "2026-02-24", "then nothing until the holiday ends"),
    ("2026-02-12T10:00", 5, "2026-02-26", "Feb 13, 14, 24, 25, 26"),
    ("2026-02-26T10:00", 2, "2026-02-28", "Feb 27 and the make-up Saturday Feb 28"),
    # New Year 2026: Jan 1-3 off, Sun Jan 4 is a make-up workday.
    ("2025-12-31T18:00", 1, "2026-01-04", "the make-up Sunday"),
    # An ordinary week: Friday + 1 is Monday; the event's own day never counts.
    ("2026-03-06T08:00", 1, "2026-03-09", "weekend skipped"),
    ("2026-03-02T00:00", 5, "2026-03-09", "Tue..Fri, Mon"),
]


@pytest.mark.parametrize(("event", "n", "due", "why"), CASES_2026, ids=[c[3] for c in CASES_2026])
def test_deadlines_across_the_2026_holidays(event: str, n: int, due: str, why: str) -> None:
    deadline = LIBRARY.add_working_days(sh(event), n)

    assert deadline.at == dt.datetime.combine(
        dt.date.fromisoformat(due), dt.time(23, 59, 59), SHANGHAI
    ), why
    assert deadline.provisional is False


def test_naive_times_are_utc_as_in_the_store() -> None:
    # 2026-09-30 18:00 UTC is already Oct 1 02:00 in Shanghai: the holiday, not Sep 30.
    deadline = LIBRARY.add_working_days(dt.datetime(2026, 9, 30, 18, 0), 1)
    assert deadline.isoformat() == "2026-10-08T23:59:59+08:00"


def test_the_deadline_is_end_of_day_in_shanghai_and_its_utc_form_is_naive() -> None:
    deadline = LIBRARY.add_working_days(sh("2026-09-30T10:00"), 3)
    assert deadline.isoformat() == "2026-10-10T23:59:59+08:00"
    assert deadline.utc == dt.datetime(2026, 10, 10, 15, 59, 59)


CALENDAR_2027 = """\
2027:
  holidays: [2027-01-01, 2027-02-06..2027-02-13]
  workdays: [2027-02-14, 2027-02-20]
"""


def test_a_2027_deadline_is_provisional_until_the_calendar_file_adds_2027(tmp_path: Path) -> None:
    event = sh("2027-02-05T10:00")  # a Friday before the (file's) Spring Festival 2027
    provisional = LIBRARY.add_working_days(event, 3)
    # the library lacks 2027: weekends and fixed-date holidays only -> Mon-Wed Feb 8-10
    assert provisional.provisional is True
    assert provisional.at.date() == dt.date(2027, 2, 10)
    assert str(provisional) == "2027-02-10T23:59:59+08:00 (provisional)"

    path = tmp_path / "calendar.yaml"
    path.write_text(CALENDAR_2027, encoding="utf-8")
    exact = WorkCalendar.from_file(path).add_working_days(event, 3)
    # with the official schedule: Sun Feb 14 (make-up), Mon Feb 15, Tue Feb 16
    assert exact.provisional is False
    assert exact.at.date() == dt.date(2027, 2, 16)
    assert str(exact) == "2027-02-16T23:59:59+08:00"


def test_a_deadline_that_reaches_into_an_unknown_year_is_provisional() -> None:
    deadline = LIBRARY.add_working_days(sh("2026-12-30T10:00"), 3)
    assert deadline.provisional is True
    assert deadline.at.date() == dt.date(2027, 1, 5)  # Dec 31, (Jan 1 fixed holiday), Jan 4, 5


def test_a_far_year_never_crashes() -> None:
    deadline = LIBRARY.add_working_days(sh("2031-09-30T10:00"), 3)
    assert deadline.provisional is True
    assert deadline.at.date() == dt.date(2031, 10, 8)  # Oct 1-3 fixed, weekend, Oct 6, 7, 8


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2027:\n  holidays: [2027-02-30]\n", "day is out of range"),
        ("2027:\n  holidays: ['2027-02-30']\n", "2027-02-30"),
        ("2027:\n  holidays: [2026-12-31]\n", "is not in 2027"),
        ("next year:\n  holidays: []\n", "is not a year"),
        ("- 2027-01-01\n", "expected years as keys"),
    ],
)
def test_a_bad_calendar_file_is_bad_input_naming_the_problem(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "calendar.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(BadInput, match=message):
        WorkCalendar.from_file(path)


def test_the_default_calendar_sees_a_year_added_to_its_file_without_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "calendar.yaml"
    path.write_text("2028:\n  holidays: []\n", encoding="utf-8")
    monkeypatch.setenv(workdays.ENV, str(path))
    event = sh("2027-02-05T10:00")
    assert workdays.add_working_days(event, 3).provisional is True

    path.write_text(CALENDAR_2027, encoding="utf-8")
    os.utime(path, ns=(1, 2_000_000_000_000_000_000))  # a new mtime, even on coarse clocks

    assert workdays.add_working_days(event, 3) == workdays.Deadline(
        dt.datetime(2027, 2, 16, 23, 59, 59, tzinfo=SHANGHAI), False
    )


def test_cli_calendar_deadline_prints_the_design_example(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != workdays.ENV}
    out = subprocess.run(
        [sys.executable, "-m", "exchange", "calendar", "deadline",
         "--from", "2026-09-30T10:00", "--working-days", "3"],
        capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "2026-10-10T23:59:59+08:00"

    out = subprocess.run(
        [sys.executable, "-m", "exchange", "calendar", "deadline",
         "--from", "2026-12-30T10:00", "--working-days", "3"],
        capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert out.stdout.strip() == "2027-01-05T23:59:59+08:00 (provisional)"
