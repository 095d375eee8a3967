"""The real tables against the catalog: before every load, and ``exchange catalog check``.

Before a load into an existing table (``exchange.tables.load``), ``refusals`` says why that
subscriber must be refused: a column narrower than declared or of another kind, a key it
cannot merge by, or (under ``target_columns: refuse``) a granted column it lacks. The
comparison itself is the connectors' (``connectors.schema_check``: it is about dialect types).

``check_resource`` does the same for every deliverable subscriber of a table resource, and
looks at the provider's table too, without moving any data: the declared columns it lacks,
types whose values do not fit the declared ones (a warning: they fail or are quarantined at
extract), and a declared key no constraint keeps unique (a warning: duplicates are possible).
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from connectors.base import TableSpec
from connectors.schema_check import MISSING, Problem, TableCheck, declared_label
from connectors.secrets import redact
from exchange.catalog.model import Resource
from exchange.kernel.errors import ExchangeError
from exchange.runs.handle import active_subscriptions
from exchange.workspace import Workspace, source_spec

REFUSED = "refused"  # a run would refuse this subscriber, or the source lacks columns
WARNING = "warning"  # possible trouble that does not stop a run
NOTE = "note"  # what a run will do (create the table, add a column)
OK = "ok"
UNREACHABLE = "unreachable"


def refusals(check: TableCheck, spec: TableSpec, resource: Resource) -> list[Problem]:
    """Why a load into this existing target must not start (empty: go ahead)."""
    if not check.exists:
        return []
    found = list(check.problems)
    if resource.target_columns == "refuse":
        by_name = {f.name: f for f in spec.fields}
        found += [
            Problem(
                c, declared_label(by_name[c]), "no such column", MISSING, "target_columns: refuse"
            )
            for c in check.missing
        ]
    return found


@dataclass(frozen=True)
class Finding:
    """One line of a check: who (source / subscription), where, what column, how bad."""

    role: str  # "source" or "subscription 3"
    node: str
    table: str
    column: str
    level: str  # refused | warning | note | ok | unreachable
    detail: str


@dataclass(frozen=True)
class CheckReport:
    resource: str
    findings: tuple[Finding, ...] = ()
    nothing_to_check: str | None = None  # why a resource has no table to compare

    @property
    def refused(self) -> bool:
        """A run would refuse some subscriber, or the source lacks declared columns."""
        return any(f.level == REFUSED for f in self.findings)

    @property
    def unreachable(self) -> bool:
        return any(f.level == UNREACHABLE for f in self.findings)


def check_resource(ws: Workspace, code: str) -> CheckReport:
    """Compare the provider's table and every deliverable subscriber's with the catalog."""
    resource = ws.catalog.resource(code)
    if resource.kind != "table":
        return CheckReport(
            code,
            nothing_to_check=f"resource {code} is a {resource.kind} resource: "
            "there is nothing to check yet (only table resources are compared)",
        )
    findings = _source(ws, resource)
    for sub in active_subscriptions(ws, code):
        spec = TableSpec(
            name=sub.target_table,
            fields=tuple(f for f in resource.fields if f.name in sub.fields),
            primary_key=resource.primary_key,
            schema=sub.target_schema,
        )
        findings += _target(ws, resource, f"subscription {sub.id}", sub.subscriber_node, spec)
    return CheckReport(code, tuple(findings))


def _source(ws: Workspace, resource: Resource) -> list[Finding]:
    spec = source_spec(resource)

    def say(column: str, level: str, detail: str) -> Finding:
        return Finding("source", resource.provider, spec.qualified, column, level, detail)

    try:
        check = _checked(ws, resource.provider, spec, source=True)
    except (ExchangeError, sa.exc.SQLAlchemyError) as exc:
        return [say("", UNREACHABLE, _first_line(exc))]
    if not check.exists:
        return [say("", REFUSED, "no such table at the provider")]
    out = [say(c, REFUSED, "declared in the catalog, missing at the source") for c in check.missing]
    out += [say(p.column, WARNING, _source_warning(p)) for p in check.problems]
    if ws.catalog.node(resource.provider).kind == "mysql":
        # No zone in a DATETIME: by the engine's convention one declared timestamptz holds UTC
        # (what its own targets write); a provider's DATETIME usually holds Shanghai time.
        out += [
            say(f.name, WARNING, "declared timestamptz: a MariaDB/MySQL DATETIME is read as UTC "
                "(the engine's convention); if it holds Shanghai time, declare it timestamp")
            for f in spec.fields
            if f.type == "timestamptz" and f.name not in check.missing
        ]  # fmt: skip
    if not check.keyed:
        key = ",".join(resource.primary_key)
        out.append(
            say(
                f"({key})",
                WARNING,
                f"no primary-key constraint or unique index on ({key}): "
                "duplicate keys are possible",
            )
        )
    return out or [say("", OK, "matches the catalog")]


def _source_warning(p: Problem) -> str:
    """A source column that does not match, and, for a time-zone kind, what a run does."""
    if p.why.startswith("a different time-zone kind"):
        if p.declared == "timestamp":  # the issue-13 case: a zoned column declared timestamp
            return (
                f"{p.detail}: runs convert its values to Asia/Shanghai wall-clock time "
                "(never UTC); declare it timestamptz to deliver the instant"
            )
        if p.declared == "timestamptz":
            return f"{p.detail}: runs read its values as Asia/Shanghai wall-clock time"
    return p.detail


def _target(
    ws: Workspace, resource: Resource, role: str, node: str, spec: TableSpec
) -> list[Finding]:
    def say(column: str, level: str, detail: str) -> Finding:
        return Finding(role, node, spec.qualified, column, level, detail)

    try:
        check = _checked(ws, node, spec, source=False)
    except (ExchangeError, sa.exc.SQLAlchemyError) as exc:
        return [say("", UNREACHABLE, _first_line(exc))]
    if not check.exists:
        return [say("", NOTE, "no table yet: the first run creates it")]
    out = [say(p.column, REFUSED, p.detail) for p in refusals(check, spec, resource)]
    if resource.target_columns == "add":
        out += [say(c, NOTE, "missing: a run adds it (target_columns: add)") for c in check.missing]
    return out or [say("", OK, "matches the catalog")]


def _checked(ws: Workspace, node: str, spec: TableSpec, *, source: bool) -> TableCheck:
    connector = ws.database(node)
    try:
        return connector.check_source(spec) if source else connector.check_target(spec)
    finally:
        connector.close()


def _first_line(exc: Exception) -> str:
    detail = str(getattr(exc, "orig", None) or exc).strip()
    return redact(detail.splitlines()[0]) if detail else type(exc).__name__
