"""``exchange demo``: a whole exchange on embedded defaults, no server needed.

A SQLite provider front-end DB with an enterprise registry, two requester DBs with different
field grants, a full run, then 1 % of the source changed and new rows added, an incremental run,
and a check that each requester holds exactly its projection of the source.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from importlib import resources
from pathlib import Path

from exchange.demo import quality as demo_quality
from exchange.demo.folder import FolderDemo, run_folder_demo
from exchange.demo.registry import COLUMNS, enterprise_rows
from exchange.flow import Reporter, run_resource
from exchange.kernel.clock import local_now, today
from exchange.kernel.settings import Settings
from exchange.runs.record import RunSummary
from exchange.store.models import Subscription
from exchange.workflow.grants import add_subscription
from exchange.workspace import Workspace

RESOURCE = "410400-SCJG-0001"
GRANTS = {
    # 税务局: identity and capital, for tax registration matching.
    "tax_fe": ["id", "uscc", "name", "reg_capital", "status", "updated_at"],
    # 人社局: who and where, for social insurance enrolment.
    "hrss_fe": [
        "id",
        "uscc",
        "name",
        "legal_person",
        "address",
        "phone",
        "region_code",
        "established",
        "is_active",
    ],
}

_INSERT = "INSERT INTO enterprise VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
SQLITE_DDL = """CREATE TABLE enterprise (
  id INTEGER PRIMARY KEY, uscc TEXT NOT NULL, name TEXT NOT NULL, legal_person TEXT,
  id_card TEXT, reg_capital TEXT, established TEXT, updated_at TEXT NOT NULL, status INTEGER,
  region_code TEXT, address TEXT, phone TEXT, industry TEXT, scope TEXT, is_active INTEGER,
  remark TEXT)"""


def sqlite_value(v: object) -> object:
    """A registry value as the SQLite front-end DBs store it (ISO text, exact decimals, 0/1)."""
    if isinstance(v, dt.datetime):
        return v.isoformat(sep=" ")
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, Decimal):
        return f"{v:.2f}"
    return str(v) if v is not None and not isinstance(v, int | str) else v


def create_provider(path: Path, rows: int) -> None:
    """The provider's front-end DB with ``rows`` registry rows."""
    path.unlink(missing_ok=True)
    with sqlite3.connect(path) as db:
        db.execute(SQLITE_DDL)
        db.execute("CREATE INDEX ix_enterprise_updated_at ON enterprise (updated_at)")
        db.executemany(
            _INSERT,
            ([sqlite_value(v) for v in row] for row in enterprise_rows(1, rows + 1)),
        )


def change_provider(path: Path, rows: int, when: dt.datetime) -> tuple[int, int]:
    """Update 1 % of the rows (status and updated_at) and add 0.5 % new ones."""
    changed = max(1, rows // 100)
    added = max(1, rows // 200)
    stamp = when.isoformat(sep=" ")
    with sqlite3.connect(path) as db:
        db.execute(
            "UPDATE enterprise SET status = 5 - status, updated_at = ? WHERE id % 100 = 7",
            (stamp,),
        )
        new_rows = []
        for row in enterprise_rows(rows + 1, rows + 1 + added):
            values = [sqlite_value(v) for v in row]
            values[COLUMNS.index("updated_at")] = stamp  # many rows on one timestamp: ties
            new_rows.append(values)
        db.executemany(_INSERT, new_rows)
    return changed, added


def projection_digest(path: Path, table: str, fields: list[str]) -> tuple[int, str]:
    """Row count and a digest of every value of ``fields``, in key order (for the check)."""
    h = hashlib.sha256()
    n = 0
    with sqlite3.connect(path) as db:
        cols = ", ".join(f'"{f}"' for f in fields)  # demo-owned names, not user input
        for row in db.execute(f"SELECT {cols} FROM {table} ORDER BY id"):  # noqa: S608  # noqa: S608
            h.update(repr(tuple(_normal(v) for v in row)).encode())
            n += 1
    return n, h.hexdigest()


def _normal(v: object) -> object:
    # Source and target store the same instants and amounts in slightly different text forms.
    if isinstance(v, str) and len(v) >= 19 and v[4] == "-" and v[10] in " T":
        return dt.datetime.fromisoformat(v).isoformat()
    if isinstance(v, float):
        return round(v, 2)
    return v


@dataclass
class DemoResult:
    home: Path
    runs: list[tuple[str, RunSummary, float]]
    verified: dict[str, bool]
    notes: list[str] = field(default_factory=list)
    folder: FolderDemo | None = None


def _add(ws: Workspace, node: str, fields: list[str], until: dt.date) -> Subscription:
    """The platform's subscription of a requester's own node, for the node's department."""
    return add_subscription(
        ws, RESOURCE, node, fields, until, target_table="enterprise",
        department=ws.catalog.node(node).department,
    )  # fmt: skip


def run_demo(
    home: Path,
    rows: int = 100_000,
    reporter: Reporter | None = None,
    say: Callable[[str], None] = print,
) -> DemoResult:
    """Build the demo's databases under ``home`` (replacing any earlier demo) and run it."""
    import time

    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    catalog = home / "catalog.yaml"
    catalog.write_text(
        resources.files("schemas").joinpath("examples/demo.yaml").read_text(encoding="utf-8"),
        encoding="utf-8",
    )
    say(f"Creating the provider front-end DB with {rows:,} enterprise rows in {home}")
    create_provider(home / "provider.db", rows)
    damaged = demo_quality.damage_provider(home / "provider.db", rows)
    say(f"Damaged {damaged:,} codes at the provider (bad check characters, phones, ID numbers)")

    ws = Workspace.open(catalog, Settings(home=home, db_url=f"sqlite:///{home / 'exchange.db'}"))
    try:
        until = today() + dt.timedelta(days=365)
        subs = {node: _add(ws, node, fields, until) for node, fields in GRANTS.items()}
        runs = []
        t0 = time.perf_counter()
        runs.append(
            ("full", run_resource(ws, RESOURCE, reporter=reporter), time.perf_counter() - t0)
        )
        report_id = demo_quality.report_error(ws, RESOURCE, subs["hrss_fe"].id)
        now = local_now().replace(microsecond=0)  # the provider writes Shanghai wall time
        changed, added = change_provider(home / "provider.db", rows, now)
        fixed = demo_quality.repair_provider(home / "provider.db", rows, now)
        demo_quality.provider_answers(ws, report_id)
        say(f"Changed {changed:,} rows, added {added:,} and fixed {fixed:,} at the provider")
        t0 = time.perf_counter()
        runs.append(
            ("incremental", run_resource(ws, RESOURCE, reporter=reporter), time.perf_counter() - t0)
        )
        verified = {}
        for node, fields in GRANTS.items():
            want = projection_digest(home / "provider.db", "enterprise", fields)
            got = projection_digest(home / f"{node.removesuffix('_fe')}.db", "enterprise", fields)
            verified[node] = want == got
        notes = demo_quality.story(ws, RESOURCE, report_id, runs[0][1].quarantined)
        folder = run_folder_demo(ws, home, until, say)
        return DemoResult(home, runs, verified, notes, folder)
    finally:
        ws.close()
