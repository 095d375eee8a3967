"""Departments as data: the ``departments`` table, loaded from the catalog's ``departments``
(a code's first use, or ``exchange department sync``) and managed by the CLI and the API; who
may act for which department; and the report of department values in the store that are no
department code (users, subscriptions and API calls of an installation from before
departments were codes), mapped only by an operator's explicit ``map``: nothing is guessed.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from exchange import audit
from exchange.accounts.models import DepartmentRow
from exchange.catalog.model import DEPARTMENT_LEVELS, UNIT_LEVELS, Catalog, Department
from exchange.kernel.clock import utcnow
from exchange.kernel.errors import BadInput, NotFound
from exchange.store.models import Subscription
from exchange.workflow.acting import Acting, as_acting, decide
from exchange.workflow.models import User
from exchange.workflow.users import Principal


@dataclass(frozen=True)
class DepartmentView:
    """A department as the CLI and the API show it."""

    code: str
    name: str
    level: str
    supervisor: str | None
    source: str

    @classmethod
    def of(cls, row: DepartmentRow) -> DepartmentView:
        return cls(row.code, row.name, row.level, row.supervisor, row.source)


def _row(d: Department, source: str) -> DepartmentRow:
    now = utcnow()
    return DepartmentRow(
        code=d.code, name=d.name, level=d.level, supervisor=d.supervisor, source=source,
        created_at=now, updated_at=now,
    )  # fmt: skip


def lookup(
    s: Session, catalog: Catalog, code: str, where: str = "department_code"
) -> DepartmentRow:
    """The department ``code``: its row, loaded from the catalog at its first use; an unknown
    code is refused, naming ``where`` it was given."""
    row = s.get(DepartmentRow, code)
    if row is not None:
        return row
    declared = catalog.department_info.get(code)
    if declared is None:
        known = sorted(set(catalog.department_info) | set(s.scalars(sa.select(DepartmentRow.code))))
        raise NotFound(
            f"{where}: no department {code!r} (departments: {', '.join(known) or 'none'})"
        )
    row = _row(declared, "catalog")
    s.add(row)
    s.flush()
    return row


def sync(s: Session, catalog: Catalog, actor: str) -> list[str]:
    """Load the catalog's departments into the table (added or changed ones); the codes
    that changed, each audited."""
    changed: list[str] = []
    for code, d in sorted(catalog.department_info.items()):
        row = s.get(DepartmentRow, code)
        if row is None:
            s.add(_row(d, "catalog"))
            kind = "department.added"
        elif (row.name, row.level, row.supervisor) != (d.name, d.level, d.supervisor):
            row.name, row.level, row.supervisor = d.name, d.level, d.supervisor
            row.updated_at = utcnow()
            kind = "department.changed"
        else:
            continue
        audit.append(
            s, kind, f"department:{code}",
            {"name": d.name, "level": d.level, "supervisor": d.supervisor, "source": "catalog"},
            actor,
        )  # fmt: skip
        changed.append(code)
    s.flush()
    return changed


def add(
    s: Session,
    catalog: Catalog,
    code: str,
    name: str,
    level: str,
    supervisor: str | None,
    actor: str,
) -> DepartmentRow:
    """Add (or change) a department in the store: a level of the list, a unit with its
    supervisor, a supervisor that is a known department other than itself."""
    if level not in DEPARTMENT_LEVELS:
        raise BadInput(f"level {level!r} is not one of {', '.join(DEPARTMENT_LEVELS)}")
    if not code.strip() or not name.strip():
        raise BadInput("a department has a code and a name")
    if level in UNIT_LEVELS and not supervisor:
        raise BadInput(f"a {level} names its supervisor: give --supervisor CODE")
    if supervisor == code:
        raise BadInput(f"department {code!r} cannot supervise itself")
    if supervisor is not None:
        boss: DepartmentRow | None = lookup(s, catalog, supervisor, "supervisor")
        seen = {code}
        while boss is not None and boss.supervisor is not None:
            if boss.supervisor in seen:
                raise BadInput(f"department {code!r}: its supervisors would form a cycle")
            seen.add(boss.code)
            boss = s.get(DepartmentRow, boss.supervisor)
    row = s.get(DepartmentRow, code)
    kind = "department.changed" if row is not None else "department.added"
    if row is None:
        row = _row(Department(code, name, level, supervisor), "store")
        s.add(row)
    else:
        row.name, row.level, row.supervisor, row.updated_at = name, level, supervisor, utcnow()
    audit.append(
        s, kind, f"department:{code}",
        {"name": name, "level": level, "supervisor": supervisor, "source": "store"}, actor,
    )  # fmt: skip
    s.flush()
    return row


def listing(s: Session, catalog: Catalog) -> list[DepartmentView]:
    """Every department: the store's, and the catalog's not loaded yet, in code order."""
    rows = {r.code: DepartmentView.of(r) for r in s.scalars(sa.select(DepartmentRow))}
    for code, d in catalog.department_info.items():
        rows.setdefault(code, DepartmentView(code, d.name, d.level, d.supervisor, "catalog"))
    return [rows[c] for c in sorted(rows)]


# -- acting for a department ------------------------------------------------------------------


def acting_for(
    s: Session, catalog: Catalog, who: Principal, code: str | None, *, allowed: bool
) -> Acting:
    """The department ``who`` acts for: its own (``code`` left out or the same), any for an
    admin, or a unit it supervises when ``allowed`` (the platform's setting): the rule of
    ``exchange.workflow.acting``, given the named department's row."""
    if who.role != "admin" and (code is None or code == (who.acting_from or who.department)):
        if who.department:
            lookup(s, catalog, who.acting_from or who.department, "the user's department")
        return decide(who, code, None, allowed=allowed)
    unit = lookup(s, catalog, code) if code is not None else None
    return decide(who, code, unit.supervisor if unit else None, allowed=allowed)


def principal_for(
    s: Session,
    catalog: Catalog,
    who: Principal,
    code: str | None,
    *,
    allowed: bool,
    units_only: bool = False,
) -> Principal:
    """``who`` as the workflow sees it acting for department ``code`` (its own when left out):
    a supervisor's user for its unit where ``allowed``, refused by name otherwise.
    ``units_only``: a department that is no unit of the user's is left to the workflow's own
    refusal (an application's form names the department it is for)."""
    if code is None or who.role == "admin" or code == who.department:
        return who
    if units_only:
        row = s.get(DepartmentRow, code)
        declared = catalog.department_info.get(code)
        supervisor = row.supervisor if row is not None else declared and declared.supervisor
        if supervisor is None or supervisor != who.department:
            return who
    return as_acting(who, acting_for(s, catalog, who, code, allowed=allowed))


# -- free-text departments of older installations --------------------------------------------


@dataclass(frozen=True)
class Unmapped:
    """A department value in the store that is no department code: where (``users``,
    ``subscriptions``, ``api_usage``), how many rows, and the codes whose *name* it equals
    (none: unknown; one or more: a candidate for ``map``, never applied by itself)."""

    value: str
    table: str
    rows: int
    name_of: tuple[str, ...]

    @property
    def verdict(self) -> str:
        if not self.name_of:
            return "unknown"
        return "ambiguous" if len(self.name_of) > 1 else "name of a department"


# The gateway's usage table, by name: the gateway's models sit above this package.
_API_USAGE = sa.table("api_usage", sa.column("department_code", sa.String))
_COLUMNS: tuple[tuple[str, sa.ColumnElement[str | None]], ...] = (
    ("users", User.__table__.c.department),
    ("subscriptions", Subscription.__table__.c.department_code),
    ("api_usage", _API_USAGE.c.department_code),
)


def unmapped(s: Session, catalog: Catalog) -> list[Unmapped]:
    """Every department value in users, subscriptions and API calls that is no known code."""
    views = listing(s, catalog)
    codes = {v.code for v in views}
    by_name: dict[str, list[str]] = {}
    for v in views:
        by_name.setdefault(v.name.strip(), []).append(v.code)
    out: list[Unmapped] = []
    for table, column in _COLUMNS:
        rows = s.execute(
            sa.select(column, sa.func.count()).where(column.is_not(None)).group_by(column)
        ).all()
        for value, n in rows:
            if value is None or value in codes:
                continue
            out.append(Unmapped(value, table, n, tuple(sorted(by_name.get(value.strip(), [])))))
    return sorted(out, key=lambda u: (u.value, u.table))


def map_value(s: Session, catalog: Catalog, value: str, code: str, actor: str) -> dict[str, int]:
    """Replace the free-text department ``value`` by the code ``code`` (the operator's
    decision) wherever it stands; the rows changed per table, audited."""
    row = lookup(s, catalog, code, "CODE")
    if value == code:
        raise BadInput(f"{value!r} is the code already")
    changed = {}
    for table, column in _COLUMNS:
        values: dict[str, object] = {str(column.key): code}
        if table == "subscriptions":
            values["department_name"] = row.name
        result = s.execute(sa.update(column.table).where(column == value).values(**values))
        changed[table] = int(getattr(result, "rowcount", 0) or 0)
    audit.append(
        s, "department.mapped", f"department:{code}", {"value": value, "rows": changed}, actor
    )
    return changed
