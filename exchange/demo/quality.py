"""The demo's quality story: a provider with a few bad codes, a quarantine and a ticket, an
error report from a requester, the provider's fixes at the source, and the fixes reaching
every subscriber on the next run.

The registry generator stays clean (every code valid); the demo damages a deterministic
handful of rows in the provider's database after creating it (about 0.2 %, well under the 5 %
that would hold the run back), and repairs them before the incremental run.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

from exchange.demo.registry import COLUMNS, enterprise_row
from exchange.quality.error_reports import answer_report, file_report, show_report
from exchange.quality.quarantine import list_quarantine
from exchange.quality.tickets import answer_ticket, list_tickets
from exchange.workspace import Workspace

# (modulus, remainder, SQL that breaks the row): which rows break, and how.
DAMAGE = [
    # A wrong check character in the unified social credit code.
    (
        1000,
        500,
        "uscc = substr(uscc, 1, 17) || CASE substr(uscc, 18, 1) WHEN '0' THEN '1' ELSE '0' END",
    ),  # fmt: skip
    # A phone number too short to be one.
    (1500, 321, "phone = substr(phone, 1, 5)"),
    # A resident ID number born in month 13.
    (2000, 777, "id_card = substr(id_card, 1, 10) || '13' || substr(id_card, 13)"),
]
REPORTED_KEYS = ["2", "3"]  # rows the social-security bureau reports as wrong


def damaged_ids(rows: int) -> list[int]:
    return sorted({i for m, r, _ in DAMAGE for i in range(r, rows + 1, m) if i >= 1})


def damage_provider(path: Path, rows: int) -> int:
    """Break the demo's handful of rows at the provider; return how many."""
    with sqlite3.connect(path) as db:
        for modulus, remainder, assignment in DAMAGE:
            db.execute(
                f"UPDATE enterprise SET {assignment} WHERE id % ? = ?",  # noqa: S608  # demo SQL
                (modulus, remainder),
            )
    return len(damaged_ids(rows))


def repair_provider(path: Path, rows: int, when: dt.datetime) -> int:
    """The provider fixes the damaged rows and the reported ones at the source (which moves
    their cursor); return how many rows it touched."""
    stamp = when.isoformat(sep=" ")
    fixed = damaged_ids(rows)
    cols = [COLUMNS.index(c) for c in ("uscc", "phone", "id_card")]
    with sqlite3.connect(path) as db:
        for i in fixed:
            good = enterprise_row(i)
            db.execute(
                "UPDATE enterprise SET uscc = ?, phone = ?, id_card = ?, updated_at = ? "
                "WHERE id = ?",
                (*(good[c] for c in cols), stamp, i),
            )
        for key in REPORTED_KEYS:
            db.execute(
                "UPDATE enterprise SET phone = ?, updated_at = ? WHERE id = ?",
                (f"1390375{int(key):04d}", stamp, int(key)),
            )
    return len(fixed) + len(REPORTED_KEYS)


def report_error(ws: Workspace, resource: str, subscription_id: int) -> int:
    """The requester reports two rows' phone numbers as out of service."""
    report = file_report(
        ws,
        resource,
        REPORTED_KEYS,
        ["phone"],
        "联系电话为空号，无法联系企业",
        subscription_id=subscription_id,
    )
    return report.id


def provider_answers(ws: Workspace, report_id: int) -> None:
    """The provider answers the error report and its open quality ticket."""
    answer_report(ws, report_id, "fixed_at_source", "已核实并更正联系电话")
    with ws.store.session() as s:
        for ticket in list_tickets(s, status="open"):
            answer_ticket(s, ticket.id, "fixed_at_source", "已更正统一社会信用代码、身份证号和电话")


def story(ws: Workspace, resource: str, report_id: int, first_quarantined: int) -> list[str]:
    """What the demo tells about quality after both runs."""
    held, _ = list_quarantine(ws, resource)
    total, _ = list_quarantine(ws, resource, include_released=True)
    view = show_report(ws, report_id)
    with ws.store.session() as s:
        tickets = list_tickets(s, resource)
    lines = [
        f"Quality: the full run quarantined {first_quarantined:,} rows (bad check characters, "
        f"phone and ID numbers); ticket {tickets[-1].id} went to the provider"
        if tickets
        else "Quality: no bad rows",
        f"The provider fixed them at the source: the incremental run delivered "
        f"{total - held:,} of them; {held:,} still held (exchange quality quarantine {resource})",
        f"Error report {report_id} ({', '.join(view.report.row_keys)}: phone): the fix reached "
        f"{len(view.reached)} of {len(view.subscribers)} subscribers "
        f"(exchange quality error-report show {report_id})",
    ]
    return lines
