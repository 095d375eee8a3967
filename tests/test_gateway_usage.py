"""Usage statistics of the gateway: calls per Asia/Shanghai day and hour, refusals, 429s,
errors and nearest-rank latency percentiles, grouped by code, department, operation or
resource; the same figures on SQLite and PostgreSQL; each user sees only its own (a
requester its department's calls, a provider its resources'); ``exchange usage`` renders
them as a table, CSV or JSON, and ``GET /usage`` returns the JSON."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from exchange.api import create_app
from exchange.cli.app import app as cli
from exchange.gateway.models import ApiCall
from exchange.gateway.usage import Period, UsageReport, parse_period, usage, usage_for
from exchange.kernel.errors import BadInput
from exchange.kernel.settings import Settings
from exchange.workflow.users import Principal, create_user, issue_token
from exchange.workspace import Workspace

A = "410000-SCJG-API-0001"  # provided by prov_gw, a CITY node
B = "100000-GJ-API-0007"  # provided by scjg_gw, an SCJG node
DEC = Period(dt.date(2026, 12, 1), dt.date(2026, 12, 3))

CATALOG = f"""\
version: 1
departments: {{SCJG: 市场监管局, CITY: 市政务服务和大数据管理局, TAX: 市税务局, HRSS: 市人社局}}
nodes:
  - {{name: prov_gw, kind: http, department: CITY, base_url: "https://prov.example/api",
     auth: {{scheme: none}}}}
  - {{name: scjg_gw, kind: http, department: SCJG, base_url: "https://scjg.example/api",
     auth: {{scheme: none}}}}
resources:
  - code: {A}
    name: 企业基本信息查询
    kind: api
    provider: prov_gw
    share: conditional
    operations: [{{name: by_uscc, method: GET, path: "/ent/{{uscc}}",
                  params: [{{name: uscc, in: path}}]}}]
    fields: [{{name: uscc, type: varchar, path: data.uscc}}]
  - code: {B}
    name: 失信被执行人查询
    kind: api
    provider: scjg_gw
    share: unconditional
    operations: [{{name: by_uscc, method: GET, path: /dishonest,
                  params: [{{name: uscc, in: query}}]}}]
    fields: [{{name: uscc, type: varchar, path: "records[].uscc"}}]
"""


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def calls() -> list[dict[str, Any]]:
    """TAX's code 1 on A: 100 answered calls at 10:xx Shanghai on 2 December, latencies 1 to
    100 ms; then on 3 December two 429s, an upstream failure, an interrupted call and an
    unknown code. HRSS's code 2 on B: one call a minute before midnight in Shanghai on
    1 December (15:59 UTC) and one a minute after (2 December)."""
    out: list[dict[str, Any]] = []

    def add(at: str, code: int | None, dept: str | None, res: str, status: int, outcome: str,
            ms: float) -> None:  # fmt: skip
        out.append({
            "call_id": f"c{len(out)}", "at": utc(at), "code_id": code,
            "subscription_id": code, "department_code": dept, "resource_code": res,
            "operation": "by_uscc", "status": status, "outcome": outcome, "latency_ms": ms,
            "bytes": 10,
        })  # fmt: skip

    for n in range(1, 101):
        add(f"2026-12-02T02:{n % 60:02d}:00", 1, "TAX", A, 200, "ok", float(101 - n))
    add("2026-12-03T01:00:00", 1, "TAX", A, 429, "quota", 0.5)
    add("2026-12-03T01:00:01", 1, "TAX", A, 429, "quota", 0.5)
    add("2026-12-03T01:00:02", 1, "TAX", A, 502, "upstream", 1000.0)
    add("2026-12-03T01:00:03", 1, "TAX", A, 0, "interrupted", 0.0)
    add("2026-12-03T01:00:04", None, None, A, 401, "refused", 0.2)
    add("2026-12-01T15:59:00", 2, "HRSS", B, 200, "ok", 3.0)
    add("2026-12-01T16:01:00", 2, "HRSS", B, 200, "ok", 4.0)
    add("2026-11-30T15:59:59", 2, "HRSS", B, 200, "ok", 4.0)  # 30 November in Shanghai
    return out


@pytest.fixture(params=["sqlite", "postgresql"])
def ws(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Workspace]:
    url = (
        f"sqlite:///{tmp_path / 'exchange.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_database")
    )
    (tmp_path / "catalog.yaml").write_text(CATALOG, encoding="utf-8")
    with Workspace.open(tmp_path / "catalog.yaml", Settings(home=tmp_path, db_url=url)) as opened:
        with opened.store.session() as s:
            s.execute(sa.insert(ApiCall), calls())
        yield opened


def figures(report: UsageReport) -> list[tuple[Any, ...]]:
    return [
        (r.key, str(r.day), r.hour, r.calls, r.ok, r.refused, r.quota, r.errors)
        for r in report.rows
    ]


def test_calls_are_counted_per_shanghai_day_by_resource(ws: Workspace) -> None:
    report = usage(ws.store, "resource", DEC)
    assert figures(report) == [
        (B, "2026-12-01", None, 1, 1, 0, 0, 0),
        (B, "2026-12-02", None, 1, 1, 0, 0, 0),
        (A, "2026-12-02", None, 100, 100, 0, 0, 0),
        (A, "2026-12-03", None, 5, 0, 1, 2, 2),
    ]
    assert [(t.key, t.calls, t.day) for t in report.totals] == [(B, 2, None), (A, 105, None)]


def test_latency_percentiles_are_nearest_rank_over_the_answered_calls(ws: Workspace) -> None:
    day = next(r for r in usage(ws.store, "resource", DEC).rows if r.calls == 100)
    assert (day.p50_ms, day.p95_ms, day.p99_ms) == (50.0, 95.0, 99.0)
    worse = next(r for r in usage(ws.store, "resource", DEC).rows if r.calls == 5)
    # 429s, a 502, an interrupted call and a refusal: none answered, so no latency
    assert (worse.p50_ms, worse.p95_ms, worse.p99_ms) == (None, None, None)


def test_an_upstream_4xx_passed_on_is_answered_and_refusals_leave_the_percentiles_alone(
    ws: Workspace,
) -> None:
    day = "2026-12-05T02:00:"
    answered = [(200, "ok", 10.0), (200, "ok", 20.0), (404, "upstream", 30.0)]
    fast = [(429, "quota", 0.1)] * 6 + [(401, "refused", 0.05)] * 6
    failed = [(502, "upstream", 5000.0), (504, "upstream", 1000.0)]
    with ws.store.session() as s:
        s.execute(sa.insert(ApiCall), [
            {"call_id": f"x{n}", "at": utc(f"{day}{n:02d}"), "code_id": 1,
             "subscription_id": 1, "department_code": "TAX", "resource_code": A,
             "operation": "by_uscc", "status": st, "outcome": out, "latency_ms": ms,
             "bytes": 10}
            for n, (st, out, ms) in enumerate(answered + fast + failed)
        ])  # fmt: skip
    row = usage(ws.store, "resource", parse_period("2026-12-05")).rows[0]
    assert (row.calls, row.ok, row.refused, row.quota, row.errors) == (17, 3, 6, 6, 2)
    assert (row.p50_ms, row.p95_ms, row.p99_ms) == (20.0, 30.0, 30.0)


def test_calls_are_counted_per_hour_across_midnight(ws: Workspace) -> None:
    hours = usage(ws.store, "code", DEC, per="hour")
    two = [(r.day, r.hour, r.calls) for r in hours.rows if r.key == "2"]
    assert two == [(dt.date(2026, 12, 1), 23, 1), (dt.date(2026, 12, 2), 0, 1)]


def test_calls_are_grouped_by_code_department_and_operation(ws: Workspace) -> None:
    assert [t.key for t in usage(ws.store, "code", DEC).totals] == ["-", "1", "2"]
    assert [(t.key, t.calls) for t in usage(ws.store, "department", DEC).totals] == [
        ("-", 1), ("HRSS", 2), ("TAX", 104),
    ]  # fmt: skip
    assert [t.key for t in usage(ws.store, "operation", DEC).totals] == [
        f"{B}/by_uscc", f"{A}/by_uscc",
    ]  # fmt: skip


def test_a_requester_sees_its_department_and_a_provider_its_resources(ws: Workspace) -> None:
    hrss = Principal("hrss", "requester", "HRSS", 1)
    assert [t.key for t in usage_for(ws, hrss, "department", str(DEC)).totals] == ["HRSS"]
    scjg = Principal("scjg", "provider", "SCJG", 2)
    assert [t.key for t in usage_for(ws, scjg, "resource", str(DEC)).totals] == [B]
    tax_provider = Principal("tax", "provider", "TAX", 3)  # provides nothing
    assert usage_for(ws, tax_provider, "resource", str(DEC)).rows == ()
    admin = Principal("admin", "admin")
    assert len(usage_for(ws, admin, "resource", str(DEC)).totals) == 2


def test_a_period_is_days_first_to_last_and_refused_when_it_is_not_one() -> None:
    assert parse_period("2026-12-01..2026-12-07") == Period(
        dt.date(2026, 12, 1), dt.date(2026, 12, 7)
    )
    assert parse_period("2026-12-01") == Period(dt.date(2026, 12, 1), dt.date(2026, 12, 1))
    assert (parse_period(None).end - parse_period(None).start).days == 6
    for bad in ("2026-12-07..2026-12-01", "last week", "2026-02-30", "2026-01-01..2028-01-01"):
        with pytest.raises(BadInput, match="--period"):
            parse_period(bad)


def _cli(ws: Workspace, *args: str) -> str:
    env = {"EXCHANGE_HOME": str(ws.settings.home), "EXCHANGE_DB_URL": ws.settings.db_url,
           "COLUMNS": "250"}  # fmt: skip
    result = CliRunner().invoke(cli, ["usage", *args, "--catalog", str(ws.catalog.path)], env=env)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_exchange_usage_renders_a_table_csv_and_json(ws: Workspace) -> None:
    table = _cli(ws, "--period", str(DEC))
    assert A in table and "p99_ms" in table and "total" in table
    rows = list(csv.reader(io.StringIO(_cli(ws, "--period", str(DEC), "--format", "csv"))))
    assert rows[0] == ["resource", "day", "calls", "ok", "refused", "429", "errors",
                       "p50_ms", "p95_ms", "p99_ms"]  # fmt: skip
    assert rows[3] == [A, "2026-12-02", "100", "100", "0", "0", "0", "50", "95", "99"]
    doc = json.loads(_cli(ws, "--period", str(DEC), "--by", "department", "--format", "json"))
    assert doc["by"] == "department" and doc["period"] == {
        "start": "2026-12-01",
        "end": "2026-12-03",
    }
    assert {t["key"]: t["calls"] for t in doc["totals"]} == {"-": 1, "HRSS": 2, "TAX": 104}


def test_get_usage_returns_each_user_its_own_figures(ws: Workspace) -> None:
    with ws.store.session() as s:
        create_user(s, "admin", "admin", None, "test")
        create_user(s, "hrss", "requester", "HRSS", "test")
        create_user(s, "scjg", "provider", "SCJG", "test")
    with ws.store.session() as s:
        tokens = {n: issue_token(s, n, "test") for n in ("admin", "hrss", "scjg")}
    client = TestClient(create_app(ws))

    def get(who: str, **params: str) -> Any:
        answer = client.get("/usage", params=params,
                            headers={"Authorization": f"Bearer {tokens[who]}"})  # fmt: skip
        return answer

    everything = get("admin", period=str(DEC), by="department")
    assert everything.status_code == 200, everything.text
    assert {t["key"] for t in everything.json()["totals"]} == {"-", "HRSS", "TAX"}
    assert [t["key"] for t in get("hrss", period=str(DEC), by="department").json()["totals"]] == [
        "HRSS"
    ]
    assert [t["key"] for t in get("scjg", period=str(DEC)).json()["totals"]] == [B]
    hourly = get("admin", period="2026-12-01", per="hour").json()
    assert [(r["key"], r["day"], r["hour"]) for r in hourly["rows"]] == [(B, "2026-12-01", 23)]
    assert get("admin", period="2026-12-03..2026-12-01").status_code == 400
    assert get("admin", period="yesterday").status_code == 422
    assert get("admin", by="colour").status_code == 422
